"""Bench: the training loop's own cost, `countnet.train.fit` vs a bare loop over the same batches.

    python bench/loop.py [--quick | --tiny] [--epochs N] [--device cpu|cuda] [--out-dir DIR]

Config: the default TrainConfig with a short `epochs` (--quick and --tiny shrink the data, keeping
the default's train : val proportion). Per epoch, two figures:
- training images/s: `fit`'s own `images_per_s` (its training pass only) vs a bare loop of
  forward, loss, backward and optimiser step, nothing else, over the very same batches (the
  permutation of `train.epoch_seed`, the same augmentation), in the same precision and memory
  layout as `fit` resolves (`precision.resolve`, `channels_last`), with a model and optimiser of
  its own built the same way. A second bare variant adds gradient clipping and the scheduler step
  (what the default config adds), so the gap can be split into the config's choices and the
  loop's bookkeeping;
- evaluation share: the part of `fit`'s `epoch_time_s` that is not training (train_loss_eval on
  the fixed training subset + val), over `epoch_time_s`.
The bare epochs run inside fit's on_epoch_end, right after the fit epoch they mirror, so both
sides share the same load from other processes. The first epoch (warm-up) is left out when there
are two or more.

Goal: fit's training images/s >= 0.85 of the bare loop's, and evaluation <= 10 % of an epoch.
"""

from __future__ import annotations

import argparse
import math
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
import torch
import torch.nn as nn

