"""Bench: the vectorised scene generator vs drawing the same scenes one by one with PIL.

    python bench/data.py [--quick | --tiny] [--device cpu|cuda] [--threads N] [--out-dir DIR]

Scenes: the default TrainConfig (free layout, 0-20 objects, appearance drawn per image: contrast,
background, ramp, blur, noise, inversion).

1. Same scenes. `countnet.scenes.describe` gives each scene's boxes and look; the per-image side
   draws them as a Dataset's __getitem__ would: PIL `ImageDraw.rectangle` on a float ("F")
   image, then numpy for the rest of `render`'s recipe: the same row-normalised separable Gaussian
   blur (written here as a zero-padded 1-D convolution divided by the kernel mass inside the
   image, not as render's banded matrix), the background level, the linear ramp, the same window
   of the same noise bank, inversion and clipping. A collate (`torch.stack`) makes the batch.
   max |PIL - generator| is printed at the defaults (blur included) and, as a cross-check,
   without blur, with distractor frames and with 3 channels. Both sides compute the same sums in
   float32 / float64, so the difference is rounding only (~1e-7); blur does not prevent equality.
2. Speed. Generator images/s (`render` in chunks of RENDER_CHUNK, as `synthetic_split` calls it;
   1 thread and torch's default) vs the PIL side's images/s. The PIL side gets each scene's
   boxes and look from `describe` beforehand, untimed (a per-image Dataset would have to sample
   its own layout too), so the speed-up is a lower bound. Reported, no goal.
3. Share of an epoch: rendering the training split vs one epoch of `countnet.train.fit` on the
   default config (epochs=1; training + evaluation, same device and threads). Data are rendered
   once per process and reused by every epoch, so the share of a whole run is smaller still (also
   printed).

Goal (issue 9): generation < 3 % of an epoch, and the PIL side draws the same scenes
(max |difference| < 1e-4).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

# isort: off
from countnet.runtime import omp_env

# Before torch loads (OpenMP reads it once), as the `countnet` command does: countnet.runtime.
os.environ.update(omp_env())
# isort: on
import numpy as np
import torch
from PIL import Image, ImageDraw

from countnet import scenes
from countnet.config import TrainConfig
from countnet.datasets import RENDER_CHUNK, clear_cache, load_splits, synthetic_split
from countnet.precision import resolve
from countnet.scenes import describe, render
from countnet.train import fit, pick_device, set_threads

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper `report`, when imported
from report import headline, machine, write_result

NAME = "data"
GOAL_SHARE = 0.03  # of one epoch's time (training + evaluation)
GOAL_DIFF = 1e-4  # max |PIL image - generator image|: the same scenes up to float rounding
GOAL = ("generator < 3 % of one epoch of the default config, and PIL one-by-one drawing of the "
        "same scenes agrees to < 1e-4 (the speed-up vs PIL is reported, no goal)")
SEED = 12345
CHECK_N = 64  # scenes per sameness check
# Variants checked for sameness besides the defaults: blur off, distractor frames, RGB.
CHECKS = {"defaults": {}, "no_blur": {"blur_max": 0.0}, "distractors": {"distractors": 3},
          "rgb": {"channels": 3}}
# Images per render call: the sweep behind the chunk figure (RENDER_CHUNK is what load_splits uses).
CHUNKS = tuple(sorted({256, 1024, 4096, RENDER_CHUNK}))
# size -> (PIL images, generator images per timing, repeats, epoch config overrides)
SIZES = {
    "full": (3000, 12000, 3, {}),  # the default TrainConfig: 12000 train images
    "quick": (1000, 4096, 2, {"train_size": 2000, "val_size": 500, "train_eval_size": 500}),
    "tiny": (64, 256, 1, {"train_size": 256, "val_size": 64, "train_eval_size": 64,
                          "width": 8, "depth": 3}),
}


class Drawn:
    """The per-image side's input: `describe` and the noise draws of a batch, as numpy arrays."""

    def __init__(self, cfg: TrainConfig, seed: int, indices: torch.Tensor) -> None:
        sc = describe(cfg, seed, indices)
        self.top_left, self.bottom_right = sc.top_left.numpy(), sc.bottom_right.numpy()
        self.tone = sc.tone.numpy().astype(np.float64)  # (B, C, M)
        self.background = sc.background.numpy().astype(np.float64)
        self.ramp_rise, self.ramp_angle = sc.ramp_rise.numpy(), sc.ramp_angle.numpy()
        self.blur_sigma, self.noise_std = sc.blur_sigma.numpy(), sc.noise_std.numpy()
        self.invert, self.count = sc.invert.numpy(), sc.count.numpy()
        # Which noise window each image and channel takes: the same hashed stream as render's.
        c, s = cfg.channels, cfg.image_size
        u = scenes.uniform(seed, indices, scenes.STREAM_NOISE, 3 * c).view(-1, 3, c)
        self.tile = (u[:, 0] * scenes.NOISE_TILES).long().clamp_max(scenes.NOISE_TILES - 1).numpy()
        self.shift = (u[:, 1:] * s).long().clamp_max(s - 1).numpy()  # (B, 2, C): dy, dx

    def __len__(self) -> int:
        return len(self.count)


