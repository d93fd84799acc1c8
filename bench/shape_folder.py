"""A labelled photo folder of objects the defaults were never tuned for: rings, crosses, stars.

    python bench/shape_folder.py OUT_DIR [--n N] [--seed S] [--sample PNG]

countnet's defaults were tuned on its own synthetic scenes: filled rectangles on a flat or
ramped background. This renderer draws something else, for bench/search_adapts.py (issue 18,
goal 4: "it adapts to new data"):

- objects: outlined rings (ellipses), plus-shaped crosses and five-pointed stars, of random size
  (DIAMETER_MIN..DIAMETER_MAX px), rotation and grey level, each one counted;
- placement: anywhere inside the image; centres at least TOUCH_FACTOR x the sum of two radii
  apart, so that neighbours may touch or slightly overlap (a count stays well defined: no
  object hides another) but never merge into one blob;
- background: a random level, a smooth low-frequency texture, a linear ramp and pixel noise;
  with probability DARK_PROB the objects are darker than the background instead of brighter.

Shapes are drawn at SUPERSAMPLE x the size and box-filtered down, so their edges are
anti-aliased as a camera's would be. The folder is countnet's photo-folder format
(`countnet.folder`): `labels.csv` (filename,count) and the PNG images it names, grey, at
TrainConfig's default image_size (64 px), so that nothing is resized on the way in.
Every image is a function of (seed, index) alone: the same call writes the same files.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from countnet.config import TrainConfig
from countnet.folder import LABELS_CSV

IMAGE_SIZE = TrainConfig().image_size  # px: the default input size, so photos are not resized
SUPERSAMPLE = 4  # drawn at 4x, box-filtered down: anti-aliased edges
MIN_COUNT, MAX_COUNT = 0, 15  # objects per image, inclusive (64 px images crowd above ~15)
DIAMETER_MIN, DIAMETER_MAX = 6.0, 13.0  # px at IMAGE_SIZE: outer diameter of an object
# Centres >= TOUCH_FACTOR * (r1 + r2) apart: below 1, outlines may touch or overlap a little.
TOUCH_FACTOR = 0.85
PLACE_TRIES = 60  # random positions tried per object before the image holds fewer objects
KINDS = ("ring", "cross", "star")  # none of them a filled rectangle
RING_WIDTH = (1.2, 2.2)  # px: the outline of a ring (thin: its inside is background)
CROSS_ARM = (0.22, 0.34)  # arm thickness of a cross over its diameter
STAR_INNER = (0.38, 0.5)  # inner over outer radius of a star
CONTRAST = (0.2, 0.6)  # object level minus background level (intensity in [0, 1])
OBJECT_JITTER = 0.25  # +/- relative contrast of each object around the image's
BACKGROUND = (0.1, 0.5)  # background level
DARK_PROB = 0.3  # probability of dark objects on a light background
TEXTURE_CELLS = 6  # the smooth texture: a 6x6 grid of random levels, upsampled bicubically
TEXTURE_STD = (0.02, 0.08)  # its amplitude (std)
RAMP_MAX = 0.12  # largest rise of the linear background ramp across the image
NOISE_STD = (0.01, 0.04)  # std of Gaussian pixel noise, per image


def _outline(kind: str, rng: np.random.Generator, cx: float, cy: float, r: float,
             ) -> tuple[str, list[tuple[float, float]] | tuple[float, ...], float]:
    """What to draw for one object at SUPERSAMPLE scale: ("ellipse", box, width) for a ring,
    ("polygon", points, 0) for a cross or a star (rotated at random)."""
    s = SUPERSAMPLE
    if kind == "ring":
        # An ellipse: aspect 0.6..1, so rings are not all circles (a box at random rotation
        # would need a polygon; the axis-aligned ellipse is enough to vary the shape).
        aspect = rng.uniform(0.6, 1.0)
        rx, ry = (r, r * aspect) if rng.random() < 0.5 else (r * aspect, r)
        width = rng.uniform(*RING_WIDTH) * s
        return "ellipse", (s * (cx - rx), s * (cy - ry), s * (cx + rx), s * (cy + ry)), width
    angle = rng.uniform(0, 2 * math.pi)
    if kind == "cross":
        a = rng.uniform(*CROSS_ARM) * r  # half the arm thickness (arm = 2a, diameter = 2r)
        # A plus sign as one 12-corner polygon, corners in order around it.
        local = [(a, r), (a, a), (r, a), (r, -a), (a, -a), (a, -r), (-a, -r), (-a, -a),
                 (-r, -a), (-r, a), (-a, a), (-a, r)]
    else:
        inner = rng.uniform(*STAR_INNER) * r
        local = [((r if k % 2 == 0 else inner) * math.cos(k * math.pi / 5),
                  (r if k % 2 == 0 else inner) * math.sin(k * math.pi / 5)) for k in range(10)]
    c, sn = math.cos(angle), math.sin(angle)
    points = [(s * (cx + x * c - y * sn), s * (cy + x * sn + y * c)) for x, y in local]
    return "polygon", points, 0.0


def _place(rng: np.random.Generator, n: int, size: int) -> list[tuple[float, float, float]]:
    """Up to n (cx, cy, radius) inside the image, TOUCH_FACTOR apart; fewer when it is full."""
    placed: list[tuple[float, float, float]] = []
    for _ in range(n):
        r = rng.uniform(DIAMETER_MIN, DIAMETER_MAX) / 2
        for _ in range(PLACE_TRIES):
            cx, cy = rng.uniform(r, size - r, size=2)
            if all((cx - x) ** 2 + (cy - y) ** 2 >= (TOUCH_FACTOR * (r + q)) ** 2
                   for x, y, q in placed):
                placed.append((cx, cy, r))
                break
    return placed


def _background(rng: np.random.Generator, size: int, top: float) -> np.ndarray:
    """(size, size) float: a level (at most `top`) + smooth texture + linear ramp."""
    level = rng.uniform(BACKGROUND[0], max(BACKGROUND[0], min(BACKGROUND[1], top)))
    cells = rng.normal(0.0, rng.uniform(*TEXTURE_STD), (TEXTURE_CELLS, TEXTURE_CELLS))
    texture = np.asarray(Image.fromarray(cells.astype(np.float32))
                         .resize((size, size), Image.BICUBIC), dtype=np.float64)
    angle = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(1, size - 1)
    ramp = rng.uniform(0, RAMP_MAX) * ((xx - 0.5) * math.cos(angle) + (yy - 0.5) * math.sin(angle))
    return level + texture + ramp


def render(seed: int, index: int, size: int = IMAGE_SIZE) -> tuple[Image.Image, int]:
    """Image `index` of the folder with seed `seed`: a grey PIL image and its object count."""
    rng = np.random.default_rng([seed, index])  # one stream per image: stable under any n
    wanted = int(rng.integers(MIN_COUNT, MAX_COUNT + 1))
    objects = _place(rng, wanted, size)
    dark = rng.random() < DARK_PROB
    contrast = rng.uniform(*CONTRAST)
    big = size * SUPERSAMPLE
    # The contrast each object brings, drawn at SUPERSAMPLE scale; a later object covers an
    # earlier one where they overlap (as in a photo).
    canvas = Image.new("F", (big, big), 0.0)  # float pixels: each object's contrast
    draw = ImageDraw.Draw(canvas)
    for cx, cy, r in objects:
        shape, geometry, width = _outline(KINDS[rng.integers(len(KINDS))], rng, cx, cy, r)
        level = float(contrast * rng.uniform(1 - OBJECT_JITTER, 1 + OBJECT_JITTER))
        if shape == "ellipse":
            draw.ellipse(geometry, outline=level, width=max(1, round(width)))
        else:
            draw.polygon(geometry, fill=level)
    # Box filter: each output pixel is the mean of its SUPERSAMPLE x SUPERSAMPLE block.
    small = np.asarray(canvas, dtype=np.float64).reshape(
        size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))
    # The brightest object stays below 1 on the brightest background: no clipped objects.
    top = 1.0 - contrast * (1 + OBJECT_JITTER) - RAMP_MAX / 2 - 0.05
    image = _background(rng, size, top) + small
    if dark:  # dark objects on a light background: the same scene, inverted
        image = 1.0 - image
    image += rng.normal(0.0, rng.uniform(*NOISE_STD), image.shape)
    pixels = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels), len(objects)


def write_folder(out_dir: str | Path, n: int, seed: int) -> list[int]:
    """Write n images and labels.csv (filename,count) into out_dir; return the counts."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = []
    with open(out / LABELS_CSV, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "count"])
        for i in range(n):
            image, count = render(seed, i)
            name = f"img_{i:05d}.png"
            image.save(out / name)
            writer.writerow([name, count])
            counts.append(count)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--n", type=int, default=100, help="images (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sample", type=Path, help="also save a 4x4 grid of images, enlarged, here")
    args = p.parse_args(argv)
    counts = write_folder(args.out_dir, args.n, args.seed)
    print(f"{args.out_dir}: {len(counts)} images, counts {min(counts)}..{max(counts)}, "
          f"mean {np.mean(counts):.1f}")
    if args.sample:
        scale = 4
        grid = Image.new("L", (4 * IMAGE_SIZE * scale + 12, 4 * IMAGE_SIZE * scale + 12), 255)
        for k in range(min(16, args.n)):
            image, _ = render(args.seed, k)
            grid.paste(image.resize((IMAGE_SIZE * scale,) * 2, Image.NEAREST),
                       ((k % 4) * (IMAGE_SIZE * scale + 4), (k // 4) * (IMAGE_SIZE * scale + 4)))
        grid.save(args.sample)
        print(f"sample: {args.sample} (counts {counts[:16]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