from countnet.augment import augment_batch
from countnet.config import TrainConfig
from countnet.datasets import Splits, load_splits
from countnet.models import model_from_config, set_train_mode
from countnet.precision import autocast, resolve
from countnet.train import (
    build_optimizer,
    build_scheduler,
    epoch_seed,
    fit,
    loss_function,
    pick_device,
    set_threads,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper `report`, when imported
from report import headline, machine, write_result

NAME = "loop"
GOAL_RATIO = 0.85
GOAL_EVAL_SHARE = 0.10
GOAL = ("fit training images/s >= 0.85 of a bare forward/backward/step loop, evaluation <= 10 % "
        "of an epoch")
# size -> config overrides (full: the default config, a short run)
SIZES: dict[str, dict[str, Any]] = {
    "full": {"epochs": 3},
    "quick": {"epochs": 3, "train_size": 3000, "val_size": 500, "train_eval_size": 500},
    "tiny": {"epochs": 2, "train_size": 256, "val_size": 64, "train_eval_size": 64,
             "width": 8, "depth": 3},
}


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


class Bare:
    """A model trained by the bare loop: built, laid out and optimised as fit builds its own."""

    def __init__(self, cfg: TrainConfig, splits: Splits, device: torch.device,
                 extras: bool) -> None:
        self.cfg, self.splits, self.device, self.extras = cfg, splits, device, extras
        self.precision = resolve(cfg.precision, device)
        torch.manual_seed(cfg.seed)
        self.model = model_from_config(cfg).to(device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = build_optimizer(self.model, cfg)
        self.steps = math.ceil(len(splits.train_x) / cfg.batch_size)
        self.sched = build_scheduler(self.opt, cfg, self.steps)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.crit = loss_function(cfg)

    def epoch(self, epoch: int) -> float:
        """Train epoch `epoch` (0-based, as fit numbers its seeds) on fit's batches; images/s."""
        cfg, x, y = self.cfg, self.splits.train_x, self.splits.train_y
        seed = epoch_seed(cfg.seed, epoch)
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)  # fit's shuffle and augmentation stream
        perm = torch.randperm(len(x), generator=gen).to(self.device)
        set_train_mode(self.model, cfg)
        sync(self.device)
        t0 = time.perf_counter()
        for step in range(self.steps):
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            xb = augment_batch(x[idx], cfg.augment, gen)
            if cfg.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(self.precision, self.device):
                pred = self.model(xb)
            loss = self.crit(pred.float(), y[idx])
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.extras and cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(self.params, cfg.grad_clip, foreach=True)
            self.opt.step()
            if self.extras:
                self.sched.step()
        sync(self.device)
        return len(x) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="sized to finish in < 2 min on 2 cores")
    p.add_argument("--tiny", action="store_true", help="seconds; for the smoke test")
    p.add_argument("--epochs", type=int, help="epochs (default by size)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--out-dir", help="write the JSON here instead of bench/results")
    args = p.parse_args(argv)
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/loop.py: --device cuda but no CUDA device here", file=sys.stderr)
        return 2
    overrides = dict(SIZES[size])
    if args.epochs:
        overrides["epochs"] = args.epochs
    cfg = TrainConfig(device=args.device, threads=args.threads).replace(**overrides)
    set_threads(cfg.threads)
    device = pick_device(cfg)
    precision = resolve(cfg.precision, device)
    info = machine()
    print(f"CPU {info['cpu']}, {info['cores']} cores, load average {info.get('load_avg_1m')}; "
          f"torch {info['torch']}, {torch.get_num_threads()} threads; size {size}")
    print(f"{cfg.model} (width {cfg.width}, depth {cfg.depth}), {precision}"
          f"{' + channels_last' if cfg.channels_last else ''}, {cfg.train_size} train / "
          f"{cfg.val_size} val / {min(cfg.train_eval_size, cfg.val_size, cfg.train_size)} "
          f"train_eval images, batch {cfg.batch_size}, {cfg.epochs} epochs", flush=True)

    splits = load_splits(cfg, device)  # rendered once, shared by fit and the bare loops
    bare = Bare(cfg, splits, device, extras=False)
    bare_extras = Bare(cfg, splits, device, extras=True)
    rows: list[dict[str, float]] = []

    def on_epoch_end(metrics: dict[str, float], save: Any) -> None:
        e = int(metrics["epoch"]) - 1  # fit's epoch seed of the epoch just trained
        train_s = cfg.train_size / metrics["images_per_s"]
        row = {"epoch": metrics["epoch"], "fit_images_per_s": metrics["images_per_s"],
               "bare_images_per_s": bare.epoch(e),
               "bare_clip_sched_images_per_s": bare_extras.epoch(e),
               "epoch_time_s": metrics["epoch_time_s"], "train_s": train_s,
               "eval_s": metrics["epoch_time_s"] - train_s}
        row["ratio"] = row["fit_images_per_s"] / row["bare_images_per_s"]
        row["eval_share"] = row["eval_s"] / row["epoch_time_s"]
        rows.append(row)
        print(f"  epoch {row['epoch']}: fit {row['fit_images_per_s']:,.0f} img/s, bare "
              f"{row['bare_images_per_s']:,.0f} (+ clip + scheduler "
              f"{row['bare_clip_sched_images_per_s']:,.0f}) -> x{row['ratio']:.3f}; epoch "
              f"{row['epoch_time_s']:.2f} s, evaluation {row['eval_s']:.2f} s = "
              f"{row['eval_share']:.1%}", flush=True)

    fit(cfg, on_epoch_end, splits=splits)
    used = rows[1:] if len(rows) > 1 else rows  # epoch 1 carries the warm-up
    ratio = statistics.median(r["ratio"] for r in used)
    eval_share = statistics.median(r["eval_share"] for r in used)
    extras_ratio = statistics.median(r["fit_images_per_s"] / r["bare_clip_sched_images_per_s"]
                                     for r in used)
    print(f"fit / bare training images/s: x{ratio:.3f} (median of {len(used)} epoch(s); vs bare "
          f"+ clip + scheduler x{extras_ratio:.3f}); evaluation {eval_share:.1%} of an epoch")
    met = ratio >= GOAL_RATIO and eval_share <= GOAL_EVAL_SHARE

    name = NAME + ("" if device.type == "cpu" else f"-{device.type}") + (
        "-tiny" if args.tiny else "")
    path = write_result(name, ratio, GOAL, met, {
        "eval_share": eval_share, "ratio_vs_bare_clip_sched": extras_ratio,
        "epochs": rows, "epochs_used": [r["epoch"] for r in used], "precision": precision,
        "channels_last": cfg.channels_last, "config": cfg.to_dict(), "size": size,
        "device": str(device),
    }, quick=args.quick or args.tiny, out_dir=args.out_dir)
    headline(name, ratio, GOAL, met, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