def noise_bank(size: int) -> np.ndarray:
    """(NOISE_TILES, size, size): the Gaussian tiles `render` takes its noise windows from."""
    gen = torch.Generator().manual_seed(scenes.NOISE_BANK_SEED)
    return torch.randn(scenes.NOISE_TILES, size, size, generator=gen).numpy().astype(np.float64)


def blur(img: np.ndarray, sigma: float, radius: int) -> np.ndarray:
    """Separable Gaussian blur of (s, s) img, the kernel renormalised to its mass in the image.

    A zero-padded convolution divided by the same convolution of ones: at the border only the
    taps inside the image count, and their weights sum to 1 (render's row-normalised matrix).
    """
    taps = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (taps / max(float(sigma), 1e-3)) ** 2)  # same floor as render

    def along(a: np.ndarray, axis: int) -> np.ndarray:
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(a, pad)
        n = a.shape[axis]
        return sum(k * np.take(padded, range(t, t + n), axis=axis) for t, k in enumerate(kernel))

    s = img.shape[0]
    mass = along(np.ones((s, 1)), 0)  # (s, 1): kernel weight inside the image, per row
    out = along(img, 0) / mass
    return along(out, 1) / mass.T


def draw_one(cfg: TrainConfig, d: Drawn, i: int, bank: np.ndarray,
             ramp_pos: np.ndarray) -> np.ndarray:
    """Scene i as (C, s, s) float32: what a Dataset's __getitem__ would return."""
    s, c = cfg.image_size, cfg.channels
    radius = math.ceil(scenes.BLUR_RADIUS_SIGMAS * cfg.blur_max)
    angle = float(d.ramp_angle[i])
    cos, sin = math.cos(angle), math.sin(angle)
    ramp = (float(d.ramp_rise[i]) / (abs(cos) + abs(sin))
            * (cos * ramp_pos[None, :] + sin * ramp_pos[:, None]))  # (s, s): rows y, cols x
    planes = []
    for ch in range(c):
        im = Image.new("F", (s, s), 0.0)
        draw = ImageDraw.Draw(im)
        tone = d.tone[i, ch]
        # Objects and frames never overlap, and a frame's hole (negative tone) lies inside its
        # frame, so: fill every lit box, then cut the holes back to 0.
        for j in (*np.flatnonzero(tone > 0), *np.flatnonzero(tone < 0)):
            (y0, x0), (y1, x1) = d.top_left[i, :, j], d.bottom_right[i, :, j]
            # PIL boxes are inclusive: [left, top, right - 1, bottom - 1].
            draw.rectangle((int(x0), int(y0), int(x1) - 1, int(y1) - 1),
                           fill=float(tone[j]) if tone[j] > 0 else 0.0)
        layer = np.asarray(im, dtype=np.float64)
        if cfg.blur_max > 0:
            layer = blur(layer, float(d.blur_sigma[i]), radius)
        noise = np.roll(bank[d.tile[i, ch]], (-int(d.shift[i, 0, ch]), -int(d.shift[i, 1, ch])),
                        (0, 1))
        x = layer + d.background[i] + ramp + float(d.noise_std[i]) * noise
        if d.invert[i]:
            x = 1.0 - x
        planes.append(np.clip(x, 0.0, 1.0))
    return np.stack(planes).astype(np.float32)


