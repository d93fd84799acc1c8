"""Box-annotated photo folders cut from real photographs: a crowd of real faces on real ground.

    python bench/photo_folder.py OUT_DIR [--train-n N] [--val-n N] [--heldout-n N] [--seed S]

The photo benchmark of bench/real_photos.py (issue 28, goal 1). Everything comes from photographs
that ship inside scikit-image (the `photos` extra), so it works offline:

- objects: the 100 real face photos of `skimage.data.lfw_subset()` (25x25 px grey), pasted with
  a soft elliptical mask at FACE_MIN..FACE_MAX px, turned by up to ANGLE_MAX degrees, with their
  own brightness, contrast and colour tint. Each face is one box in boxes.csv;
- distractors: the 100 non-face patches of the same set (pieces of the same photographs), pasted
  the same way and never counted, so that "a blob the size of a face" is not a face;
- ground: windows of GROUNDS, real photographs and textures of the package (coffee, a cat, a
  rocket launch, the Hubble deep field, stained tissue, a retina, bricks, grass, gravel, the
  moon, coins, cells, a clock, printed text), resized to PHOTO_W x PHOTO_H, flipped at random,
  with their own brightness and contrast.

Held out means unseen: the train and val photos use faces 0-49, distractors 100-149 and the
left half of every ground photograph; the held-out photos use faces 50-99, distractors 150-199
and the right halves. Nothing in a held-out photo was seen in training.

Each folder is countnet's box-annotated folder format (`countnet.folder`, `countnet.boxes`):
`labels.csv` (filename,count), `boxes.csv` (filename,x0,y0,x1,y1) and the RGB PNGs, all of one
size, as whole-photo validation needs. Layout written: OUT/train, OUT/val (the train/ and val/
split that `data: folder` reads) and OUT/heldout. A photo is a function of (seed, split, index).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from countnet.boxes import BOX_COLUMNS, BOXES_CSV
from countnet.folder import LABELS_CSV

PHOTO_W, PHOTO_H = 256, 192  # px of every photo
MIN_COUNT, MAX_COUNT = 0, 60  # faces per photo, inclusive
FACE_MIN, FACE_MAX = 8.0, 24.0  # px: side of a pasted face (the 25 px source, scaled)
ANGLE_MAX = 30.0  # degrees either way
MAX_DISTRACTORS = 5  # non-face patches per photo, 0..5
# Centres at least SPACING x the mean of two sides apart: faces may touch, never hide each other.
SPACING = 0.8
PLACE_TRIES = 40  # random positions tried per object before the photo holds fewer
ELLIPSE = (0.40, 0.50)  # semi-axes of the soft mask over the face's side (x, y)
FEATHER_PX = 1.2  # px over which the mask fades from face to ground
GAIN = (0.6, 1.4)  # face contrast around its mean
OFFSET = (-0.2, 0.2)  # face brightness shift (intensity in [0, 1])
TINT = (0.9, 1.1)  # per-channel colour gain of a face
GROUND_GAIN = (0.6, 1.3)  # ground contrast around its mean
GROUND_OFFSET = (-0.15, 0.15)  # ground brightness shift
GROUND_MIN_SHARE = 0.45  # a ground window spans 45-100 % of the usable half of its photograph
FACES = (range(0, 50), range(50, 100))  # lfw_subset indices: (train and val, held out)
NON_FACES = (range(100, 150), range(150, 200))
# skimage.data photographs and textures that ship in the wheel (no download) and show no person
# (a face in the ground would be an object nobody counted).
GROUNDS = ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
           "brick", "grass", "gravel", "moon", "coins", "cell", "clock", "text")
SPLIT_STREAMS = {"train": 1, "val": 2, "heldout": 3}


class Sources(NamedTuple):
    """The real pixels one split may use."""

    faces: list[np.ndarray]  # (25, 25) float in [0, 1] each
    non_faces: list[np.ndarray]
    grounds: list[np.ndarray]  # (H, W, 3) float in [0, 1]: one half of each photograph


def load_sources(held_out: bool) -> Sources:
    """The faces, distractors and ground halves of the train/val side or the held-out side.

    Args:
        held_out: False for the train and val photos, True for the held-out ones.
    """
    try:
        import skimage.data
    except ImportError:
        raise SystemExit("bench/photo_folder.py needs scikit-image: pip install -e '.[photos]'"
                         ) from None
    lfw = skimage.data.lfw_subset()  # (200, 25, 25) float64: 100 faces, then 100 non-faces
    side = int(held_out)
    grounds = []
    for name in GROUNDS:
        image = np.asarray(getattr(skimage.data, name)(), dtype=np.float64)
        image = image / 255.0 if image.max() > 1.0 else image
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        half = image.shape[1] // 2
        grounds.append(image[:, half:, :3] if held_out else image[:, :half, :3])
    return Sources([lfw[i] for i in FACES[side]], [lfw[i] for i in NON_FACES[side]], grounds)


def ground(rng: np.random.Generator, halves: list[np.ndarray]) -> np.ndarray:
    """A PHOTO_H x PHOTO_W x 3 window of a random ground half, resized, flipped, re-lit."""
    src = halves[rng.integers(len(halves))]
    h, w = src.shape[:2]
    aspect = PHOTO_W / PHOTO_H
    full_w = min(w, h * aspect)  # the largest window of the photo's aspect in this half
    win_w = full_w * rng.uniform(GROUND_MIN_SHARE, 1.0)
    win_h = win_w / aspect
    left, top = rng.uniform(0, w - win_w), rng.uniform(0, h - win_h)
    im = Image.fromarray((src * 255).astype(np.uint8)).resize(
        (PHOTO_W, PHOTO_H), Image.BILINEAR, box=(left, top, left + win_w, top + win_h))
    out = np.asarray(im, dtype=np.float64) / 255.0
    if rng.random() < 0.5:
        out = out[:, ::-1]
    mean = out.mean()
    return np.clip((out - mean) * rng.uniform(*GROUND_GAIN) + mean
                   + rng.uniform(*GROUND_OFFSET), 0.0, 1.0)


def _pyramid(patch: np.ndarray) -> dict[int, np.ndarray]:
    """The 25 px patch resized (Lanczos) to every even side from FACE_MIN to 26 px, so that
    pasting samples an image already near its final size (no aliasing when shrinking 3x)."""
    im = Image.fromarray((patch * 255).astype(np.uint8))
    return {s: np.asarray(im.resize((s, s), Image.LANCZOS), dtype=np.float64) / 255.0
            for s in range(int(FACE_MIN), 27, 2)}


def paste(canvas: np.ndarray, pyramid: dict[int, np.ndarray], cx: float, cy: float,
          side: float, angle: float, rng: np.random.Generator) -> None:
    """Blend one patch into canvas (H, W, 3) in place: centred at (cx, cy) px, `side` px wide,
    turned by `angle` degrees, under a soft elliptical mask, with its own brightness and tint.
    """
    level = min(s for s in pyramid if s >= side - 1e-9) if side <= max(pyramid) else max(pyramid)
    src = pyramid[level]  # (level, level)
    reach = side * 0.75  # px from the centre that the turned ellipse can cover
    x0, x1 = max(0, math.floor(cx - reach)), min(canvas.shape[1], math.ceil(cx + reach) + 1)
    y0, y1 = max(0, math.floor(cy - reach)), min(canvas.shape[0], math.ceil(cy + reach) + 1)
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)  # (h, w) pixel rows and columns
    dx, dy = xs + 0.5 - cx, ys + 0.5 - cy  # pixel centres relative to the patch centre
    a = math.radians(angle)
    u = math.cos(a) * dx + math.sin(a) * dy  # the patch's own axes, px
    v = -math.sin(a) * dx + math.cos(a) * dy
    r = np.sqrt((u / (ELLIPSE[0] * side)) ** 2 + (v / (ELLIPSE[1] * side)) ** 2)
    alpha = np.clip(0.5 + (1.0 - r) * ELLIPSE[0] * side / FEATHER_PX, 0.0, 1.0)  # (h, w)
    scale = level / side  # source px per canvas px
    sx = np.clip(u * scale + level / 2 - 0.5, 0, level - 1)
    sy = np.clip(v * scale + level / 2 - 0.5, 0, level - 1)
    ix, iy = np.minimum(sx.astype(int), level - 2), np.minimum(sy.astype(int), level - 2)
    fx, fy = sx - ix, sy - iy
    value = (src[iy, ix] * (1 - fx) * (1 - fy) + src[iy, ix + 1] * fx * (1 - fy)
             + src[iy + 1, ix] * (1 - fx) * fy + src[iy + 1, ix + 1] * fx * fy)  # (h, w)
    mean = value.mean()
    value = (value - mean) * rng.uniform(*GAIN) + mean + rng.uniform(*OFFSET)
    colour = np.clip(value[:, :, None] * rng.uniform(*TINT, size=3), 0.0, 1.0)  # (h, w, 3)
    region = canvas[y0:y1, x0:x1]
    region[:] = region * (1 - alpha[:, :, None]) + colour * alpha[:, :, None]


def place(rng: np.random.Generator, sides: np.ndarray,
          taken: list[tuple[float, float, float]]) -> list[tuple[float, float, float]]:
    """Centres (cx, cy, side) for objects of `sides` px, inside the photo, apart from `taken`
    and each other; an object with no room after PLACE_TRIES is left out."""
    placed: list[tuple[float, float, float]] = []
    for side in sides.tolist():
        half = side / 2
        for _ in range(PLACE_TRIES):
            cx, cy = rng.uniform(half, PHOTO_W - half), rng.uniform(half, PHOTO_H - half)
            if all(math.hypot(cx - x, cy - y) >= SPACING * (side + s) / 2
                   for x, y, s in taken + placed):
                placed.append((cx, cy, side))
                break
    return placed


def photo(rng: np.random.Generator, src: Sources, faces: list[dict[int, np.ndarray]],
          non_faces: list[dict[int, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """One photo (H, W, 3) uint8 and its face boxes (K, 4) = x0, y0, x1, y1 px."""
    canvas = ground(rng, src.grounds)
    clutter = place(rng, rng.uniform(FACE_MIN, FACE_MAX, rng.integers(0, MAX_DISTRACTORS + 1)),
                    [])
    for cx, cy, side in clutter:
        paste(canvas, non_faces[rng.integers(len(non_faces))], cx, cy, side,
              rng.uniform(-ANGLE_MAX, ANGLE_MAX), rng)
    wanted = rng.integers(MIN_COUNT, MAX_COUNT + 1)
    objects = place(rng, rng.uniform(FACE_MIN, FACE_MAX, wanted), clutter)
    for cx, cy, side in objects:
        paste(canvas, faces[rng.integers(len(faces))], cx, cy, side,
              rng.uniform(-ANGLE_MAX, ANGLE_MAX), rng)
    boxes = np.array([(cx - s / 2, cy - s / 2, cx + s / 2, cy + s / 2)
                      for cx, cy, s in objects]).reshape(-1, 4)
    return (canvas * 255 + 0.5).astype(np.uint8), boxes


def write_split(out: Path, split: str, n: int, seed: int, src: Sources) -> list[int]:
    """Write n photos of one split into `out` with labels.csv and boxes.csv; their counts.

    Args:
        out: the folder (created).
        split: "train", "val" or "heldout" (its own random stream).
        n: photos.
        seed: the benchmark's seed.
        src: the pixels this split may use (`load_sources`).
    """
    out.mkdir(parents=True, exist_ok=True)
    faces = [_pyramid(f) for f in src.faces]
    non_faces = [_pyramid(f) for f in src.non_faces]
    counts = []
    with (out / LABELS_CSV).open("w", newline="") as lf, \
            (out / BOXES_CSV).open("w", newline="") as bf:
        labels, boxes = csv.writer(lf), csv.writer(bf)
        labels.writerow(["filename", "count"])
        boxes.writerow(BOX_COLUMNS)
        for i in range(n):
            rng = np.random.default_rng([seed, SPLIT_STREAMS[split], i])
            pixels, photo_boxes = photo(rng, src, faces, non_faces)
            name = f"{split}_{i:05d}.png"
            Image.fromarray(pixels).save(out / name)
            labels.writerow([name, len(photo_boxes)])
            boxes.writerows([name, *(f"{v:.2f}" for v in b)] for b in photo_boxes)
            counts.append(len(photo_boxes))
    return counts


def write_folders(root: Path, train_n: int, val_n: int, heldout_n: int,
                  seed: int = 0) -> dict[str, list[int]]:
    """root/train, root/val (faces 0-49, left halves) and root/heldout (faces 50-99, right
    halves); the counts of each."""
    seen, unseen = load_sources(False), load_sources(True)
    return {"train": write_split(root / "train", "train", train_n, seed, seen),
            "val": write_split(root / "val", "val", val_n, seed, seen),
            "heldout": write_split(root / "heldout", "heldout", heldout_n, seed, unseen)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder to write train/, val/ and heldout/ into")
    p.add_argument("--train-n", type=int, default=600, help="training photos")
    p.add_argument("--val-n", type=int, default=150, help="validation photos")
    p.add_argument("--heldout-n", type=int, default=200, help="held-out photos")
    p.add_argument("--seed", type=int, default=0, help="the photos' seed")
    args = p.parse_args(argv)
    counts = write_folders(args.out, args.train_n, args.val_n, args.heldout_n, args.seed)
    for split, c in counts.items():
        print(f"{args.out / split}: {len(c)} photos, {sum(c)} faces (mean {np.mean(c):.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
