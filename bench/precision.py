"""Bench: fp32 vs bf16 autocast vs bf16 + channels_last for the default model, on this machine.

    python bench/precision.py [--quick | --tiny] [--device cpu|cuda] [--out-dir DIR]

For each mode (fp32, fp32 + channels_last, bf16, bf16 + channels_last), on the default
TrainConfig's model (`simple`, width 32, depth 5; --tiny shrinks it):
- training images/s: a bare loop of forward (under autocast), MSE loss in fp32, backward and an
  AdamW step, over random batches of `batch_size` images (a fixed pool of batches, made before
  timing; converted to channels_last inside the loop, as `fit` does);
- evaluation images/s: `inference_mode` forward passes in eval mode at `eval_batch_size`.
The modes take turns within each repeat (warm-up steps first), so load from other processes hits
them alike; the median over repeats is reported. Also printed: the CPU, its bf16 flags,
`torch.ops.mkldnn._is_mkldnn_bf16_supported()` and what `precision: auto` resolves to here.

Goal: the mode the default config runs in (`precision: auto` as resolved here, with the default
`channels_last`) trains within 5 % of the fastest mode measured (ratio: its images/s over the
fastest's). It says whether `auto` picks right on this machine.
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
import torch
import torch.nn as nn

from countnet.config import TrainConfig
from countnet.models import model_from_config
from countnet.precision import autocast, cpu_has_native_bf16, resolve
from countnet.train import pick_device, set_threads

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper `report`, when imported
from report import headline, machine, write_result

NAME = "precision"
GOAL_RATIO = 0.95
GOAL = ("the default config's mode (precision auto as resolved here + channels_last) trains "
        ">= 0.95 of the fastest of fp32 / fp32+cl / bf16 / bf16+cl")
# mode -> (precision, channels_last)
MODES = {"fp32": ("fp32", False), "fp32+channels_last": ("fp32", True),
         "bf16": ("bf16", False), "bf16+channels_last": ("bf16", True)}
POOL = 8  # distinct random batches, cycled
CPU_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile", "avx512f")
# size -> (config overrides, warm-up steps, timed training steps, timed eval batches, repeats)
SIZES: dict[str, tuple[dict[str, Any], int, int, int, int]] = {
    "full": ({}, 10, 60, 8, 3),
    "quick": ({}, 5, 25, 4, 2),
    "tiny": ({"width": 8, "depth": 3, "eval_batch_size": 64}, 1, 3, 2, 1),
}


def cpu_flags() -> list[str]:
    """The bf16-related flags /proc/cpuinfo lists for this CPU."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    return [f for f in CPU_FLAGS if f in flags]


