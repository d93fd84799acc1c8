"""Bench: the same `fit` bare vs inside a Ray Tune trial that reports and checkpoints every epoch.

    python bench/overhead.py [--quick] [--repeats R]

Same model, data, epochs and thread count (1: a trial with `cpu: 1` runs torch with 1 thread,
and so does the bare run). The trial is countnet's own trainable (`tune.trainable`), which per
epoch writes a checkpoint with fit's `save` and calls `tune.report(metrics, checkpoint=...)`;
the Tuner keeps the best checkpoint by val_loss and logs TensorBoard scalars, as a search does.

An epoch's wall time is measured the same way on both sides: from one end-of-epoch to the next,
as seen by whoever consumes the results (the bare loop's callback; the Tune driver's callback
for the trial, so report, checkpoint upload, the driver round trip and the trial waiting for
its next `train()` call all count). The first epoch (data generation, start-up) is left out.
report + checkpoint per epoch = trial epoch wall time - fit's own epoch_time_s of that epoch.
The bare run is a separate process started when the trial's actor starts, so both train at the
same time, 1 thread each, under the same load from other processes (the machine is shared: runs
one after the other differed by 2x in the same minute). Ray runs trial workers at nice 15
(`RAY_worker_niceness`), so the bare process gets the same niceness: otherwise it would simply
take CPU from the trial. Repeats give the spread.

Goal: trial images/s >= 0.97 of bare, and report + checkpoint < 2 % of an epoch.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from countnet.config import TrainConfig
from countnet.train import fit

NAME = "overhead"
GOAL_RATIO = 0.97
GOAL_SHARE = 0.02
GOAL = "trial images/s >= 0.97 of bare fit, report + checkpoint < 2 % of an epoch"
# size -> (config overrides, repeats). The default simple net on generalise.yaml's data.
SIZES = {
    "full": ({"train_size": 3000, "val_size": 1000, "train_eval_size": 1000, "epochs": 6}, 3),
    "quick": ({"train_size": 800, "val_size": 400, "train_eval_size": 400, "epochs": 4}, 2),
    "tiny": ({"train_size": 128, "val_size": 32, "train_eval_size": 32, "epochs": 3,
              "width": 8, "depth": 3}, 1),
}
THREADS = 1  # per trial, as `resources_per_trial: {cpu: 1}` gives
# Ray starts trial workers at this niceness (Ray's default 15); the bare run gets the same.
WORKER_NICENESS = int(os.environ.get("RAY_worker_niceness", "15"))  # noqa: SIM112 (Ray's name)


def bare_epochs(cfg: TrainConfig) -> list[dict[str, float]]:
    """fit in this process; each epoch's wall time from one end-of-epoch callback to the next."""
    rows: list[dict[str, float]] = []
    last = [time.perf_counter()]

    def on_epoch_end(metrics: dict[str, float], save: Any) -> None:
        now = time.perf_counter()
        rows.append({"epoch": metrics["epoch"], "wall_s": now - last[0],
                     "epoch_time_s": metrics["epoch_time_s"],
                     "images_per_s": metrics["images_per_s"]})
        last[0] = now

    fit(cfg, on_epoch_end)
    return rows[1:]


def ray_epochs(cfg: TrainConfig, storage: Path,
               name: str) -> tuple[list[dict], list[dict], int | None]:
    """The config as one Ray Tune trial of countnet's trainable, and at the same time bare fit
    in a separate process. Returns (trial epochs, bare epochs, the trial process's niceness)."""
    from ray import tune

    from tune.search import NUM_TO_KEEP
    from tune.tensorboard import CountnetTBXLogger
    from tune.trainable import train_countnet

    class EpochTimes(tune.Callback):
        """Driver-side arrival time of every result; starts the bare run with the trial."""

        def __init__(self) -> None:
            self.rows: list[dict[str, float]] = []
            self.bare: subprocess.Popen | None = None
            self.trial_niceness: int | None = None

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.bare = subprocess.Popen(
                [sys.executable, __file__, "--bare-worker", json.dumps(cfg.to_dict())],
                stdout=subprocess.PIPE, text=True,
                preexec_fn=lambda: os.nice(WORKER_NICENESS - os.nice(0)))

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                            **info: Any) -> None:
            if not self.rows:
                self.trial_niceness = os.getpriority(os.PRIO_PROCESS, int(result["pid"]))
            self.rows.append({"epoch": result["epoch"], "t": time.perf_counter(),
                              "epoch_time_s": result["epoch_time_s"],
                              "images_per_s": result["images_per_s"]})

    times = EpochTimes()
    tuner = tune.Tuner(
        tune.with_resources(train_countnet, {"cpu": THREADS, "gpu": 0}),
        param_space=cfg.to_dict(),
        tune_config=tune.TuneConfig(num_samples=1, metric="val_loss", mode="min"),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), verbose=0,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=NUM_TO_KEEP, checkpoint_score_attribute="val_loss",
                checkpoint_score_order="min"),
            callbacks=[times, CountnetTBXLogger()]))
    grid = tuner.fit()
    if grid.errors:
        raise SystemExit(f"bench/overhead.py: the trial failed: {grid.errors[0]}")
    if times.bare is None:
        raise SystemExit("bench/overhead.py: the trial never started")
    out, _ = times.bare.communicate()
    if times.bare.returncode != 0:
        raise SystemExit("bench/overhead.py: the bare run failed")
    bare = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    rows = times.rows
    trial = [{"epoch": b["epoch"], "wall_s": b["t"] - a["t"], "epoch_time_s": b["epoch_time_s"],
              "images_per_s": b["images_per_s"]} for a, b in itertools.pairwise(rows)]
    return trial, bare, times.trial_niceness


