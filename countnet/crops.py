"""Training on crops of box-annotated photos at their own resolution (`crop_size` > 0).

Counting tools for large photos (CSRNet, DM-Count, the CARPK baselines) train on crops at native
resolution and count whole images. So, for `data: carpk` or a labelled folder with a `boxes.csv`
(`countnet.boxes`), when `crop_size` > 0:

- train: `train_size` square crops of `crop_size` px, cut at random positions from the training
  photos at their own size (never resized). Every crop position of every photo is equally likely
  (a photo's share grows with its area). A crop's count is the number of boxes whose centres
  fall inside it, the left and top edges included and the right and bottom ones not, so the
  crops of a tiling count every box once. The crops are drawn once per `data_seed`; the training
  loop shuffles (and, with `augment: dihedral`, flips) them each epoch.
- validation (CARPK's test split, or the folder's val split): whole photos at their own size,
  labelled with their count. The training loop stacks them, so they must share one size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from countnet.boxes import Photo, carpk_photos, centres, folder_photos
from countnet.config import TrainConfig
from countnet.errors import DataError
from countnet.folder import (
    Row,
    carpk_split,
    check_inside,
    labelled_splits,
    load_native,
    native_size,
)

CROP_STREAM = 7_919  # mixed into data_seed: the crops' random stream, apart from other uses


def crop_count(box_centres: np.ndarray, left: int, top: int, size: int) -> int:
    """Boxes whose centre lies in [left, left + size) x [top, top + size).

    Args:
        box_centres: (K, 2) centres as (x, y) in px (`countnet.boxes.centres`).
        left: the crop's first column, px.
        top: the crop's first row, px.
        size: the crop's side, px.
    """
    x, y = box_centres[:, 0], box_centres[:, 1]
    inside = (x >= left) & (x < left + size) & (y >= top) & (y < top + size)
    return int(inside.sum())


def draw_crops(photos: list[Photo], n: int, size: int, channels: int,
               seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` random crops (n, C, size, size) float32 and their counts (n,), in random order.

    Each photo is decoded once, at its own size, and its crops are cut from it.

    Args:
        photos: the training photos with their boxes.
        n: number of crops.
        size: side of a crop, px; every photo must be at least this large.
        channels: 1 (grey) or 3 (RGB).
        seed: the crops' seed (positions, shares per photo, order).

    Raises:
        DataError: a photo smaller than a crop, a box centre outside its photo, or a photo that
            cannot be read.
    """
    rng = np.random.default_rng([seed, CROP_STREAM])
    sizes = [_size(p) for p in photos]  # (width, height) from the headers
    for photo, (width, height) in zip(photos, sizes):
        if width < size or height < size:
            raise DataError(f"{photo.where}: {photo.path} is {width}x{height} px, smaller than "
                            f"crop_size {size} px")
    positions = np.array([(w - size + 1) * (h - size + 1) for w, h in sizes], dtype=np.float64)
    per_photo = rng.multinomial(n, positions / positions.sum())  # (P,) crops of each photo
    x = torch.empty((n, channels, size, size), dtype=torch.float32)
    y = torch.empty(n, dtype=torch.float32)
    i = 0
    for photo, (width, height), k in zip(photos, sizes, per_photo.tolist()):
        if k == 0:
            continue
        image = _read(photo, channels)  # (C, H, W)
        box_centres = _centres_inside(photo, width, height)
        lefts = rng.integers(0, width - size + 1, size=k)
        tops = rng.integers(0, height - size + 1, size=k)
        for left, top in zip(lefts.tolist(), tops.tolist()):
            x[i] = image[:, top:top + size, left:left + size]
            y[i] = crop_count(box_centres, left, top, size)
            i += 1
    order = torch.from_numpy(rng.permutation(n))
    return x[order], y[order]


def whole_images(folder: Path, rows: list[Row],
                 channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Photos at their own size (M, C, H, W) float32 and their counts (M,).

    Args:
        folder: the folder the rows' names are relative to.
        rows: labels rows (or a CARPK split's rows).
        channels: 1 (grey) or 3 (RGB).

    Raises:
        DataError: photos of different sizes (the training loop validates a stacked tensor),
            or a photo that cannot be read; named by its row.
    """
    images: list[torch.Tensor] = []
    for row in rows:
        try:
            image = load_native(folder / check_inside(row.name, row.where), channels)
        except DataError as e:
            raise DataError(f"{row.where}: {e}") from None
        if images and image.shape != images[0].shape:
            raise DataError(
                f"{row.where}: {row.name} is {image.shape[2]}x{image.shape[1]} px but "
                f"{rows[0].name} is {images[0].shape[2]}x{images[0].shape[1]} px; validation "
                f"on whole photos needs photos of one size")
        images.append(image)
    return torch.stack(images), torch.tensor([r.count for r in rows], dtype=torch.float32)


def training_photos(cfg: TrainConfig) -> list[Photo]:
    """The box-annotated training photos of a carpk or folder config.

    Args:
        cfg: a config with data carpk or folder and its data_dir.
    """
    root = Path(cfg.data_dir)
    if cfg.data == "carpk":
        return carpk_photos(root, "train")
    (folder, rows), _ = labelled_splits(root, cfg.val_fraction)
    return folder_photos(folder, rows)


def load_crop_splits(cfg: TrainConfig) -> tuple[torch.Tensor, ...]:
    """train_x (train_size, C, crop, crop), train_y, val_x (M, C, H, W), val_y on the CPU.

    Args:
        cfg: a config with crop_size > 0 and data carpk or folder (`validate` checks
            crop_size's range and data kind when the config is made).
    """
    root = Path(cfg.data_dir)
    train = draw_crops(training_photos(cfg), cfg.train_size, cfg.crop_size, cfg.channels,
                       cfg.data_seed)
    if cfg.data == "carpk":
        val_folder, val_rows = root, carpk_split(root, "test")
    else:
        _, (val_folder, val_rows) = labelled_splits(root, cfg.val_fraction)
    return (*train, *whole_images(val_folder, val_rows, cfg.channels))


def _size(photo: Photo) -> tuple[int, int]:
    """The photo's (width, height) from its header; an error names the row that names it."""
    try:
        return native_size(photo.path)
    except DataError as e:
        raise DataError(f"{photo.where}: {e}") from None


def _read(photo: Photo, channels: int) -> torch.Tensor:
    """The photo at its own size (C, H, W); a read error names the row that names the photo."""
    try:
        return load_native(photo.path, channels)
    except DataError as e:
        raise DataError(f"{photo.where}: {e}") from None


def _centres_inside(photo: Photo, width: int, height: int) -> np.ndarray:
    """The photo's box centres (K, 2); one outside the photo is a DataError (no crop has it)."""
    box_centres = centres(photo.boxes)
    x, y = box_centres[:, 0], box_centres[:, 1]
    outside = ~((x >= 0) & (x < width) & (y >= 0) & (y < height))
    if outside.any():
        k = int(np.argmax(outside))
        raise DataError(f"{photo.where}: box {photo.boxes[k].tolist()} of {photo.path} has its "
                        f"centre outside the {width}x{height} px image")
    return box_centres
