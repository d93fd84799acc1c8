"""The Python half of bench/gpu.sh: GPU throughput and concurrent trials, with countnet alone.

    python bench/gpu_bench.py [--cpu-check] [--levels 1,2,4] [--out-dir DIR]

Needs torch, countnet and tensorboard, never Ray (the GPU machine has no Ray):
1. images/s of `simple` and `resnet18` at 64x64, data on the device, through `countnet.train.fit`:
   fp32 vs bf16 autocast + channels_last (steady state: the first epoch, with cuDNN autotuning
   and CUDA start-up, is left out);
2. 1, 2 and 4 concurrent trials on one device: N `python -m countnet train` processes at once,
   as Ray runs trials with `gpu: 1, 0.5, 0.25`. Each run's per-epoch images/s and the epochs'
   wall times come from its own TensorBoard events; only epochs during which all N processes
   were training count, so start-up and the end of the run do not skew the aggregate;
3. `nvidia-smi` GPU utilisation sampled during each phase.

`--cpu-check` runs the same code paths on the CPU at a tiny size (no GPU figure means anything
then; it checks the script). Goal (on a GPU): 4 trials give >= 3x the aggregate images/s of one.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

# isort: off
from countnet.runtime import omp_env

# Before torch loads (OpenMP reads it once), as the `countnet` command does: countnet.runtime.
os.environ.update(omp_env())
# isort: on
import torch

from countnet.config import TrainConfig
from countnet.train import fit

NAME = "gpu"
GOAL_RATIO = 3.0
GOAL = "4 concurrent trials on one GPU give >= 3x the aggregate images/s of 1 trial"
REPO = Path(__file__).resolve().parent.parent
# Per size: the throughput runs (model -> overrides) and the trial config of the concurrency runs.
SIZES: dict[str, dict[str, Any]] = {
    "gpu": {
        "throughput": {"simple": {"train_size": 32768, "epochs": 3},
                       "resnet18": {"train_size": 8192, "epochs": 3}},
        # The search's trial: the default simple net, batch 32 (TrainConfig defaults).
        "trial": {"train_size": 32768, "val_size": 2000, "train_eval_size": 2000, "epochs": 4},
        "solo_train_s": 12.0,  # epochs are raised until one trial alone trains this long
        "device": "cuda",
    },
    "cpu-check": {
        "throughput": {"simple": {"train_size": 256, "epochs": 2, "width": 8, "depth": 3,
                                  "val_size": 64, "train_eval_size": 64},
                       "resnet18": {"train_size": 8, "epochs": 1, "image_size": 32,
                                    "max_count": 4, "batch_size": 8, "val_size": 8,
                                    "train_eval_size": 8}},
        "trial": {"train_size": 256, "val_size": 32, "train_eval_size": 32, "epochs": 3,
                  "width": 8, "depth": 3},
        "solo_train_s": 0.0,
        "device": "cpu",
    },
}
MAX_TRIAL_EPOCHS = 40
SMALL_EVAL = {"val_size": 500, "train_eval_size": 500}  # throughput runs: evaluation is not timed
PRECISIONS = {"fp32": {"precision": "fp32", "channels_last": False},
              "bf16+channels_last": {"precision": "bf16", "channels_last": True}}


class UtilSampler:
    """GPU utilisation and memory from `nvidia-smi`, polled in a background thread during a phase.

    One short `nvidia-smi --query-gpu` call per sample: a long-running `nvidia-smi -lms` writes
    into a pipe in blocks and loses its last block when stopped.
    """

    def __init__(self, interval_s: float = 0.5) -> None:
        self.rows: list[tuple[int, int]] = []
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None
        if shutil.which("nvidia-smi"):
            self.thread = threading.Thread(target=self._poll, args=(interval_s,), daemon=True)
            self.thread.start()

    def _poll(self, interval_s: float) -> None:
        while not self.stopped.is_set():
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits", "--id=0"],
                                 capture_output=True, text=True, timeout=10).stdout
            parts = [x.strip() for x in out.strip().split(",")]
            if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
                self.rows.append((int(parts[0]), int(parts[1])))
            self.stopped.wait(interval_s)

    def stop(self) -> dict[str, float] | None:
        """Mean and max utilisation (%) and max memory (MiB); None without nvidia-smi."""
        if self.thread is None:
            return None
        self.stopped.set()
        self.thread.join()
        if not self.rows:
            return None
        util = [u for u, _ in self.rows]
        return {"util_mean": statistics.fmean(util), "util_max": max(util),
                "mem_max_mib": max(m for _, m in self.rows), "samples": len(self.rows)}


def steady_rate(history: list[dict[str, float]]) -> float:
    """Median images/s of the epochs after the first (warm-up) one."""
    rates = [h["images_per_s"] for h in history[1:]] or [history[0]["images_per_s"]]
    return statistics.median(rates)


def throughput(size: dict[str, Any], device: str) -> dict[str, dict[str, Any]]:
    """images/s per model and precision, through the real `fit`, data on the device."""
    out: dict[str, dict[str, Any]] = {}
    for model, overrides in size["throughput"].items():
        for label, prec in PRECISIONS.items():
            cfg = TrainConfig(model=model, device=device, **SMALL_EVAL).replace(**overrides,
                                                                                **prec)
            sampler = UtilSampler()
            rate = steady_rate(fit(cfg).history)
            util = sampler.stop()
            out[f"{model}/{label}"] = {"images_per_s": rate, "nvidia_smi": util,
                                       "config": {**overrides, **prec}}
            util_txt = f"  GPU util mean {util['util_mean']:.0f}%" if util else ""
            print(f"  {model:9s} {label:19s} {rate:12,.0f} img/s{util_txt}", flush=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return out


def train_command(python: str, trial: dict[str, Any], device: str, threads: int,
                  out: Path) -> list[str]:
    """One trial as a user runs it: `python -m countnet train --set k=v ... --out RUN`."""
    sets = {**trial, "device": device, "threads": threads}
    args = [python, "-m", "countnet", "train", "--no-progress", "--out", str(out)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return args


def epoch_walltimes(run_dir: Path) -> list[tuple[float, float]]:
    """(wall time at the end of the epoch, images/s of the epoch) per epoch, from TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.wall_time, e.value) for e in sorted(acc.Scalars("images_per_s"),
                                                   key=lambda e: e.step)]