def draw_pil(cfg: TrainConfig, d: Drawn) -> tuple[torch.Tensor, torch.Tensor]:
    """Every scene of d drawn on its own, then collated: (B, C, H, W) float32, counts (B,)."""
    bank = noise_bank(cfg.image_size)
    ramp_pos = np.linspace(-0.5, 0.5, cfg.image_size)
    items = [(torch.from_numpy(draw_one(cfg, d, i, bank, ramp_pos)), float(d.count[i]))
             for i in range(len(d))]
    return (torch.stack([x for x, _ in items]),
            torch.tensor([y for _, y in items], dtype=torch.float32))


def check_same(cfg: TrainConfig, n: int = CHECK_N) -> dict[str, float]:
    """Max |PIL image - generator image| over n scenes per CHECKS variant; raises on a mismatch."""
    idx = torch.arange(n)
    diffs = {}
    for name, changes in CHECKS.items():
        c = cfg.replace(**changes)
        x_gen, y_gen = render(c, SEED, idx)
        x_pil, y_pil = draw_pil(c, Drawn(c, SEED, idx))
        diffs[name] = (x_gen - x_pil).abs().max().item()
        if not torch.equal(y_gen, y_pil) or diffs[name] >= GOAL_DIFF:
            raise SystemExit(f"bench/data.py: PIL and generator scenes differ ({name}: max "
                             f"{diffs[name]:.3g}); the drawing here no longer follows "
                             "countnet.scenes.render")
    return diffs


def render_chunks(cfg: TrainConfig, seed: int, n: int, chunk: int, device: str) -> None:
    """Render scenes 0..n-1 in calls of `chunk` images, as `synthetic_split` does."""
    for start in range(0, n, chunk):
        render(cfg, seed, torch.arange(start, min(n, start + chunk), device=device), device)
    sync(device)


def sync(device: str) -> None:
    """Wait for queued GPU work, so that wall time covers it."""
    if device == "cuda":
        torch.cuda.synchronize()


