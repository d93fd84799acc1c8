"""Box-annotated photo fixtures: a synthetic CARPK layout, and a labelled folder with boxes.csv.

The "photos" are larger than a training scene (160 x 96 px by default), and hold bright
rectangles ("cars", 5-9 px) on a noisy grey background, placed by rejection sampling here (no
countnet code draws them), with one box per rectangle in the file each layout expects.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

PHOTO_SIZE = (160, 96)  # px, (width, height)
CAR_SIDES = (5, 9)  # px, shortest and longest side of a rectangle, inclusive
COUNTS = (4, 24)  # rectangles per photo, inclusive


def draw_photo(rng: np.random.Generator, size: tuple[int, int] = PHOTO_SIZE,
               counts: tuple[int, int] = COUNTS) -> tuple[Image.Image, np.ndarray]:
    """A grey photo and its boxes (K, 4) int rows of x0, y0, x1, y1 (x1, y1 exclusive)."""
    width, height = size
    pixels = rng.normal(0.3, 0.03, size=(height, width))
    taken = np.zeros((height, width), dtype=bool)
    boxes = []
    for _ in range(int(rng.integers(counts[0], counts[1] + 1))):
        for _try in range(100):
            w, h = rng.integers(CAR_SIDES[0], CAR_SIDES[1] + 1, size=2)
            x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            # one px of background around each rectangle
            if not taken[max(0, y0 - 1):y0 + h + 1, max(0, x0 - 1):x0 + w + 1].any():
                taken[y0:y0 + h, x0:x0 + w] = True
                pixels[y0:y0 + h, x0:x0 + w] = rng.uniform(0.75, 0.95)
                boxes.append((x0, y0, x0 + w, y0 + h))
                break
    grey = np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L"), np.array(boxes, dtype=np.int64).reshape(-1, 4)


def write_carpk(root: Path, n_train: int = 6, n_test: int = 3, seed: int = 0,
                size: tuple[int, int] = PHOTO_SIZE) -> Path:
    """CARPK's layout: Images/<name>.png, Annotations/<name>.txt (`x0 y0 x1 y1 1` per line),
    ImageSets/{train,test}.txt. Returns root."""
    rng = np.random.default_rng(seed)
    for folder in ("Images", "Annotations", "ImageSets"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        names = [f"{split}_{i:03d}" for i in range(n)]
        for name in names:
            photo, boxes = draw_photo(rng, size)
            photo.save(root / "Images" / f"{name}.png")
            (root / "Annotations" / f"{name}.txt").write_text(
                "".join(f"{x0} {y0} {x1} {y1} 1\n" for x0, y0, x1, y1 in boxes.tolist()))
        (root / "ImageSets" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return root


def write_box_folder(root: Path, photos: list[tuple[Image.Image, np.ndarray]]) -> Path:
    """A labelled folder: photo_<i>.png, labels.csv (filename,count) and boxes.csv
    (filename,x0,y0,x1,y1). Returns root."""
    root.mkdir(parents=True, exist_ok=True)
    with (root / "labels.csv").open("w", newline="") as labels, \
            (root / "boxes.csv").open("w", newline="") as box_file:
        label_rows, box_rows = csv.writer(labels), csv.writer(box_file)
        label_rows.writerow(["filename", "count"])
        box_rows.writerow(["filename", "x0", "y0", "x1", "y1"])
        for i, (photo, boxes) in enumerate(photos):
            name = f"photo_{i:03d}.png"
            photo.save(root / name)
            label_rows.writerow([name, len(boxes)])
            box_rows.writerows([name, *box] for box in np.asarray(boxes).tolist())
    return root