def summarise(rows: list[dict[str, float]], train_size: int) -> dict[str, float]:
    wall = statistics.median(r["wall_s"] for r in rows)
    extra = statistics.median(r["wall_s"] - r["epoch_time_s"] for r in rows)
    return {"epoch_wall_s": wall, "images_per_s": train_size / wall,
            "fit_images_per_s": statistics.median(r["images_per_s"] for r in rows),
            "outside_epoch_ms": 1e3 * extra, "outside_epoch_share": extra / wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="sized to finish in < 2 min on 2 cores")
    p.add_argument("--tiny", action="store_true", help="seconds; for the smoke test")
    p.add_argument("--repeats", type=int, help="bare/Ray pairs (default by size)")
    p.add_argument("--out-dir", help="write the JSON here instead of bench/results")
    p.add_argument("--bare-worker", metavar="CONFIG_JSON", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.bare_worker:  # the bare side: fit in this process, one JSON line per epoch
        for row in bare_epochs(TrainConfig.from_dict(json.loads(args.bare_worker))):
            print(json.dumps(row), flush=True)
        return 0
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    overrides, repeats = SIZES[size]
    repeats = args.repeats or repeats
    cfg = TrainConfig(threads=THREADS, device="cpu").replace(**overrides)
    print(f"{cfg.model} (width {cfg.width}, depth {cfg.depth}), {cfg.train_size} train images, "
          f"{cfg.epochs} epochs, {THREADS} thread; size {size}, {repeats} repeat(s)", flush=True)

    import ray

    from tune.cluster import connect

    started = connect(None)  # embedded local Ray, as `countnet search` starts it
    pairs = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(repeats):
                trial_rows, bare_rows, nice = ray_epochs(cfg, Path(tmp), f"overhead{r}")
                bare = summarise(bare_rows, cfg.train_size)
                trial = summarise(trial_rows, cfg.train_size)
                pairs.append({"bare": bare, "ray": trial, "trial_niceness": nice,
                              "bare_niceness": WORKER_NICENESS,
                              "ratio": trial["images_per_s"] / bare["images_per_s"]})
                print(f"  repeat {r + 1}: bare {bare['images_per_s']:,.0f} img/s "
                      f"(epoch {bare['epoch_wall_s']:.2f} s), Ray trial "
                      f"{trial['images_per_s']:,.0f} img/s (epoch {trial['epoch_wall_s']:.2f} s, "
                      f"report + checkpoint {trial['outside_epoch_ms']:.0f} ms = "
                      f"{trial['outside_epoch_share']:.2%}) -> x{pairs[-1]['ratio']:.3f}",
                      flush=True)
    finally:
        if started:
            ray.shutdown()
    ratio = statistics.median(x["ratio"] for x in pairs)
    report_ms = statistics.median(x["ray"]["outside_epoch_ms"] for x in pairs)
    share = statistics.median(x["ray"]["outside_epoch_share"] for x in pairs)
    in_loop = statistics.median(x["ray"]["fit_images_per_s"] / x["bare"]["fit_images_per_s"]
                                for x in pairs)
    print(f"Ray trial / bare: x{ratio:.3f} images/s (median of {len(pairs)}; training loop alone "
          f"x{in_loop:.3f}); report + checkpoint {report_ms:.0f} ms per epoch = {share:.2%}")
    met = ratio >= GOAL_RATIO and share < GOAL_SHARE
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import headline, write_result

    name = NAME + ("-tiny" if args.tiny else "")
    path = write_result(name, ratio, GOAL, met, {
        "report_checkpoint_ms": report_ms, "report_checkpoint_share": share,
        "training_loop_ratio": in_loop, "pairs": pairs, "threads": THREADS,
        "config": cfg.to_dict(), "size": size,
    }, quick=args.quick or args.tiny, out_dir=args.out_dir)
    headline(name, ratio, GOAL, met, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
