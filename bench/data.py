"""Bench: the vectorised scene generator vs drawing the same scenes one by one with PIL.

    python bench/data.py [--quick] [--n N] [--repeats R]

Both sides produce the same images (checked: max |difference| is printed): the rectangles, sizes,
tones, background and noise of `countnet.scenes.render`. The per-image side draws each rectangle
with `PIL.ImageDraw` on a float ("F") image, adds the background and the same noise tile with
numpy, and stacks the images into one tensor, as a Dataset's __getitem__ + collate would. Its
random layout (counts, cells, sizes, positions, tones) is computed beforehand, vectorised and
untimed, so the PIL side is timed on drawing alone: the speed-up is a lower bound.

Also measured: rendering one epoch's training split as a share of that epoch's training time
(`countnet.train.fit`, same config, same threads). Data are rendered once per process and
reused by every epoch, so the share of a whole run is smaller still (also printed).

Goal: >= 10x the images/s of PIL, and < 3 % of an epoch.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

# isort: off
# countnet before torch, so that its OMP_WAIT_POLICY default applies, as in the `countnet` command.
import countnet  # noqa: F401
# isort: on
import numpy as np
import torch
from PIL import Image, ImageDraw

from countnet import scenes
from countnet.config import TrainConfig
from countnet.datasets import RENDER_CHUNK, clear_cache, load_splits, synthetic_split
from countnet.scenes import SceneSpec, render, uniform
from countnet.train import fit, set_threads

NAME = "data"
GOAL_SPEEDUP = 10.0  # x PIL's images/s
GOAL_SHARE = 0.03  # of one epoch's time
GOAL = ">= 10x the images/s of PIL one-by-one drawing, and generator < 3 % of an epoch"
SEED = 12345
# Images per render call: the sweep behind the chunk figure (RENDER_CHUNK is what load_splits uses).
CHUNKS = tuple(sorted({256, 1024, 4096, RENDER_CHUNK}))
# size -> (PIL images, generator images per timing, repeats, epoch config overrides)
SIZES = {
    "full": (4000, 16384, 5, {}),  # the default TrainConfig: 12000 train images
    "quick": (1500, 4096, 3, {"train_size": 2000, "val_size": 500, "train_eval_size": 500}),
    "tiny": (64, 256, 1, {"train_size": 256, "val_size": 64, "train_eval_size": 64,
                          "width": 8, "depth": 3}),
}

def layout(spec: SceneSpec, seed: int, indices: torch.Tensor) -> dict[str, np.ndarray]:
    """The random parameters `render` draws for each scene, as numpy arrays.

    Mirrors the first half of `countnet.scenes.render` with the same hashed streams, so PIL
    draws the same rectangles; `check_same` below fails loudly if the two ever drift apart.
    """
    idx = indices.to(torch.int64)
    b, s, c, g = idx.shape[0], spec.image_size, spec.channels, spec.grid
    cells, cell = g * g, spec.cell
    span = spec.max_count - spec.min_count + 1
    count = spec.min_count + (uniform(seed, idx, scenes.STREAM_COUNT, 1)[:, 0] * span).long(
    ).clamp_max(span - 1)  # (B,)
    n_distract = (uniform(seed, idx, scenes.STREAM_DISTRACT, 1)[:, 0]
                  * (spec.distractors + 1)).long()
    n_distract = torch.minimum(n_distract.clamp_max(spec.distractors), cells - count)
    rank = uniform(seed, idx, scenes.STREAM_CELLS, cells).argsort(dim=1).argsort(dim=1)
    is_obj = rank < count[:, None]  # (B, cells)
    is_frame = (rank >= count[:, None]) & (rank < (count + n_distract)[:, None])
    u_size = uniform(seed, idx, scenes.STREAM_SIZE, 2 * cells).view(b, 2, cells)
    lo = torch.where(is_frame, max(scenes.MIN_FRAME, spec.min_object_size), spec.min_object_size)
    hi = torch.maximum(torch.full_like(lo, spec.max_object_size), lo)
    size = lo[:, None] + (u_size * (hi - lo + 1)[:, None]).long().clamp_max((hi - lo)[:, None])
    slack = cell - 2 - size
    u_pos = uniform(seed, idx, scenes.STREAM_POS, 2 * cells).view(b, 2, cells)
    offset = 1 + (u_pos * (slack + 1)).long().clamp_max(slack)
    ids = torch.arange(cells)
    top_left = torch.stack([ids // g, ids % g])[None] * cell + offset  # (B, 2, cells)
    tone = scenes.OBJECT_TONE * (1 + spec.jitter * (
        2 * uniform(seed, idx, scenes.STREAM_TONE, c * cells) - 1)).view(b, c, cells)
    background = scenes.BACKGROUND * (1 + spec.jitter * (
        2 * uniform(seed, idx, scenes.STREAM_BACKGROUND, c) - 1))  # (B, C)
    u_noise = uniform(seed, idx, scenes.STREAM_NOISE, 3 * c).view(b, 3, c)
    tile = (u_noise[:, 0] * scenes.NOISE_TILES).long().clamp_max(scenes.NOISE_TILES - 1)
    shift = (u_noise[:, 1:] * s).long().clamp_max(s - 1)  # (B, 2, C): dy, dx
    return {"kind": (is_obj.long() + 2 * is_frame.long()).numpy(),  # 0 empty, 1 object, 2 frame
            "top_left": top_left.numpy(), "bottom_right": (top_left + size).numpy(),
            "tone": tone.numpy(), "background": background.numpy(), "tile": tile.numpy(),
            "shift": shift.numpy(), "count": count.to(torch.float32).numpy()}


def noise_bank(size: int) -> np.ndarray:
    """(NOISE_TILES, size, size) Gaussian tiles: the bank `render` takes its noise windows from."""
    gen = torch.Generator().manual_seed(scenes.NOISE_BANK_SEED)
    return torch.randn(scenes.NOISE_TILES, size, size, generator=gen).numpy()


def draw_pil(spec: SceneSpec, lay: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw every scene on its own with PIL ImageDraw: (B, C, H, W) float32, counts (B,)."""
    s, c = spec.image_size, spec.channels
    bank = noise_bank(s)  # the generator's noise tiles, (T, s, s)
    kinds, tl, br = lay["kind"], lay["top_left"], lay["bottom_right"]
    images = []
    for i in range(len(kinds)):
        planes = []
        for ch in range(c):
            bg = float(lay["background"][i, ch])
            im = Image.new("F", (s, s), bg)
            draw = ImageDraw.Draw(im)
            for j in np.flatnonzero(kinds[i]):
                # PIL boxes are inclusive: [left, top, right - 1, bottom - 1].
                box = (int(tl[i, 1, j]), int(tl[i, 0, j]), int(br[i, 1, j]) - 1,
                       int(br[i, 0, j]) - 1)
                ink = bg + float(lay["tone"][i, ch, j])
                if kinds[i, j] == 1:
                    draw.rectangle(box, fill=ink)
                else:  # a hollow 1 px frame
                    draw.rectangle(box, outline=ink, width=1)
            noise = np.roll(bank[lay["tile"][i, ch]],
                            (-int(lay["shift"][i, 0, ch]), -int(lay["shift"][i, 1, ch])), (0, 1))
            planes.append(np.clip(np.asarray(im) + spec.noise * noise, 0.0, 1.0))
        images.append(np.stack(planes))
    return torch.from_numpy(np.stack(images).astype(np.float32)), torch.from_numpy(lay["count"])