def mkldnn_bf16() -> bool | None:
    """torch.ops.mkldnn._is_mkldnn_bf16_supported(), or None where the build lacks it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that wall time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize()


class Mode:
    """One mode's model, optimiser and inputs; times training steps and evaluation batches."""

    def __init__(self, cfg: TrainConfig, precision: str, channels_last: bool,
                 device: torch.device) -> None:
        self.cfg, self.precision, self.device = cfg, precision, device
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        torch.manual_seed(cfg.seed)  # every mode starts from the same weights and batches
        self.model = model_from_config(cfg).to(device, memory_format=self.layout)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)  # small: never diverges
        self.crit = nn.MSELoss()
        shape = (cfg.batch_size, cfg.channels, cfg.image_size, cfg.image_size)
        self.xs = [torch.rand(shape, device=device) for _ in range(POOL)]
        self.ys = [torch.randint(cfg.min_count, cfg.max_count + 1, (cfg.batch_size,),
                                 device=device).float() for _ in range(POOL)]
        self.eval_x = torch.rand((cfg.eval_batch_size, *shape[1:]),
                                 device=device).contiguous(memory_format=self.layout)

    def train_steps(self, steps: int) -> float:
        """Images/s of `steps` forward + backward + AdamW steps."""
        self.model.train()
        sync(self.device)
        t0 = time.perf_counter()
        for i in range(steps):
            xb = self.xs[i % POOL].contiguous(memory_format=self.layout)
            with autocast(self.precision, self.device):
                pred = self.model(xb)  # (b,)
            loss = self.crit(pred.float(), self.ys[i % POOL])  # the loss in fp32, as fit does
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        sync(self.device)
        return steps * self.cfg.batch_size / (time.perf_counter() - t0)

    @torch.inference_mode()
    def eval_batches(self, batches: int) -> float:
        """Images/s of `batches` eval-mode forward passes of eval_batch_size images."""
        self.model.eval()
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(batches):
            with autocast(self.precision, self.device):
                self.model(self.eval_x).float()
        sync(self.device)
        return batches * len(self.eval_x) / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="sized to finish in < 2 min on 2 cores")
    p.add_argument("--tiny", action="store_true", help="seconds; for the smoke test")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--out-dir", help="write the JSON here instead of bench/results")
    args = p.parse_args(argv)
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/precision.py: --device cuda but no CUDA device here", file=sys.stderr)
        return 2
    overrides, warmup, steps, eval_batches, repeats = SIZES[size]
    set_threads(args.threads)
    cfg = TrainConfig(device=args.device).replace(**overrides)
    device = pick_device(cfg)
    auto = resolve("auto", device)
    default_mode = f"{resolve(cfg.precision, device)}{'+channels_last' * cfg.channels_last}"
    info = machine()
    flags = cpu_flags()
    bf16_ok = mkldnn_bf16()
    print(f"CPU {info['cpu']}, {info['cores']} cores, load average {info.get('load_avg_1m')}; "
          f"torch {info['torch']}, {torch.get_num_threads()} threads; device {device}; size {size}")
    print(f"CPU bf16 flags: {', '.join(flags) or 'none'}; "
          f"torch.ops.mkldnn._is_mkldnn_bf16_supported() = {bf16_ok}; "
          f"precision auto -> {auto}; the default config runs {default_mode}")
    print(f"model {cfg.model} (width {cfg.width}, depth {cfg.depth}), {cfg.image_size}x"
          f"{cfg.image_size}x{cfg.channels}; training batch {cfg.batch_size} x {steps} steps, "
          f"evaluation batch {cfg.eval_batch_size} x {eval_batches}; {repeats} repeat(s)",
          flush=True)

    modes = {name: Mode(cfg, prec, cl, device) for name, (prec, cl) in MODES.items()}
    for m in modes.values():  # warm-up: oneDNN picks its kernels on the first calls
        m.train_steps(warmup)
        m.eval_batches(1)
    train: dict[str, list[float]] = {name: [] for name in modes}
    evals: dict[str, list[float]] = {name: [] for name in modes}
    for r in range(repeats):
        for name, m in modes.items():
            train[name].append(m.train_steps(steps))
            evals[name].append(m.eval_batches(eval_batches))
        print(f"  repeat {r + 1}: " + "; ".join(
            f"{n} train {train[n][-1]:,.0f} eval {evals[n][-1]:,.0f}" for n in modes), flush=True)
    train_med = {n: statistics.median(v) for n, v in train.items()}
    eval_med = {n: statistics.median(v) for n, v in evals.items()}
    print(f"{'mode':20s} {'train img/s':>12s} {'x fp32':>7s} {'eval img/s':>11s} {'x fp32':>7s}")
    for n in modes:
        print(f"{n:20s} {train_med[n]:12,.0f} {train_med[n] / train_med['fp32']:7.2f} "
              f"{eval_med[n]:11,.0f} {eval_med[n] / eval_med['fp32']:7.2f}")
    fastest = max(train_med, key=train_med.__getitem__)
    ratio = train_med[default_mode] / train_med[fastest]
    print(f"fastest training mode: {fastest}; the default config's mode {default_mode} trains at "
          f"{ratio:.3f} of it")
    met = ratio >= GOAL_RATIO

    name = NAME + ("" if device.type == "cpu" else f"-{device.type}") + (
        "-tiny" if args.tiny else "")
    path = write_result(name, ratio, GOAL, met, {
        "train_images_per_s": train_med, "eval_images_per_s": eval_med,
        "train_images_per_s_repeats": train, "eval_images_per_s_repeats": evals,
        "speedup_vs_fp32": {n: train_med[n] / train_med["fp32"] for n in modes},
        "eval_speedup_vs_fp32": {n: eval_med[n] / eval_med["fp32"] for n in modes},
        "fastest_train_mode": fastest, "default_mode": default_mode, "auto_resolves_to": auto,
        "mkldnn_bf16_supported": bf16_ok, "cpu_has_native_bf16": cpu_has_native_bf16(),
        "cpu_flags": flags, "steps": steps, "warmup_steps": warmup, "eval_batches": eval_batches,
        "repeats": repeats, "config": cfg.to_dict(), "size": size, "device": str(device),
    }, quick=args.quick or args.tiny, out_dir=args.out_dir)
    headline(name, ratio, GOAL, met, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