def overlapped_rates(runs: list[list[tuple[float, float]]],
                     train_size: int) -> tuple[list[float], list[float], bool]:
    """Per run, its images/s over the epochs during which every run was training.

    The window opens when the last run ends its first (warm-up) epoch and closes when the first
    run ends its last. An epoch counts when it starts (its previous epoch's end) and ends inside
    the window. Two rates per run: `wall` (training images per wall second from the end of the
    epoch before the first counted one to the end of the last counted one: evaluation and any
    stall count against it) and `train` (the median of fit's own images_per_s, training time
    only). Returns (wall rates, train rates, overlapped); when some run has no counted epoch,
    its epochs after the first stand in and overlapped is False.
    """
    start = max(r[0][0] for r in runs)
    end = min(r[-1][0] for r in runs)
    wall, train, overlapped = [], [], True
    for r in runs:
        inside = [k for k in range(1, len(r)) if r[k - 1][0] >= start and r[k][0] <= end]
        if not inside:
            overlapped = False
            inside = list(range(1, len(r)))
        if not inside:  # a single-epoch run: no warm-up epoch to leave out
            wall.append(r[0][1])
            train.append(r[0][1])
            continue
        elapsed = r[inside[-1]][0] - r[inside[0] - 1][0]
        wall.append(train_size * len(inside) / max(elapsed, 1e-9))
        train.append(statistics.median(r[k][1] for k in inside))
    return wall, train, overlapped


def concurrency(trial: dict[str, Any], device: str, levels: list[int], python: str,
                work: Path, on_level: Any = None) -> dict[str, dict[str, Any]]:
    """Aggregate images/s of N concurrent `countnet train` processes on one device.

    on_level(rows so far) runs after each level (the script saves partial results with it).
    """
    cores = os.cpu_count() or 1
    out: dict[str, dict[str, Any]] = {}
    for n in levels:
        # Each trial gets its share of the CPU cores for torch's threads, as Ray gives it.
        threads = max(1, cores // n)
        dirs = [work / f"n{n}" / f"trial{i}" for i in range(n)]
        sampler = UtilSampler()
        t0 = time.perf_counter()
        procs = [subprocess.Popen(train_command(python, trial, device, threads, d),
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True) for d in dirs]
        for p in procs:
            log, _ = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"gpu_bench: `countnet train` failed (exit {p.returncode}):\n"
                                 f"{log[-2000:]}")
        wall_s = time.perf_counter() - t0
        util = sampler.stop()
        wall, train, overlapped = overlapped_rates([epoch_walltimes(d) for d in dirs],
                                                   trial["train_size"])
        out[str(n)] = {"trials": n, "gpu_share": 1.0 / n, "threads_per_trial": threads,
                       "per_trial_images_per_s": wall, "aggregate_images_per_s": sum(wall),
                       "per_trial_train_images_per_s": train,
                       "aggregate_train_images_per_s": sum(train),
                       "epochs_overlapped": overlapped, "wall_s": wall_s, "nvidia_smi": util}
        util_txt = f"  GPU util mean {util['util_mean']:.0f}%" if util else ""
        print(f"  {n} trial(s) (gpu: {1 / n:g} each, torch threads {threads}): aggregate "
              f"{sum(wall):10,.0f} img/s (training time only: {sum(train):,.0f}); per trial "
              f"{', '.join(f'{r:,.0f}' for r in wall)}; wall {wall_s:.1f} s"
              f"{'' if overlapped else ' (epochs did not all overlap)'}{util_txt}", flush=True)
        if on_level is not None:
            on_level(out)
    return out


