"""Bench: does `make search` beat the defaults within 10 minutes, on 3 sampler seeds?

    python bench/search_vs_default.py [--tiny] [--seeds 0,1,2] [--space FILE] [--suite-n N]
                                      [--keep DIR] [--out-dir DIR]

Side by side, in this process, one after the other (so that no run slows another):
1. `countnet train --out DEFAULT`: TrainConfig's defaults (the hand-tuned baseline), once: it
   does not depend on the sampler seed;
2. per sampler seed S, `countnet search --space SPACE --seed S --export BUNDLE_S` (what `make
   search` runs, report included), timed from the command's start to its end, Ray's start and
   the export included;
3. every model scored on data none was tuned on, the very same images for all: the
   in-distribution test split (`test_size` images, tensors, rendered once from the default's
   config) and every set of the shift suite (N PNG images per set, written once and read back
   as photos would be).
From each search's experiment (`countnet.experiment.load_experiment`): the starting trial (the
space's `start_from: [defaults]`, enqueued first and never stopped by ASHA; recognised, as
tune.scheduler.StartFromASHA recognises it, by its config holding every value of a starting
point), its best val_loss, the winner's, and how the sampled (non-starting) trials ended.

Printed: per seed, the search's minutes, the winner (and whether it is the starting trial), the
two val_losses and the share of sampled trials within 2x the starting trial's val_loss; the
exact-count accuracy of the default and of each winner on the split and on each suite set, the
winner minus the default; mean +- std over the seeds.

Goals (issue 18):
- goal 1: on every seed, the search takes <= 10 min on 2 cores; the exported winner has a lower
  val_loss than the starting trial of its search; and it is no more than 0.005 exact-count
  accuracy below the default `countnet train` on the test split and on every suite set (1,000
  images per set). `ratio` = the smallest (winner acc + 0.005) / (default acc) over seeds, the
  split and the sets: >= 1 exactly when that last part is met. Also given: the share of seeds in
  which the winner is not the starting trial.
- goal 2: on every seed, at least half of the sampled trials end (their best val_loss) within
  2x the starting trial's val_loss.

--tiny (the smoke test, about a minute): the same space with tiny data (`--set` of its fixed
sizes), 3 trials x 2 epochs, seeds 0 and 1 unless --seeds is given, 32 images per suite set.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# isort: off
from countnet.runtime import omp_env

# Before torch loads (OpenMP reads it once), as the `countnet` command does: countnet.runtime.
os.environ.update(omp_env())
# isort: on

import torch

from countnet.bundle import load_model
from countnet.cli import main as countnet_main
from countnet.config import TrainConfig, scene_fields
from countnet.datasets import clear_cache, synthetic_split
from countnet.evaluate import score, summary
from countnet.experiment import SEARCH_INFO_FILE, Trial, load_experiment, load_run
from countnet.precision import fast_path
from countnet.suite import SUITE_SETS, score_suite, write_suite
from countnet.train import pick_device, predict

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper `report`, when imported
from report import headline, machine, mean_std, write_result

NAME = "search_vs_default"
MARGIN = 0.005  # exact-count accuracy the winner may lose on any one set
# Accuracies are image counts / n, so a difference of exactly MARGIN (5 of 1,000) can come out
# as -0.00500000000000006 in floating point: compare with this slack, far below 1 / n.
ACC_EPS = 1e-9
SEARCH_LIMIT_MIN = 10.0  # `make search` on a 2-core machine
WITHIN_FACTOR = 2.0  # goal 2: a sampled trial "worth running" ends within 2x the start's loss
WITHIN_SHARE = 0.5  # ... and at least this share of them do
SEEDS = (0, 1, 2)  # sampler seeds (`countnet search --seed`)
GOAL = ("per sampler seed: make search <= 10 min on 2 cores; winner val_loss < the starting "
        "trial's; winner >= default `countnet train` - 0.005 exact-count accuracy on the test "
        "split and every shift-suite set (ratio = min (winner + 0.005) / default, >= 1 when "
        "met); >= half the sampled trials within 2x the starting trial's val_loss")
REPO = Path(__file__).resolve().parent.parent
SPACE = REPO / "search_spaces" / "generalise.yaml"
SUITE_N = 1000  # images per set: at acc 0.95 the binomial std is 0.007
# --tiny: about a minute, for the smoke test. The real space, so that its starting trial and
# sampled trials are read as at full size, on tiny data; a tiny default.
TINY_TRAIN = ["--set", "train_size=128", "--set", "val_size=64", "--set", "test_size=64",
              "--set", "train_eval_size=64", "--set", "width=8", "--set", "depth=3",
              "--set", "epochs=2"]
TINY_SEARCH = ["--set", "train_size=128", "--set", "val_size=64", "--set", "test_size=64",
               "--set", "train_eval_size=64", "--num-samples", "3", "--max-epochs", "2"]
TINY_SEEDS = (0, 1)
TINY_SUITE_N = 32


# ---- shared with bench/search_adapts.py ---------------------------------------------------------

def run(argv: list[str]) -> float:
    """`countnet ARGV` in this process (one local Ray for the smoke test); its wall seconds.

    It prints what it prints for a user, so the bench's output shows what a user sees.
    """
    t0 = time.perf_counter()
    code = countnet_main(argv)
    wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"countnet {' '.join(argv)}: exit {code}")
    return wall


@contextmanager
def work_dir(keep: Path | None, prefix: str) -> Iterator[Path]:
    """`keep` (created; its runs, experiments and bundles stay for a look), or a temporary
    folder deleted at the end."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        yield Path(tmp)


