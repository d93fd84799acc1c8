"""Bench: issue 29 goal 2. Do early epochs predict late ones? (Can ASHA's stops be trusted?)

    python bench/rank_fidelity.py [--quick | --tiny] [--space FILE] [--configs 16]
                                  [--seeds 0,1] [--recipes new,before] [--train-size 2000]

For each sampler seed, `--configs` configs are drawn at random (Optuna's RandomSampler through
the space's own define-by-run function, `tune.optuna_space.DefineByRun`, so `when` and
`optional` behave as in a search) from the space's `search` part, on top of its `fixed` part,
with `--train-size` training images so that the bench fits in about half an hour on 2 cores.
Every config trains for the space's full `max_epochs` with `countnet.train.fit`, no stopping.
Per seed it prints the Spearman rank correlation (`countnet.rung_audit.spearman`) between each
run's val_loss at an early rung (epoch max_epochs / 8: epoch 2 of 16) and its best val_loss, and
the same at the space's ASHA rungs; then mean +- std over the seeds, and a scatter plot per
recipe at the early rung. It also prints each recipe's median worst val_loss jump over the
configs (issue 17 goal 1, bench/smoothness.py).

Recipes (`--recipes`, the first one is the headline's): `new` is the configs as drawn
(TrainConfig's current defaults underneath); `schedulefree` is the same configs trained with
Schedule-Free AdamW (`schedule: schedulefree`, its own average instead of the EMA); `onecycle`
is the same configs with onecycle and the EMA (countnet 0.2's recipe); `before` is countnet
0.1's head without weight averaging (pool sum, ema_epochs 0).
Goal (issue 29 goal 2): rho at epoch max_epochs / 8 >= 0.9, mean over 2 seeds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# isort: off
from countnet.runtime import omp_env

# Before torch loads (OpenMP reads it once), as the `countnet` command does: countnet.runtime.
os.environ.update(omp_env())
# isort: on
import optuna

from countnet.datasets import clear_cache
from countnet.rung_audit import rung_epoch, rung_milestones, spearman
from countnet.train import fit
from tune.optuna_space import DefineByRun, trial_config
from tune.space import load_space

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper `report`
from report import RESULTS_DIR, headline, machine, mean_std, write_result
from smoothness import GOAL_JUMP, SMOOTH_AFTER, worst_jump

NAME = "rank_fidelity"
GOAL_RHO = 0.9
EARLY_SHARE = 8  # the early rung sits at max_epochs / 8 (epoch 2 of 16)
GOAL = ("Spearman rho (val_loss at epoch max_epochs/8 vs best val_loss) >= 0.9, mean over "
        "seeds")
SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "generalise.yaml"
RECIPES: dict[str, dict[str, Any]] = {
    "new": {},
    "before": {"pool": "sum", "ema_epochs": 0.0},  # countnet 0.1's head, no weight averaging
    # Schedule-Free AdamW: nothing depends on the planned epochs; its own average is evaluated
    "schedulefree": {"schedule": "schedulefree", "ema_epochs": 0.0},
    "onecycle": {"schedule": "onecycle"},  # onecycle over the run + the EMA (the drawn ema_epochs)
}
# size -> (configs per seed, train images, val images, epochs cap or None for the space's)
SIZES: dict[str, tuple[int, int, int, int | None]] = {
    "full": (16, 2000, 500, None),
    "quick": (8, 1000, 300, None),
    "tiny": (3, 64, 32, 3),
}


def sample_configs(space: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """n configs drawn at random from the space's search part (fixed values included)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    define = DefineByRun(space)
    out = []
    for _ in range(n):
        trial = study.ask()
        define(trial)
        out.append({**space.base_config(), **trial.params})
        study.tell(trial, 0.0)
    return out


def run_config(values: dict[str, Any]) -> tuple[list[dict[str, float]], float]:
    """Train one config; (history, wall seconds)."""
    cfg = trial_config(values)
    clear_cache()
    t0 = time.perf_counter()
    history = fit(cfg).history
    return history, time.perf_counter() - t0


def correlations(histories: list[list[dict[str, float]]],
                 rungs: list[int]) -> dict[int, float | None]:
    """Per rung epoch: Spearman rho of val_loss there against each run's best val_loss."""
    best = [min(h["val_loss"] for h in hist) for hist in histories]
    return {e: spearman([hist[e - 1]["val_loss"] for hist in histories], best) for e in rungs}


