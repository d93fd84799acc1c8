"""Bench: ASHA + TPE (countnet's search) against FIFO random search and ASHA + random search.

    python bench/search_efficiency.py [--quick | --tiny] [--seeds 0,1,2] [--space FILE]

Three arms per sampler seed, on the same space (bench/spaces/efficiency.yaml: 27 trials x 9
epochs, ASHA grace 3 and reduction factor 3), the same number of trials, max_epochs,
concurrency, resources and seed:
- `fifo_random`: Optuna's RandomSampler through Ray's OptunaSearch, no early stopping: every
  trial trains all max_epochs;
- `asha_random`: the same RandomSampler with countnet's PruningAwareOptunaSearch and ASHA;
- `asha_tpe`: countnet's own search (`tune.search.run_search`): seeded TPE + ASHA.
The arms run one after another, each on the whole machine. Each records the total epochs
trained, the wall time, and the best val_loss over every epoch of every trial (and that epoch's
val_acc). The random arms draw the same configs (same sampler, same seed); TPE's first
max(3, num_samples // 3) trials are random draws too, from its own generator. The FIFO arm, which
stops nothing, also gives ASHA's rung fidelity on this space: Spearman ρ between each trial's
val_loss at a rung and its best (low ρ: ASHA's stops there are noise).

Goals (issue 10): ASHA + TPE trains <= 1/3 of FIFO's epochs; its best val_loss is within 5 % of
FIFO's, and <= ASHA + random's. Each as the mean over seeds of the per-seed ratio, +- std.
`ratio` = ASHA + TPE epochs / FIFO epochs (mean over seeds).
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
GOAL_EPOCHS = 1 / 3
GOAL_LOSS = 1.05
GOAL = ("ASHA+TPE trains <= 1/3 of FIFO random search's epochs, best val_loss <= 1.05x FIFO's "
        "and <= ASHA+random's (means over seeds); ratio = ASHA+TPE epochs / FIFO epochs")
DEFAULT_SPACE = Path(__file__).resolve().parent / "spaces" / "efficiency.yaml"
ARMS = ("fifo_random", "asha_random", "asha_tpe")
# size -> (fixed overrides, num_samples, max_epochs, seeds); None keeps the space's own value.
SIZES: dict[str, tuple[dict[str, Any], int | None, int | None, tuple[int, ...]]] = {
    "full": ({}, None, None, (0, 1, 2)),
    # The space's own ASHA settings (grace, rf) over fewer trials on less data.
    "quick": ({"train_size": 300, "val_size": 200, "train_eval_size": 100}, 12, None, (0, 1)),
    "tiny": ({"train_size": 64, "val_size": 32, "train_eval_size": 32}, 3, 2, (0,)),
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

    from tune.optuna_space import DefineByRun
    from tune.results import load_trials
    from tune.search import NUM_TO_KEEP, trainable, trial_dirname

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
    """Total epochs, wall time, and the best val_loss over every epoch of every trial.

    Also each trial's params and val_loss per epoch (`curves`), in trial-id order.
    """
    rows = [row for t in trials for row in t.history
            if isinstance(row.get("val_loss"), float) and row["val_loss"] == row["val_loss"]]
    best = min(rows, key=lambda r: r["val_loss"]) if rows else None
    by_id = sorted(trials, key=lambda t: t.trial_id)
    return {"epochs": sum(t.epochs_run for t in trials), "trials": len(trials), "wall_s": wall_s,
            "best_val_loss": best["val_loss"] if best else float("nan"),
            "best_val_acc": best["val_acc"] if best else float("nan"),
            "max_val_acc": max((r["val_acc"] for r in rows), default=float("nan")),
            "epochs_per_trial": sorted(t.epochs_run for t in trials),
            "params": [t.params for t in by_id],
            "curves": [[r.get("val_loss") for r in t.history] for t in by_id]}


def rung_fidelity(trials: list[Any], space: Any) -> dict[str, float | None]:
    """For a search without stops (FIFO): Spearman ρ at each ASHA rung of the space.

    ρ between each trial's val_loss at the rung and its best over the run: what ASHA would have
    stopped on, judged against how the trials really ended (countnet.rung_audit).
    """
    from countnet.rung_audit import audit_rungs, rung_milestones

    milestones = rung_milestones(space.grace_period, space.reduction_factor, space.max_epochs)
    audits = audit_rungs({t.trial_id: t.history for t in trials}, milestones, space.metric,
                         space.mode)
    return {str(a.epoch): a.rho for a in audits}


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

    import optuna
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
    started = connect(None, log_to_driver=False)  # embedded local Ray, as `countnet search`
    per_seed = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for seed in seeds:
                row: dict[str, Any] = {"seed": seed}
                for arm in ARMS:
                    t0 = time.perf_counter()
                    if arm == "fifo_random":
                        trials = fifo_random_search(space, Path(tmp), f"{arm}-{seed}", seed)
                    else:
                        sampler = (optuna.samplers.RandomSampler(seed=seed)
                                   if arm == "asha_random" else None)  # None: countnet's TPE
                        trials = run_search(space, storage=tmp, name=f"{arm}-{seed}", seed=seed,
                                            verbose=0, sampler=sampler).trials
                    row[arm] = summarise(trials, time.perf_counter() - t0)
                    if arm == "fifo_random":
                        row["fifo_rung_rho"] = rung_fidelity(trials, space)
                    r = row[arm]
                    print(f"  seed {seed} {arm:<11}: {r['epochs']:3d} epochs, {r['wall_s']:4.0f} s,"
                          f" best val_loss {r['best_val_loss']:.4f} (val_acc "
                          f"{r['best_val_acc']:.3f})", flush=True)
                a, f, rnd = row["asha_tpe"], row["fifo_random"], row["asha_random"]
                row.update(epochs_ratio=a["epochs"] / f["epochs"],
                           wall_ratio=a["wall_s"] / f["wall_s"],
                           val_loss_ratio=a["best_val_loss"] / f["best_val_loss"],
                           vs_random_val_loss_ratio=a["best_val_loss"] / rnd["best_val_loss"],
                           random_epochs_ratio=rnd["epochs"] / f["epochs"],
                           shared_configs=shared_configs(a["params"], f["params"]))
                per_seed.append(row)
                rhos = ", ".join(f"epoch {e}: " + ("-" if v is None else f"{v:.2f}")
                                 for e, v in row["fifo_rung_rho"].items()) or "no rung"
                print(f"  seed {seed}: ASHA+TPE / FIFO epochs x{row['epochs_ratio']:.2f}, "
                      f"best val_loss x{row['val_loss_ratio']:.3f}; ASHA+TPE / ASHA+random "
                      f"best val_loss x{row['vs_random_val_loss_ratio']:.3f}; FIFO's trials, "
                      f"rho(rung, best) {rhos}", flush=True)
    finally:
        if started:
            ray.shutdown()

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import headline, mean_std, write_result

    stats = {k: mean_std([r[k] for r in per_seed])
             for k in ("epochs_ratio", "wall_ratio", "val_loss_ratio",
                       "vs_random_val_loss_ratio", "random_epochs_ratio")}
    for side in ARMS:
        for k in ("epochs", "wall_s", "best_val_loss", "best_val_acc"):
            stats[f"{side}.{k}"] = mean_std([r[side][k] for r in per_seed])
    for k, v in stats.items():
        print(f"  {k:28s} {v['mean']:10.4g} ± {v['std']:.3g}  (n={v['n']})")
    ratio = stats["epochs_ratio"]["mean"]
    goals = {"epochs_le_1/3_fifo": ratio <= GOAL_EPOCHS,
             "val_loss_le_1.05_fifo": stats["val_loss_ratio"]["mean"] <= GOAL_LOSS,
             "val_loss_le_asha_random": stats["vs_random_val_loss_ratio"]["mean"] <= 1.0}
    for k, v in goals.items():
        print(f"goal {k}: {'met' if v else 'NOT met'}")
    met = all(goals.values())
    name = NAME + ("-tiny" if args.tiny else "")
    path = write_result(name, ratio, GOAL, met, {
        "val_loss_ratio": stats["val_loss_ratio"]["mean"], "goals": goals, "stats": stats,
        "per_seed": per_seed,
        "space": space.to_dict(), "size": size}, quick=args.quick or args.tiny,
        out_dir=args.out_dir)
    headline(name, ratio, GOAL, met, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