def sized_trial(trial: dict[str, Any], solo_rate: float | None, target_s: float) -> dict:
    """The trial config, with enough epochs that one trial alone trains for about target_s.

    Processes start a few seconds apart (imports, CUDA start-up): runs much shorter than that
    would hardly overlap. solo_rate is the images/s of the same model measured just before.
    """
    if not solo_rate:
        return dict(trial)
    epochs = math.ceil(target_s * solo_rate / trial["train_size"])
    return {**trial, "epochs": min(MAX_TRIAL_EPOCHS, max(trial["epochs"], epochs))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-check", action="store_true",
                   help="same code paths on the CPU at a tiny size (checks the script only)")
    p.add_argument("--levels", default="1,2,4", help="concurrent trials to compare (default 1,2,4)")
    p.add_argument("--skip-throughput", action="store_true", help="only the concurrency part")
    p.add_argument("--out-dir", help="write the JSON here instead of bench/results")
    p.add_argument("--work-dir", help="run directories of the concurrent trials (default: temp)")
    args = p.parse_args(argv)
    size_name = "cpu-check" if args.cpu_check else "gpu"
    size = SIZES[size_name]
    device = size["device"]
    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_bench: no CUDA device; run `bench/gpu.sh --cpu-check` to check the script "
              "on the CPU", file=sys.stderr)
        return 2
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    if not levels or levels[0] != 1 or any(n < 1 for n in levels):
        print("gpu_bench: --levels must start with 1 (the baseline), e.g. 1,2,4", file=sys.stderr)
        return 2
    gpu_name = torch.cuda.get_device_name(0) if device == "cuda" else "none (CPU check)"
    print(f"device: {device}, GPU: {gpu_name}, torch {torch.__version__}, {os.cpu_count()} cores")

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import headline, write_result

    name = NAME if device == "cuda" else f"{NAME}-cpu-check"
    result: dict[str, Any] = {"device": device, "gpu_name": gpu_name, "size": size_name,
                              "levels": levels}

    def save_partial(conc: dict | None = None) -> None:
        """Keep what is measured so far if the 5-minute limit stops the script."""
        write_result(name, float("nan"), GOAL, False,
                     {**result, "concurrency": conc or {}, "partial": True},
                     quick=args.cpu_check, out_dir=args.out_dir)

    if not args.skip_throughput:
        print("images/s through countnet.train.fit, data on the device, 64x64:")
        result["throughput"] = throughput(size, device)
        for model in size["throughput"]:
            fp32 = result["throughput"][f"{model}/fp32"]["images_per_s"]
            bf16 = result["throughput"][f"{model}/bf16+channels_last"]["images_per_s"]
            result.setdefault("bf16_speedup", {})[model] = bf16 / fp32
            print(f"  {model}: bf16 + channels_last / fp32 = x{bf16 / fp32:.2f}")
        save_partial()
    solo = result.get("throughput", {}).get("simple/fp32", {}).get("images_per_s")
    trial = sized_trial(size["trial"], solo, size["solo_train_s"])
    result["trial_config"] = trial
    print(f"concurrent trials on one device (`python -m countnet train` each, {trial}):")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir) if args.work_dir else Path(tmp)
        result["concurrency"] = conc = concurrency(trial, device, levels, sys.executable, work,
                                                   on_level=save_partial)
    base = conc["1"]["aggregate_images_per_s"]
    for row in conc.values():
        row["aggregate_vs_1"] = row["aggregate_images_per_s"] / base
        row["per_trial_share_of_solo"] = [r / base for r in row["per_trial_images_per_s"]]
    top = str(max(levels))
    ratio = conc[top]["aggregate_vs_1"]
    print("  aggregate vs 1 trial: " + ", ".join(
        f"{n}: x{row['aggregate_vs_1']:.2f}" for n, row in conc.items()))
    met = top == "4" and ratio >= GOAL_RATIO and device == "cuda"
    path = write_result(name, ratio, GOAL, met, {**result, "partial": False},
                        quick=args.cpu_check, out_dir=args.out_dir)
    headline(name, ratio, GOAL + ("" if device == "cuda" else " (CPU check: not a GPU figure)"),
             met, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