def images_per_s(fn: Callable[[], object], n: int) -> float:
    t0 = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="sized to finish in < 2 min on 2 cores")
    p.add_argument("--tiny", action="store_true", help="seconds; for the smoke test")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="where the generator and the epoch run (PIL always draws on the CPU)")
    p.add_argument("--out-dir", help="write the JSON here instead of bench/results")
    args = p.parse_args(argv)
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("bench/data.py: --device cuda but no CUDA device here", file=sys.stderr)
        return 2
    n_pil, n_gen, repeats, epoch_overrides = SIZES[size]
    set_threads(args.threads)
    cfg = TrainConfig()  # the scenes of the default config
    info = machine()
    print(f"CPU {info['cpu']}, {info['cores']} cores, load average {info.get('load_avg_1m')}; "
          f"torch {info['torch']}, {torch.get_num_threads()} threads; size {size}")
    print(f"scenes {cfg.image_size}x{cfg.image_size}, layout {cfg.layout}, "
          f"{cfg.min_count}-{cfg.max_count} objects, blur <= {cfg.blur_max} px, noise <= "
          f"{cfg.noise_max}, invert {cfg.invert_prob}; generator on {device}")
    diffs = check_same(cfg)  # also warms up both sides (noise bank, PIL, allocator)
    max_diff = diffs["defaults"]
    print("same scenes, max |PIL - generator| over "
          f"{CHECK_N}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))

    # Interleave the two sides in each repeat: load from other processes hits both alike.
    # The generator runs as `load_splits` runs it (chunks of RENDER_CHUNK) with 1 thread (a Ray
    # trial with cpu: 1) and torch's default threads (`countnet train`), plus other chunks.
    default_threads = torch.get_num_threads()
    thread_counts = sorted({1, default_threads}) if device == "cpu" else [default_threads]
    chunks = [ch for ch in CHUNKS if ch <= n_gen] or [n_gen]
    gen_rates: dict[str, list[float]] = {f"t{t}_c{ch}": [] for t in thread_counts for ch in chunks}
    pil_rates, describe_rates = [], []
    for r in range(repeats):
        idx = torch.arange(n_pil)
        t0 = time.perf_counter()
        drawn = Drawn(cfg, SEED + r, idx)  # untimed for the PIL side; timed here for the record
        describe_rates.append(n_pil / (time.perf_counter() - t0))
        pil_rates.append(images_per_s(lambda d=drawn: draw_pil(cfg, d), n_pil))
        for t in thread_counts:
            torch.set_num_threads(t)
            for ch in chunks:
                gen_rates[f"t{t}_c{ch}"].append(images_per_s(
                    lambda ch=ch, r=r: render_chunks(cfg, SEED + r, n_gen, ch, device), n_gen))
        torch.set_num_threads(default_threads)
        print(f"  repeat {r + 1}: PIL one by one {pil_rates[-1]:,.0f} img/s (describe, untimed "
              f"there: {describe_rates[-1]:,.0f} img/s); generator (threads, chunk) "
              + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in gen_rates.items()))
    head_chunk = RENDER_CHUNK if RENDER_CHUNK in chunks else chunks[-1]
    head_key = f"t{default_threads}_c{head_chunk}"  # as `countnet train` renders
    speedups = [g / q for g, q in zip(gen_rates[head_key], pil_rates, strict=True)]
    speedup = statistics.median(speedups)
    medians = {k: statistics.median(v) for k, v in gen_rates.items()}
    best_key = max(medians, key=medians.__getitem__)

    # Share of an epoch: render the training split vs train one epoch on it (same threads).
    ecfg = TrainConfig().replace(epochs=1, device=device, **epoch_overrides)
    clear_cache()
    t0 = time.perf_counter()
    synthetic_split(ecfg, ecfg.data_seed, "train", ecfg.train_size, device)
    sync(device)
    render_train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    splits = load_splits(ecfg, device)  # train + val, as fit gets them (cached per process)
    sync(device)
    render_splits_s = time.perf_counter() - t0
    precision = resolve(ecfg.precision, pick_device(ecfg))
    epoch = fit(ecfg, splits=splits).history[0]
    train_s = ecfg.train_size / epoch["images_per_s"]  # the epoch's training part alone
    share = render_train_s / epoch["epoch_time_s"]
    run_share = render_splits_s / (TrainConfig().epochs * epoch["epoch_time_s"])
    print(f"render train split ({ecfg.train_size} img): {render_train_s * 1e3:.0f} ms; one epoch "
          f"of {ecfg.model} (width {ecfg.width}, depth {ecfg.depth}, {precision}"
          f"{' + channels_last' if ecfg.channels_last else ''}): {epoch['epoch_time_s']:.2f} s "
          f"(training {train_s:.2f} s) -> {share:.2%} of the epoch, "
          f"{render_train_s / train_s:.2%} of its training part")
    print(f"rendered once per process: train+val {render_splits_s * 1e3:.0f} ms = "
          f"{run_share:.2%} of a {TrainConfig().epochs}-epoch run")
    print(f"generator ({head_key}) {medians[head_key]:,.0f} img/s vs PIL "
          f"{statistics.median(pil_rates):,.0f} img/s: x{speedup:.1f} (median of {repeats}; "
          f"min x{min(speedups):.1f}, max x{max(speedups):.1f}; a lower bound: PIL's layout was "
          "not timed)")
    print(f"fastest generator setting {best_key}: {medians[best_key]:,.0f} img/s = "
          f"x{medians[best_key] / statistics.median(pil_rates):.1f} PIL")

    met = share < GOAL_SHARE and max_diff < GOAL_DIFF
    # Tiny (smoke) runs and GPU runs never overwrite the CPU figures.
    name = NAME + ("" if device == "cpu" else f"-{device}") + ("-tiny" if args.tiny else "")
    path = write_result(name, share, GOAL, met, {
        "share_of_epoch": share, "share_of_training": render_train_s / train_s,
        "max_abs_diff": max_diff, "max_abs_diff_by_check": diffs, "check_images": CHECK_N,
        "speedup": speedup, "speedups": speedups,
        "generator_images_per_s": gen_rates, "generator_median": medians,
        "headline_setting": head_key, "fastest_setting": best_key,
        "pil_images_per_s": pil_rates, "describe_images_per_s": describe_rates,
        "generator_batch": n_gen, "pil_images": n_pil,
        "render_train_split_s": render_train_s, "render_train_val_s": render_splits_s,
        "epoch_time_s": epoch["epoch_time_s"], "epoch_train_s": train_s,
        "train_images_per_s": epoch["images_per_s"], "precision": precision,
        "share_of_run": run_share, "run_epochs": TrainConfig().epochs,
        "epoch_config": ecfg.to_dict(), "size": size, "device": device,
    }, quick=args.quick or args.tiny, out_dir=args.out_dir)
    headline(name, share, GOAL, met, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