def scatter(runs: dict[str, dict[int, list]], early: int, path: Path) -> None:
    """val_loss at the early rung against best val_loss, one marker per seed, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4.4), squeeze=False,
                             sharey=True)
    for ax, (recipe, by_seed) in zip(axes[0], runs.items()):
        for seed, hists in by_seed.items():
            at = [h[early - 1]["val_loss"] for h in hists]
            best = [min(r["val_loss"] for r in h) for h in hists]
            rho = spearman(at, best)
            ax.scatter(at, best, label=f"sampler seed {seed}: ρ = "
                       + ("n/a" if rho is None else f"{rho:.2f}"), alpha=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # decade labels only: minor labels overlap
            axis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"val_loss at epoch {early} (the early rung)")
        ax.set_ylabel("best val_loss of the run")
        ax.set_title(f"recipe: {recipe}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="8 configs of 1,000 images; no goal")
    p.add_argument("--tiny", action="store_true", help="seconds; for the smoke test")
    p.add_argument("--space", default=str(SPACE), help="a search space YAML")
    p.add_argument("--seeds", default="0,1", help="sampler seeds, comma-separated")
    p.add_argument("--recipes", default="new,before", help=f"of {', '.join(RECIPES)}")
    p.add_argument("--configs", type=int, help="configs per seed (default: by size)")
    p.add_argument("--train-size", type=int, help="training images (default: by size)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--out-dir", help="write the JSON and the plot here instead of bench/results")
    args = p.parse_args(argv)
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    n_configs, train_size, val_size, epochs_cap = SIZES[size]
    n_configs = args.configs or n_configs
    train_size = args.train_size or train_size
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
        if not seeds or any(r not in RECIPES for r in recipes) or not recipes:
            raise ValueError
    except ValueError:
        print(f"bench/rank_fidelity.py: --seeds takes integers and --recipes names of "
              f"{', '.join(RECIPES)}", file=sys.stderr)
        return 2
    space = load_space(args.space)
    max_epochs = min(space.max_epochs, epochs_cap or space.max_epochs)
    early = max(1, max_epochs // EARLY_SHARE)
    rungs = sorted({early} | {rung_epoch(m) for m in rung_milestones(
        max(1, min(space.grace_period, max_epochs - 1)), space.reduction_factor, max_epochs)})
    sizes = {"train_size": train_size, "val_size": val_size,
             "train_eval_size": min(val_size, 500), "epochs": max_epochs,
             "threads": args.threads}
    if args.tiny:
        sizes.update(width=8, depth=3)
    info = machine()
    print(f"CPU {info['cpu']}, {info['cores']} cores, load average {info.get('load_avg_1m')}; "
          f"space {args.space}: {n_configs} configs per seed, seeds {seeds}, {max_epochs} "
          f"epochs, {train_size} train / {val_size} val images; rungs at epochs {rungs}",
          flush=True)

    t_start = time.perf_counter()
    runs: dict[str, dict[int, list]] = {r: {} for r in recipes}
    figures: dict[str, Any] = {r: {} for r in recipes}
    for seed in seeds:
        drawn = sample_configs(space, n_configs, seed)
        for recipe in recipes:
            hists = []
            for i, values in enumerate(drawn):
                values = {**values, **sizes, **RECIPES[recipe]}
                if args.tiny:
                    values = {k: v for k, v in values.items() if k not in ("width", "depth")}
                    values.update(width=8, depth=3)
                history, wall = run_config(values)
                hists.append(history)
                vals = [h["val_loss"] for h in history]
                print(f"  seed {seed} {recipe:>6} config {i + 1:2d}/{len(drawn)}: val_loss at "
                      f"{early} {vals[early - 1]:.4g}, best {min(vals):.4g} "
                      f"(epoch {vals.index(min(vals)) + 1}), {wall:.0f} s", flush=True)
            runs[recipe][seed] = hists
            rho = correlations(hists, rungs)
            figures[recipe][seed] = {"rho_by_rung": rho, "configs": [
                {"values": v, "val_loss": [h["val_loss"] for h in hist],
                 "worst_jump": worst_jump([h["val_loss"] for h in hist])}
                for v, hist in zip(drawn, hists)]}
            print(f"seed {seed} {recipe}: " + ", ".join(
                f"rho at epoch {e} = " + ("n/a" if r is None else f"{r:.3f}")
                for e, r in rho.items()), flush=True)

    print(f"Spearman rho, val_loss at the rung vs the run's best ({n_configs} configs per seed, "
          f"mean +- std over seeds {seeds}):")
    summary: dict[str, Any] = {}
    for recipe in recipes:
        per_rung = {}
        for e in rungs:
            vals = [figures[recipe][s]["rho_by_rung"][e] for s in seeds]
            per_rung[e] = mean_std([v for v in vals if v is not None])
        summary[recipe] = per_rung
        print(f"  {recipe:>6}: " + "; ".join(
            f"epoch {e}: {m['mean']:.3f} +- {m['std']:.3f}" for e, m in per_rung.items()))
    # Issue 17 goal 1 for the space's configs: the median config's curve is smooth.
    print(f"worst val_loss / best so far after epoch {SMOOTH_AFTER}, over every config (goal: "
          f"the median config's <= {GOAL_JUMP:g}):")
    smooth: dict[str, Any] = {}
    for recipe in recipes:
        jumps = sorted(c["worst_jump"] for s in seeds for c in figures[recipe][s]["configs"]
                       if c["worst_jump"] is not None)  # None: too few epochs
        if not jumps:
            continue
        smooth[recipe] = {"median": statistics.median(jumps), "worst": jumps[-1],
                          "within": sum(j <= GOAL_JUMP for j in jumps), "n": len(jumps)}
        print(f"  {recipe:>6}: median {smooth[recipe]['median']:.3f}, worst "
              f"{jumps[-1]:.3g}, {smooth[recipe]['within']} of {len(jumps)} within "
              f"{GOAL_JUMP:g}x")
    wall_min = (time.perf_counter() - t_start) / 60
    print(f"bench wall: {wall_min:.1f} min")
    out = Path(args.out_dir) if args.out_dir else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    plot = out / f"{NAME}{'-tiny' if args.tiny else ''}.png"
    scatter(runs, early, plot)
    print(f"scatter plot: {plot}")
    main_recipe = recipes[0]
    ratio = summary[main_recipe][early]["mean"] / GOAL_RHO
    name = NAME + ("-tiny" if args.tiny else "")
    path = write_result(name, ratio, GOAL, ratio >= 1.0, {
        "summary": summary, "smooth": smooth, "figures": figures, "seeds": seeds,
        "recipes": recipes, "early_epoch": early,
        "configs_per_seed": n_configs, "sizes": sizes, "rungs": rungs, "space": args.space,
        "wall_min": wall_min, "plot": str(plot)}, quick=args.quick or args.tiny,
        out_dir=args.out_dir)
    headline(name, ratio, GOAL, ratio >= 1.0, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
