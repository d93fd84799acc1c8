"""Bench: how long a Ray Tune trial takes to start, and what reuse saves.

    python bench/trial_startup.py [--quick]

Trials run one after another (one at a time, `cpu: 1`), with the same data and different seeds,
as in a search. Each part is measured with Ray Tune's actor reuse off and on (countnet's search
runs with `reuse_actors=True`; `countnet.datasets.load_splits` caches the data per process):

1. countnet's own trainable (`tune.trainable.train_countnet`): time from a trial being scheduled
   (the previous trial completing; the Tune loop's first step for the first trial) to its first
   result, seen by the driver. Minus fit's epoch_time_s of that epoch, this is the start-up.
2. The split, by a probe trainable doing the trainable's start-up steps with a clock:
   Ray actor start (scheduled -> the trainable function entered), imports (torch, countnet,
   the tune package), data generation (`load_splits`), model build (model + optimiser), and
   the first batch (one forward + backward + step): scheduled -> first batch.

Goal (figure, not a ratio target in the issue): the start-up of a trial on a reused actor as a
fraction of a fresh one; `ratio` = reused / fresh time from scheduled to first batch (lower is
better; goal < 0.5, i.e. reuse at least halves it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

NAME = "trial_startup"
GOAL_RATIO = 0.5
GOAL = ("scheduled -> first batch with reuse_actors + per-process data cache <= 0.5 of a fresh "
        "actor (ratio = reused / fresh, lower is better)")
# size -> (TrainConfig overrides, trials per Tuner without reuse, with reuse, reuse settings
# for which countnet's trainable runs too). Data as in search_spaces/generalise.yaml.
SIZES = {
    "full": ({"train_size": 3000, "val_size": 1000, "train_eval_size": 1000}, 4, 4,
             (False, True)),
    "quick": ({"train_size": 1000, "val_size": 500, "train_eval_size": 250}, 3, 3,
              (False, True)),
    "tiny": ({"train_size": 128, "val_size": 32, "train_eval_size": 32, "width": 8,
              "depth": 3}, 1, 2, (True,)),
}
PHASES = ("actor_start_s", "imports_s", "data_s", "model_s", "first_batch_s")


def probe(config: dict[str, Any]) -> None:
    """The trainable's start-up steps, each timed; reports them as the trial's only result."""
    entered = time.time()
    # countnet's trainable module pulls in torch, countnet and Ray Tune, as a real trial does.
    importlib.import_module("tune.trainable")
    from ray.tune import report

    imported = time.time()
    import torch

    from countnet.config import TrainConfig
    from countnet.datasets import load_splits
    from countnet.models import model_from_config
    from countnet.train import build_optimizer, loss_function, set_threads

    cfg = TrainConfig.from_dict(config)
    set_threads(cfg.threads)
    splits = load_splits(cfg, "cpu")  # cached per process: a reused actor skips this
    data = time.time()
    torch.manual_seed(cfg.seed)
    model = model_from_config(cfg)
    opt = build_optimizer(model, cfg)
    built = time.time()
    loss = loss_function(cfg)(model(splits.train_x[:cfg.batch_size]),
                              splits.train_y[:cfg.batch_size])
    opt.zero_grad()
    loss.backward()
    opt.step()
    first_batch = time.time()
    report({"entered": entered, "imports_s": imported - entered, "data_s": data - imported,
                 "model_s": built - data, "first_batch_s": first_batch - built,
                 "first_batch_at": first_batch, "pid": os.getpid()})


def make_timeline() -> Any:
    from ray import tune

    class Timeline(tune.Callback):
        """Driver-side times: the loop's first step, trial start, first result, completion."""

        def __init__(self) -> None:
            self.first_step: float | None = None
            self.trials: dict[str, dict[str, Any]] = {}

        def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
            if self.first_step is None:
                self.first_step = time.time()

        def _row(self, trial: Any) -> dict[str, Any]:
            return self.trials.setdefault(trial.trial_id, {})

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._row(trial).setdefault("started", time.time())

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            row = self._row(trial)
            if "first_result" not in row:
                row["first_result"] = time.time()
                row["result"] = dict(result)

        def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                              **info: Any) -> None:
            self._row(trial).setdefault("completed", time.time())

        def ordered(self) -> list[dict[str, Any]]:
            """Trials in start order, each with `scheduled` (the previous one's completion)."""
            rows = sorted((r for r in self.trials.values() if "first_result" in r),
                          key=lambda r: r["started"])
            prev = self.first_step
            for r in rows:
                r["scheduled"] = prev
                prev = r.get("completed", r["first_result"])
            return rows

    return Timeline()


def run_trials(trainable: Any, cfg_dict: dict[str, Any], trials: int, reuse: bool,
               storage: Path, name: str) -> list[dict[str, Any]]:
    """`trials` sequential one-epoch trials (seeds 0..trials-1); their driver-side timeline."""
    from ray import tune

    timeline = make_timeline()
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1, "gpu": 0}),
        param_space={**cfg_dict, "seed": tune.grid_search(list(range(trials)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=reuse),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), verbose=0,
                                  callbacks=[timeline]))
    grid = tuner.fit()
    if grid.errors:
        raise SystemExit(f"bench/trial_startup.py: a trial failed: {grid.errors[0]}")
    return timeline.ordered()