def parse_seeds(text: str) -> list[int]:
    """`0,1,2` -> [0, 1, 2]."""
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--seeds {text!r}: expected integers separated by commas") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds {text!r}: expected distinct integers")
    return seeds


def starting_points(exp_dir: Path) -> list[dict[str, Any]]:
    """The Optuna parameters of the search's `start_from` trials, from the space it recorded."""
    from tune.space import parse_space  # bench only; countnet itself never imports tune

    info = json.loads((exp_dir / SEARCH_INFO_FILE).read_text())
    return parse_space(info["space"], str(exp_dir / SEARCH_INFO_FILE)).start_points()


def is_start(trial: Trial, starts: list[dict[str, Any]]) -> bool:
    """The rule of tune.scheduler.StartFromASHA: the config holds every value of a start point."""
    return any(all(k in trial.config and trial.config[k] == v for k, v in point.items())
               for point in starts)


def search_figures(exp_dir: Path, bundle: Path) -> dict[str, Any]:
    """What a search's experiment says about its starting trial, its winner and the others.

    Args:
        exp_dir: the experiment directory (`--storage`/`--name`).
        bundle: the bundle `--export` wrote (its metrics.json names the winner).

    Returns:
        metric; start_trial, start_loss (its best value of the metric; None without a starting
        trial); winner_trial, winner_epoch, winner_loss (the exported epoch's), winner_is_start,
        winner_searched; sampled: one row per sampled trial (trial_id, best loss or None,
        epochs run, outcome); within (sampled trials whose best is <= WITHIN_FACTOR x the start's),
        n_sampled, share_within (NaN without a starting trial or sampled trials);
        within_equal: sampled trials whose best is <= WITHIN_FACTOR x the start's best over
        the same number of epochs (ASHA stops half the trials at its first rung, where every
        trial, the start included, is still far above its end: this compares like with like).
    """
    exp = load_experiment(exp_dir)
    metric = exp.metric
    exported = json.loads((bundle / "metrics.json").read_text())
    starts = starting_points(exp_dir)
    # Trials are in start order: if a sampled trial drew the very values of a starting point,
    # the enqueued one (started first) is the starting trial.
    start = next((t for t in exp.trials if is_start(t, starts)), None) if starts else None
    start_loss = start.best[metric] if start is not None and start.best else None
    sampled = [t for t in exp.trials if t is not start]
    rows = [{"trial_id": t.trial_id, "best": t.best[metric] if t.best else None,
             "epochs": t.epochs_run, "outcome": t.outcome} for t in sampled]
    # A diverged or failed trial has no best: it is not within anything.
    within = sum(1 for r in rows if start_loss is not None and r["best"] is not None
                 and math.isfinite(r["best"]) and r["best"] <= WITHIN_FACTOR * start_loss)
    start_curve = [r[metric] for r in start.history] if start is not None else []
    within_equal = sum(1 for t in sampled if start_curve and t.best
                       and math.isfinite(t.best[metric])
                       and t.best[metric] <= WITHIN_FACTOR * min(start_curve[:t.epochs_run]
                                                                 or start_curve))
    ok = start_loss is not None and rows
    return {"metric": metric, "n_trials": len(exp.trials),
            "start_trial": start.trial_id if start is not None else None,
            "start_loss": start_loss,
            "winner_trial": exported["trial_id"], "winner_epoch": exported["epoch"],
            "winner_loss": exported["metrics"][metric],
            "winner_is_start": start is not None and exported["trial_id"] == start.trial_id,
            "winner_searched": exported["searched"],
            "sampled": rows, "within": within, "within_equal": within_equal,
            "n_sampled": len(rows),
            "share_within": within / len(rows) if ok else float("nan")}