def check_same(spec: SceneSpec, n: int = 64) -> float:
    """Max |PIL image - generator image| over n scenes; raises if they are not the same scenes."""
    idx = torch.arange(n)
    x_gen, y_gen = render(spec, SEED, idx)
    x_pil, y_pil = draw_pil(spec, layout(spec, SEED, idx))
    diff = (x_gen - x_pil).abs().max().item()
    if not torch.equal(y_gen, y_pil) or diff > 1e-4:
        raise SystemExit(f"bench/data.py: PIL and generator scenes differ (max {diff:.3g}); "
                         "layout() no longer mirrors countnet.scenes.render")
    return diff


def render_chunks(spec: SceneSpec, seed: int, n: int, chunk: int, device: str) -> None:
    """Render scenes 0..n-1 in calls of `chunk` images, as `synthetic_split` does."""
    for start in range(0, n, chunk):
        render(spec, seed, torch.arange(start, min(n, start + chunk), device=device), device)
    sync(device)


def sync(device: str) -> None:
    """Wait for queued GPU work, so that wall time covers it."""
    if device == "cuda":
        torch.cuda.synchronize()


def images_per_s(fn, n: int) -> float:
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
    spec = SceneSpec()  # 64x64, 1 channel, 0-20 objects: the TrainConfig defaults
    print(f"scenes {spec.image_size}x{spec.image_size}, {spec.min_count}-{spec.max_count} "
          f"objects, generator on {device}, {torch.get_num_threads()} torch threads; "
          f"size {size}")
    max_diff = check_same(spec)  # also warms up both sides (noise bank, PIL, allocator)
    print(f"same scenes: max |PIL - generator| = {max_diff:.2e}")

    # Interleave the two sides in each repeat: load from other processes hits both alike.
    # The generator runs as `load_splits` runs it (chunks of RENDER_CHUNK) with 1 thread (a Ray
    # trial with cpu: 1) and torch's default threads (`countnet train`), plus smaller chunks.
    default_threads = torch.get_num_threads()
    # Threads only matter on the CPU.
    thread_counts = sorted({1, default_threads}) if device == "cpu" else [default_threads]
    chunks = [ch for ch in CHUNKS if ch <= n_gen] or [n_gen]
    gen_rates: dict[str, list[float]] = {f"t{t}_c{ch}": [] for t in thread_counts for ch in chunks}
    pil_rates = []
    for r in range(repeats):
        lay = layout(spec, SEED + r, torch.arange(n_pil))
        pil_rates.append(images_per_s(lambda lay=lay: draw_pil(spec, lay), n_pil))
        for t in thread_counts:
            torch.set_num_threads(t)
            for ch in chunks:
                gen_rates[f"t{t}_c{ch}"].append(images_per_s(
                    lambda ch=ch, r=r: render_chunks(spec, SEED + r, n_gen, ch, device), n_gen))
        torch.set_num_threads(default_threads)
        print(f"  repeat {r + 1}: PIL one by one {pil_rates[-1]:,.0f} img/s; generator "
              + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in gen_rates.items()))
    head_chunk = RENDER_CHUNK if RENDER_CHUNK in chunks else chunks[-1]
    head_key = f"t{default_threads}_c{head_chunk}"  # as `countnet train` renders
    speedups = [g / q for g, q in zip(gen_rates[head_key], pil_rates)]
    speedup = statistics.median(speedups)
    medians = {k: statistics.median(v) for k, v in gen_rates.items()}
    best_key = max(medians, key=medians.get)

    # Share of an epoch: render the training split vs train one epoch on it (same threads).
    cfg = TrainConfig().replace(epochs=1, device=device, **epoch_overrides)
    clear_cache()
    t0 = time.perf_counter()
    synthetic_split(SceneSpec.from_config(cfg), cfg.data_seed, "train", cfg.train_size, device)
    sync(device)
    render_train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    splits = load_splits(cfg, device)  # train + val, as fit gets them (cached per process)
    sync(device)
    render_splits_s = time.perf_counter() - t0
    epoch = fit(cfg, splits=splits)[0]
    share = render_train_s / epoch["epoch_time_s"]
    run_share = render_splits_s / (TrainConfig().epochs * epoch["epoch_time_s"])
    print(f"render train split ({cfg.train_size} img): {render_train_s * 1e3:.0f} ms; "
          f"one epoch of {cfg.model} (width {cfg.width}, depth {cfg.depth}): "
          f"{epoch['epoch_time_s']:.2f} s -> {share:.2%} of an epoch")
    print(f"rendered once per process: train+val {render_splits_s * 1e3:.0f} ms = "
          f"{run_share:.2%} of a {TrainConfig().epochs}-epoch run")
    print(f"generator ({head_key}: threads, chunk) {medians[head_key]:,.0f} img/s vs PIL "
          f"{statistics.median(pil_rates):,.0f} img/s: x{speedup:.1f} (median of {repeats}; "
          f"min x{min(speedups):.1f}, max x{max(speedups):.1f})")
    print(f"fastest generator setting {best_key}: {medians[best_key]:,.0f} img/s = "
          f"x{medians[best_key] / statistics.median(pil_rates):.1f} PIL")

    met = speedup >= GOAL_SPEEDUP and share < GOAL_SHARE
    from report import headline, write_result

    # Tiny (smoke) runs and GPU runs never overwrite the CPU figures.
    name = NAME + ("" if device == "cpu" else f"-{device}") + ("-tiny" if args.tiny else "")
    path = write_result(name, speedup, GOAL, met, {
        "share_of_epoch": share, "speedup": speedup, "speedups": speedups,
        "generator_images_per_s": gen_rates, "generator_median": medians,
        "headline_setting": head_key, "fastest_setting": best_key,
        "pil_images_per_s": pil_rates,
        "generator_batch": n_gen, "pil_images": n_pil, "max_abs_diff": max_diff,
        "render_train_split_s": render_train_s, "render_train_val_s": render_splits_s,
        "epoch_time_s": epoch["epoch_time_s"], "train_images_per_s": epoch["images_per_s"],
        "share_of_run": run_share, "run_epochs": TrainConfig().epochs,
        "epoch_config": cfg.to_dict(), "size": size, "device": device,
    }, quick=args.quick or args.tiny, out_dir=args.out_dir)
    headline(name, speedup, GOAL, met, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