def product_rows(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    out = []
    for r in rows:
        to_result = r["first_result"] - r["scheduled"]
        out.append({"to_first_result_s": to_result,
                    "epoch_time_s": r["result"]["epoch_time_s"],
                    "startup_s": to_result - r["result"]["epoch_time_s"],
                    "actor_start_s": r["started"] - r["scheduled"]})
    return out


def probe_rows(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    out = []
    for r in rows:
        res = r["result"]
        row = {"actor_start_s": res["entered"] - r["scheduled"],
               **{k: res[k] for k in PHASES[1:]}, "pid": res["pid"]}
        row["to_first_batch_s"] = res["first_batch_at"] - r["scheduled"]
        row["to_first_result_s"] = r["first_result"] - r["scheduled"]
        out.append(row)
    return out


def fmt(row: dict[str, float], keys: tuple[str, ...]) -> str:
    return "  ".join(f"{k.removesuffix('_s')} {row[k]:6.2f}s" for k in keys)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="sized to finish in < 2 min on 2 cores")
    p.add_argument("--tiny", action="store_true", help="seconds; for the smoke test")
    p.add_argument("--out-dir", help="write the JSON here instead of bench/results")
    args = p.parse_args(argv)
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    overrides, trials_fresh, trials_reuse, product_modes = SIZES[size]

    import ray
    from ray import cloudpickle

    from countnet.config import TrainConfig
    from tune.trainable import train_countnet

    # When this file is imported (not run), Ray must still ship `probe` by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cfg = TrainConfig(threads=1, device="cpu", epochs=1).replace(**overrides)
    print(f"{trials_fresh} (no reuse) / {trials_reuse} (reuse) sequential trials per run, "
          f"cpu: 1, data {cfg.train_size} + {cfg.val_size} images, {cfg.model}; size {size}",
          flush=True)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
    figures: dict[str, Any] = {"config": cfg.to_dict(), "size": size,
                               "trials_per_run": {"fresh": trials_fresh, "reuse": trials_reuse}}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for reuse in (False, True):
                key = "reuse" if reuse else "fresh"
                trials = trials_reuse if reuse else trials_fresh
                prod = product_rows(run_trials(train_countnet, cfg.to_dict(), trials, reuse,
                                               Path(tmp), f"product-{key}")
                                    ) if reuse in product_modes else []
                prb = probe_rows(run_trials(probe, cfg.to_dict(), trials, reuse, Path(tmp),
                                            f"probe-{key}"))
                figures[f"product_{key}"], figures[f"probe_{key}"] = prod, prb
                print(f"reuse_actors={reuse}:")
                for i, b in enumerate(prb):
                    if i < len(prod):
                        a = prod[i]
                        print(f"  trial {i + 1}: countnet trainable: first result "
                              f"{a['to_first_result_s']:6.2f}s (start-up {a['startup_s']:5.2f}s "
                              f"+ epoch {a['epoch_time_s']:5.2f}s)")
                    print(f"  trial {i + 1} probe: {fmt(b, PHASES)} -> first batch "
                          f"{b['to_first_batch_s']:6.2f}s (pid {b['pid']})", flush=True)
    finally:
        if started:
            ray.shutdown()

    # Trial 1 of each run starts a fresh actor either way; later trials show what reuse does.
    def later(key: str, field: str) -> float:
        rows = figures[key][1:] or figures[key]
        return statistics.median(r[field] for r in rows) if rows else float("nan")

    fresh = later("probe_fresh", "to_first_batch_s")
    reused = later("probe_reuse", "to_first_batch_s")
    ratio = reused / fresh
    split = {k: {"fresh": later("probe_fresh", k), "reuse": later("probe_reuse", k)}
             for k in PHASES}
    prod_fresh = later("product_fresh", "startup_s")
    prod_reuse = later("product_reuse", "startup_s")
    print("median over trials 2.. (trial 1 always starts an actor):")
    for k, v in split.items():
        print(f"  {k.removesuffix('_s'):12s} fresh {v['fresh']:6.2f}s   reused {v['reuse']:6.2f}s")
    print(f"  scheduled -> first batch: fresh {fresh:.2f}s, reused {reused:.2f}s -> "
          f"x{ratio:.2f}")
    print(f"  countnet trainable start-up (first result - epoch): fresh {prod_fresh:.2f}s, "
          f"reused {prod_reuse:.2f}s")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import headline, write_result

    met = ratio <= GOAL_RATIO
    name = NAME + ("-tiny" if args.tiny else "")
    path = write_result(name, ratio, GOAL, met, {
        "to_first_batch_fresh_s": fresh, "to_first_batch_reused_s": reused, "split": split,
        "trainable_startup_fresh_s": prod_fresh, "trainable_startup_reused_s": prod_reuse,
        **figures}, quick=args.quick or args.tiny, out_dir=args.out_dir)
    headline(name, ratio, GOAL, met, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