def fmt_mean_std(values: list[float], spec: str = ".3f") -> str:
    """`mean ± std` of finite values (`-` when there are none)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "-"
    ms = mean_std(vals)
    return f"{ms['mean']:{spec}} ± {ms['std']:{spec}}"


# ---- this bench -------------------------------------------------------------------------------

def held_out(model_dir: Path, x: torch.Tensor, y: torch.Tensor, suite_dir: Path,
             reference: TrainConfig) -> dict[str, Any]:
    """Accuracy figures of a run dir or bundle on the test split (x, y) and each suite set.

    Args:
        model_dir: a run dir or bundle.
        x, y: the test split (N, C, H, W) and its counts (N,), on the CPU.
        suite_dir: the suite, written once (`write_suite`).
        reference: the config the split and the suite were drawn from (the default's).
    """
    model, cfg = load_model(model_dir)
    # Every model must meet the same images; they are in-distribution for it only when its
    # scene fields are the default's (the generalise space searches none of them).
    same = all(getattr(cfg, f) == getattr(reference, f)
               for f in ("image_size", "channels", *scene_fields()))
    if not same:
        print(f"note: {model_dir.name} trained on other scenes than the default; it is scored "
              f"on the default's split and suite", flush=True)
    device = pick_device(cfg)
    precision, layout = fast_path(model, cfg, device)
    pred = predict(model, x.to(device).contiguous(memory_format=layout), cfg.eval_batch_size,
                   precision)
    sets = {"split": summary(score(pred.cpu(), y))}
    sets.update({k: summary(v) for k, v in score_suite(model, suite_dir, cfg).items()})
    return {"sets": sets, "same_scenes": same, "config": cfg.to_dict()}


def best_val_loss(run_dir: Path) -> float:
    """The best val_loss over a `countnet train` run's epochs (what its checkpoint keeps)."""
    history, _ = load_run(run_dir)
    return min(r["val_loss"] for r in history
               if isinstance(r.get("val_loss"), (int, float)) and math.isfinite(r["val_loss"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="about a minute; for the smoke test")
    p.add_argument("--seeds", help="sampler seeds, comma-separated (default 0,1,2; --tiny 0,1)")
    p.add_argument("--space", type=Path, default=SPACE, help="the search space (default: "
                   "search_spaces/generalise.yaml, what `make search` runs)")
    p.add_argument("--suite-n", type=int, default=SUITE_N, help="images per suite set")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="keep the runs, experiments and bundles in DIR (default: a temporary "
                   "folder, deleted)")
    p.add_argument("--out-dir", help="write the JSON here instead of bench/results")
    args = p.parse_args(argv)
    seeds = parse_seeds(args.seeds) if args.seeds else list(TINY_SEEDS if args.tiny else SEEDS)
    n_per_set = TINY_SUITE_N if args.tiny else args.suite_n
    info = machine()
    print(f"CPU {info['cpu']}, {info['cores']} cores, load average {info.get('load_avg_1m')}; "
          f"torch {info['torch']}; space {args.space}{' (tiny data)' if args.tiny else ''}; "
          f"sampler seeds {seeds}", flush=True)
    steps = 2 + len(seeds)
    with work_dir(args.keep, "countnet-svd-") as root:
        print(f"1/{steps} countnet train (the defaults)", flush=True)
        clear_cache()  # a fresh `countnet train` renders its data
        train_wall = run(["train", "--out", str(root / "default"),
                          *(TINY_TRAIN if args.tiny else [])])
        default_loss = best_val_loss(root / "default")
        print(f"1/{steps} done in {train_wall / 60:.2f} min", flush=True)
        searches: dict[int, dict[str, Any]] = {}
        for i, seed in enumerate(seeds, 2):
            print(f"{i}/{steps} countnet search --seed {seed} --export (what `make search` "
                  f"runs)", flush=True)
            bundle = root / f"bundle-seed{seed}"
            wall = run(["search", "--space", str(args.space), "--seed", str(seed),
                        "--storage", str(root / "exp"), "--name", f"seed{seed}",
                        "--export", str(bundle), *(TINY_SEARCH if args.tiny else [])])
            searches[seed] = {"search_wall_min": wall / 60,
                              **search_figures(root / "exp" / f"seed{seed}", bundle)}
            print(f"{i}/{steps} done in {wall / 60:.2f} min", flush=True)
        print(f"{steps}/{steps} scoring every model on the test split and the suite "
              f"({n_per_set} per set), the same images for all", flush=True)
        _, ref = load_model(root / "default")
        x, y = synthetic_split(ref, ref.data_seed, "test", ref.test_size, "cpu")
        suite_dir = write_suite(root / "suite", ref, n_per_set)
        default = held_out(root / "default", x, y, suite_dir, ref)
        for seed in seeds:
            searches[seed]["winner"] = held_out(root / f"bundle-seed{seed}", x, y, suite_dir, ref)

    sets = ["split", *(s for s in SUITE_SETS if s in default["sets"])]
    for fig in searches.values():
        w = fig["winner"]["sets"]
        fig["diff"] = {s: w[s]["acc"] - default["sets"][s]["acc"] for s in sets}
        # (winner + margin) / default: >= 1 exactly when winner >= default - margin.
        fig["margins"] = {s: (w[s]["acc"] + MARGIN) / max(default["sets"][s]["acc"], MARGIN)
                          for s in sets}
        fig["binding"] = min(fig["margins"], key=fig["margins"].__getitem__)
        fig["goals"] = {
            "search_le_10_min": fig["search_wall_min"] <= SEARCH_LIMIT_MIN,
            "winner_below_start": fig["start_loss"] is not None
            and fig["winner_loss"] < fig["start_loss"],
            f"every_set_within_{MARGIN}": all(
                d >= -MARGIN - ACC_EPS for d in fig["diff"].values()),
            "half_sampled_within_2x": fig["share_within"] >= WITHIN_SHARE}

    metric = next(iter(searches.values()))["metric"]
    print(f"\nthe searches ({metric}: the best epoch's; start = the default starting trial; "
          f"<=2x: sampled trials whose best {metric} is within {WITHIN_FACTOR:g}x the start's; "
          f"@ep: ... the start's best over as many epochs as the trial ran)")
    print(f"{'seed':>4} {'min':>6} {'winner':>10} {'start?':>6} {'start ' + metric:>14} "
          f"{'winner ' + metric:>15} {'<=2x':>7} {'@ep':>5} {'min diff (set)':>18}")
    for seed, fig in searches.items():
        start_loss = f"{fig['start_loss']:.4g}" if fig["start_loss"] is not None else "-"
        within = f"{fig['within']}/{fig['n_sampled']}"
        worst = f"{fig['diff'][fig['binding']]:+.3f} ({fig['binding']})"
        print(f"{seed:>4} {fig['search_wall_min']:6.2f} {fig['winner_trial']:>10} "
              f"{'yes' if fig['winner_is_start'] else 'no':>6} {start_loss:>14} "
              f"{fig['winner_loss']:15.4g} {within:>7} {fig['within_equal']:>5} {worst:>18}")
    figs = list(searches.values())
    print(f"mean ± std: search {fmt_mean_std([f['search_wall_min'] for f in figs], '.2f')} min, "
          f"winner {metric} {fmt_mean_std([f['winner_loss'] for f in figs], '.4g')}, start "
          f"{fmt_mean_std([f['start_loss'] for f in figs], '.4g')}, share <=2x "
          f"{fmt_mean_std([f['share_within'] for f in figs], '.2f')}; default `countnet "
          f"train` {metric} {default_loss:.4g} ({train_wall / 60:.2f} min)")

    print(f"\nexact-count accuracy; split = the in-distribution test split ({len(y)} images), "
          f"then the suite ({n_per_set} PNG each)")
    print(f"{'model':<10} " + " ".join(f"{s[:8]:>8}" for s in sets))
    print(f"{'default':<10} " + " ".join(f"{default['sets'][s]['acc']:8.3f}" for s in sets))
    for seed, fig in searches.items():
        print(f"{f'winner s{seed}':<10} "
              + " ".join(f"{fig['winner']['sets'][s]['acc']:8.3f}" for s in sets))
    for seed, fig in searches.items():
        print(f"{f'diff s{seed}':<10} " + " ".join(f"{fig['diff'][s]:+8.3f}" for s in sets))
    print(f"{'diff mean':<10} " + " ".join(
        f"{statistics.fmean(f['diff'][s] for f in figs):+8.3f}" for s in sets))
    print(f"{'diff std':<10} " + " ".join(
        f"{mean_std([f['diff'][s] for f in figs])['std']:8.3f}" for s in sets))

    not_start = sum(1 for f in figs if not f["winner_is_start"]) / len(figs)
    print(f"\nshare of seeds whose winner is not the starting trial: {not_start:.2f}")
    goals = {k: all(f["goals"][k] for f in figs) for k in figs[0]["goals"]}
    for k, v in goals.items():
        print(f"goal {k} (every seed): {'met' if v else 'NOT met'}")
    binding_seed = min(searches, key=lambda s: searches[s]["margins"][searches[s]["binding"]])
    ratio = searches[binding_seed]["margins"][searches[binding_seed]["binding"]]
    met = all(goals.values())
    name = NAME + ("-tiny" if args.tiny else "")
    path = write_result(name, ratio, GOAL, met, {
        "goals": goals, "seeds": seeds, "share_winner_not_start": not_start,
        "binding": {"seed": binding_seed, "set": searches[binding_seed]["binding"]},
        "default": default, "default_val_loss": default_loss,
        "train_wall_min": train_wall / 60,
        "searches": {str(s): f for s, f in searches.items()},
        "search_wall_min": mean_std([f["search_wall_min"] for f in figs]),
        "share_within_2x": mean_std([f["share_within"] for f in figs]),
        "diff": {s: mean_std([f["diff"][s] for f in figs]) for s in sets},
        "suite_n_per_set": n_per_set, "test_split_n": len(y), "space": str(args.space),
        "tiny": args.tiny,
    }, quick=args.tiny, out_dir=args.out_dir)
    headline(name, ratio, GOAL, met, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
