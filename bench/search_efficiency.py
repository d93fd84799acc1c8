"""Bench: ASHA + TPE (countnet's search) vs FIFO random search, same trials and epochs.

    python bench/search_efficiency.py [--quick] [--seeds 0,1,2] [--space FILE]

For each seed, two searches of the same space (search_spaces/generalise.yaml by default, its data
shrunk by --quick) with the same number of trials, max_epochs, concurrency, resources and seed:
- countnet's own search (`tune.search.run_search`): Optuna TPE + ASHA, trials stopped early;
- FIFO random search: Optuna's RandomSampler with the same seed through Ray's OptunaSearch, no
  early stopping: every trial trains all max_epochs.
TPE's first trials are random draws from a RandomSampler with the same seed, so the two searches
start from the same configs (how many they share is printed). Each search records the total
epochs trained, the wall time, and the best val_loss reached (and the val_acc of that epoch).

Goal: ASHA + TPE trains <= 1/4 of FIFO's epochs with a best val_loss within 5 % of FIFO's;
`ratio` = mean over seeds of (ASHA epochs / FIFO epochs).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NAME = "search_efficiency"
GOAL_EPOCHS = 0.25
GOAL_LOSS = 1.05
GOAL = ("ASHA+TPE trains <= 1/4 of FIFO random search's epochs, best val_loss <= 1.05x FIFO's "
        "(ratio = mean ASHA/FIFO epochs over seeds)")
DEFAULT_SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "generalise.yaml"
# size -> (fixed overrides, num_samples, max_epochs, seeds); None keeps the space's own value.
SIZES: dict[str, tuple[dict[str, Any], int | None, int | None, tuple[int, ...]]] = {
    "full": ({}, None, None, (0, 1, 2)),
    # The space's own ASHA settings (grace, rf) over fewer, shorter trials on less data.
    "quick": ({"train_size": 128, "val_size": 128, "train_eval_size": 128}, 6, 6, (0, 1, 2)),
    "tiny": ({"train_size": 64, "val_size": 32, "train_eval_size": 32}, 2, 2, (0,)),
}


def shrink(space: Any, fixed: dict[str, Any], num_samples: int | None, max_epochs: int | None,
           grace_period: int | None = None, reduction_factor: float | None = None) -> Any:
    """The space with smaller data and fewer trials/epochs (as `countnet search` overrides do)."""
    if fixed:
        space = space.replace(fixed={**space.fixed, **fixed})
    if num_samples:
        space = space.replace(num_samples=num_samples)
    if max_epochs:
        space = space.replace(max_epochs=max_epochs,
                              grace_period=min(space.grace_period, max_epochs))
    if grace_period:
        space = space.replace(grace_period=min(grace_period, space.max_epochs))
    if reduction_factor:
        space = space.replace(reduction_factor=float(reduction_factor))
    return space


def fifo_random_search(space: Any, storage: Path, name: str, seed: int) -> list[Any]:
    """The baseline: the same trainable, space, trials and concurrency; random, no stopping."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from tune.results import load_trials
    from tune.search import NUM_TO_KEEP, trainable, trial_dirname
    from tune.space import DefineByRun

    searcher = OptunaSearch(space=DefineByRun(space), metric=space.metric, mode=space.mode,
                            sampler=optuna.samplers.RandomSampler(seed=seed))
    tuner = tune.Tuner(
        trainable(space.cpu, space.gpu), param_space=space.base_config(),
        tune_config=tune.TuneConfig(
            metric=space.metric, mode=space.mode, search_alg=searcher, scheduler=FIFOScheduler(),
            num_samples=space.num_samples, max_concurrent_trials=space.max_concurrent,
            reuse_actors=True, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), verbose=0,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=NUM_TO_KEEP, checkpoint_score_attribute=space.metric,
                checkpoint_score_order=space.mode)))
    tuner.fit()
    return load_trials(storage / name, space.metric, space.mode)


def summarise(trials: list[Any], wall_s: float) -> dict[str, Any]:
    """Total epochs, wall time, and the best val_loss over every epoch of every trial."""
    rows = [row for t in trials for row in t.history
            if isinstance(row.get("val_loss"), float) and row["val_loss"] == row["val_loss"]]
    best = min(rows, key=lambda r: r["val_loss"]) if rows else None
    return {"epochs": sum(t.epochs_run for t in trials), "trials": len(trials), "wall_s": wall_s,
            "best_val_loss": best["val_loss"] if best else float("nan"),
            "best_val_acc": best["val_acc"] if best else float("nan"),
            "max_val_acc": max((r["val_acc"] for r in rows), default=float("nan")),
            "epochs_per_trial": sorted(t.epochs_run for t in trials),
            "params": [t.params for t in sorted(trials, key=lambda t: t.trial_id)]}


