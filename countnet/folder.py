"""Real photo folders: `labels.csv` (filename,count) + images, or the CARPK layout.

Images of any size are resized to the model's square input. Every problem (a missing file, an image
that cannot be decoded, a malformed row) raises DataError naming the file and the row.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

LABELS_CSV = "labels.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """Bad input data. The message names the file (and the row where there is one)."""


class Row(NamedTuple):
    name: str  # image file name, relative to the labels file
    count: float
    where: str  # "labels.csv:LINE", for error messages


def read_labels_csv(path: Path) -> list[Row]:
    """Rows of `filename,count` (a header row `filename,count` is optional)."""
    if not path.is_file():
        raise DataError(f"{path}: missing (expected filename,count rows)")
    rows: list[Row] = []
    with path.open(newline="") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row or (lineno == 1 and row[0].strip().lower() == "filename"):
                continue
            if len(row) != 2 or not row[0].strip():
                raise DataError(f"{path}:{lineno}: expected 'filename,count', got {row!r}")
            try:
                count = float(row[1])
            except ValueError:
                raise DataError(f"{path}:{lineno}: count {row[1]!r} is not a number") from None
            if count < 0 or not np.isfinite(count):
                raise DataError(f"{path}:{lineno}: count {row[1]!r} must be finite and >= 0")
            rows.append(Row(row[0].strip(), count, f"{path}:{lineno}"))
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def load_image(path: Path, image_size: int, channels: int) -> torch.Tensor:
    """One image as (C, H, W) float32 in [0, 1], resized to image_size x image_size."""
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            im = im.resize((image_size, image_size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except (UnidentifiedImageError, OSError) as e:
        raise DataError(f"{path}: cannot decode image ({e})") from None
    t = torch.from_numpy(arr)
    return t[None] if channels == 1 else t.permute(2, 0, 1)


def load_rows(root: Path, rows: list[Row], image_size: int,
              channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) and counts (N,); an unreadable image names its labels row too."""
    images = []
    for row in rows:
        try:
            images.append(load_image(root / row.name, image_size, channels))
        except DataError as e:
            raise DataError(f"{row.where}: {e}") from None
    return torch.stack(images), torch.tensor([r.count for r in rows], dtype=torch.float32)


def in_val(name: str, val_fraction: float) -> bool:
    """A stable train/val assignment by filename hash: adding files never moves the others."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return h / 2.0**64 < val_fraction


def load_labelled_folder(root: Path, image_size: int, channels: int,
                         val_fraction: float) -> tuple[torch.Tensor, ...]:
    """train_x, train_y, val_x, val_y from `root/{train,val}/labels.csv` or one `root/labels.csv`.

    With a single labels.csv, files are split by filename hash (`val_fraction` go to val).
    """
    if (root / "train" / LABELS_CSV).is_file() and (root / "val" / LABELS_CSV).is_file():
        return (*load_rows(root / "train", read_labels_csv(root / "train" / LABELS_CSV),
                           image_size, channels),
                *load_rows(root / "val", read_labels_csv(root / "val" / LABELS_CSV),
                           image_size, channels))
    rows = read_labels_csv(root / LABELS_CSV)
    train = [r for r in rows if not in_val(r.name, val_fraction)]
    val = [r for r in rows if in_val(r.name, val_fraction)]
    if not train or not val:
        raise DataError(f"{root / LABELS_CSV}: {len(rows)} rows give an empty train or val split "
                        f"at val_fraction={val_fraction}")
    return (*load_rows(root, train, image_size, channels),
            *load_rows(root, val, image_size, channels))


def carpk_split(root: Path, split: str) -> list[Row]:
    """CARPK: `ImageSets/<split>.txt` names, `Images/<name>.png`, `Annotations/<name>.txt` boxes."""
    listing = root / "ImageSets" / f"{split}.txt"
    if not listing.is_file():
        raise DataError(f"{listing}: missing (CARPK layout needs ImageSets/{{train,test}}.txt)")
    rows: list[Row] = []
    for lineno, line in enumerate(listing.read_text().splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        image = next((root / "Images" / f"{name}{s}" for s in IMAGE_SUFFIXES
                      if (root / "Images" / f"{name}{s}").is_file()), None)
        if image is None:
            raise DataError(f"{listing}:{lineno}: no image Images/{name}.* for this row")
        ann = root / "Annotations" / f"{name}.txt"
        if not ann.is_file():
            raise DataError(f"{listing}:{lineno}: annotation {ann} is missing")
        boxes = 0
        for box_line, text in enumerate(ann.read_text().splitlines(), start=1):
            fields = text.split()
            if not fields:
                continue
            try:
                [float(v) for v in fields[:4]]
            except ValueError:
                raise DataError(f"{ann}:{box_line}: not a box: {text!r}") from None
            if len(fields) < 4:
                raise DataError(f"{ann}:{box_line}: a box needs 4 numbers: {text!r}")
            boxes += 1
        rows.append(Row(str(image.relative_to(root)), float(boxes), f"{listing}:{lineno}"))
    if not rows:
        raise DataError(f"{listing}: no rows")
    return rows


def load_carpk(root: Path, image_size: int, channels: int) -> tuple[torch.Tensor, ...]:
    """train_x, train_y, val_x, val_y: CARPK's train split, and its test split as validation."""
    out: list[torch.Tensor] = []
    for split in ("train", "test"):
        out += load_rows(root, carpk_split(root, split), image_size, channels)
    return tuple(out)