def shared_configs(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> int:
    """How many of a's trial configs b also ran."""
    keys = {json.dumps(p, sort_keys=True, default=str) for p in b}
    return sum(json.dumps(p, sort_keys=True, default=str) in keys for p in a)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="sized to finish in minutes on 2 cores")
    p.add_argument("--tiny", action="store_true", help="seconds; for the smoke test")
    p.add_argument("--seeds", help="comma-separated seeds (default by size: 0,1,2)")
    p.add_argument("--space", type=Path, default=DEFAULT_SPACE, help="search-space YAML")
    p.add_argument("--train-size", type=int, help="training images (default by size)")
    p.add_argument("--num-samples", type=int, help="trials per search (default by size)")
    p.add_argument("--max-epochs", type=int, help="epochs of a full trial (default by size)")
    p.add_argument("--grace-period", type=int, help="ASHA grace period (default: the space's)")
    p.add_argument("--reduction-factor", type=float, help="ASHA rf (default: the space's)")
    p.add_argument("--out-dir", help="write the JSON here instead of bench/results")
    args = p.parse_args(argv)
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    fixed, num_samples, max_epochs, seeds = SIZES[size]
    if args.seeds:
        seeds = tuple(int(s) for s in args.seeds.split(","))
    if args.train_size:
        fixed = {**fixed, "train_size": args.train_size}

    import ray

    from tune.cluster import connect
    from tune.search import run_search
    from tune.space import load_space

    space = shrink(load_space(args.space), fixed, args.num_samples or num_samples,
                   args.max_epochs or max_epochs, args.grace_period, args.reduction_factor)
    print(f"space {args.space.name}: {space.num_samples} trials x {space.max_epochs} epochs, "
          f"ASHA grace {space.grace_period} rf {space.reduction_factor:g}, "
          f"{space.max_concurrent} at once, data {space.fixed.get('train_size')} train images; "
          f"seeds {list(seeds)}; size {size}", flush=True)
    started = connect(None)  # embedded local Ray, as `countnet search` starts it
    per_seed = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for seed in seeds:
                t0 = time.perf_counter()
                asha = run_search(space, storage=tmp, name=f"asha-{seed}", seed=seed, verbose=0)
                a = summarise(asha.trials, time.perf_counter() - t0)
                t0 = time.perf_counter()
                fifo = fifo_random_search(space, Path(tmp), f"fifo-{seed}", seed)
                f = summarise(fifo, time.perf_counter() - t0)
                row = {"seed": seed, "asha_tpe": a, "fifo_random": f,
                       "epochs_ratio": a["epochs"] / f["epochs"],
                       "wall_ratio": a["wall_s"] / f["wall_s"],
                       "val_loss_ratio": a["best_val_loss"] / f["best_val_loss"],
                       "shared_configs": shared_configs(a["params"], f["params"])}
                per_seed.append(row)
                print(f"  seed {seed}: ASHA+TPE {a['epochs']} epochs, {a['wall_s']:.0f} s, best "
                      f"val_loss {a['best_val_loss']:.4f} (val_acc {a['best_val_acc']:.3f}) | "
                      f"FIFO random {f['epochs']} epochs, {f['wall_s']:.0f} s, best val_loss "
                      f"{f['best_val_loss']:.4f} (val_acc {f['best_val_acc']:.3f}) | epochs "
                      f"x{row['epochs_ratio']:.2f}, wall x{row['wall_ratio']:.2f}, val_loss "
                      f"x{row['val_loss_ratio']:.3f}; {row['shared_configs']} of "
                      f"{a['trials']} configs shared", flush=True)
    finally:
        if started:
            ray.shutdown()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import headline, mean_std, write_result

    stats = {k: mean_std([r[k] for r in per_seed])
             for k in ("epochs_ratio", "wall_ratio", "val_loss_ratio")}
    for side in ("asha_tpe", "fifo_random"):
        for k in ("epochs", "wall_s", "best_val_loss", "best_val_acc"):
            stats[f"{side}.{k}"] = mean_std([r[side][k] for r in per_seed])
    for k, v in stats.items():
        print(f"  {k:28s} {v['mean']:10.4g} ± {v['std']:.3g}  (n={v['n']})")
    ratio = stats["epochs_ratio"]["mean"]
    met = ratio <= GOAL_EPOCHS and stats["val_loss_ratio"]["mean"] <= GOAL_LOSS
    name = NAME + ("-tiny" if args.tiny else "")
    path = write_result(name, ratio, GOAL, met, {
        "val_loss_ratio": stats["val_loss_ratio"]["mean"], "stats": stats, "per_seed": per_seed,
        "space": space.to_dict(), "size": size}, quick=args.quick or args.tiny,
        out_dir=args.out_dir)
    headline(name, ratio, GOAL, met, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
