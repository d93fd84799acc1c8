"""Training on crops of box-annotated photos at their own resolution (`crop_size` > 0).

Counting tools for large photos (CSRNet, DM-Count, the CARPK baselines) train on crops at native
resolution and count whole images. So, for `data: carpk` or a labelled folder with a `boxes.csv`
(`countnet.boxes`), when `crop_size` > 0:

- train: `train_size` square crops of `crop_size` px, cut at random positions from the training
  photos at their own size (never resized). Every crop position of every photo is equally likely
  (a photo's share grows with its area). Each photo has a density target (`photo_density`):
  every box spreads one object over the photo as a Gaussian at its centre, `density_sigma` box
  sides wide, renormalised to 1 inside the photo (SAFECount's CARPK recipe). A crop carries its
  piece of that map, and its count is the map's sum over it: an object cut by the crop's edge
  counts by the share of it inside, so the crops of a tiling add up to the photo's count
  exactly, and no crop's label depends on which side of an edge a centre fell. The crops are
  drawn once per `data_seed`; the training loop shuffles (and, with `augment: dihedral`, flips
  map and crop alike) them each epoch.
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
MIN_SIGMA_PX = 1.0  # px: the narrowest Gaussian of a density target (a box of zero size)


def photo_density(boxes: np.ndarray, width: int, height: int, sigma: float) -> np.ndarray:
    """The density target (height, width) float32 of one photo: one unit of mass per box.

    Each box is a Gaussian at its centre with std `sigma` x its side (the geometric mean of its
    width and height, at least MIN_SIGMA_PX), sampled at the pixel centres and renormalised to 1
    over the photo, so the map sums to the number of boxes.

    Args:
        boxes: (K, 4) x0, y0, x1, y1 in px of the photo at its own size.
        width: the photo's width, px.
        height: the photo's height, px.
        sigma: the std in box sides (TrainConfig.density_sigma).
    """
    if len(boxes) == 0:
        return np.zeros((height, width), dtype=np.float32)
    c = centres(boxes)  # (K, 2)
    side = np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1],
                                                                          0))
    std = np.maximum(sigma * side, MIN_SIGMA_PX)[:, None]  # (K, 1) px
    gx = np.exp(-0.5 * ((np.arange(width) + 0.5 - c[:, :1]) / std) ** 2)  # (K, W)
    gy = np.exp(-0.5 * ((np.arange(height) + 0.5 - c[:, 1:]) / std) ** 2)  # (K, H)
    # Each factor sums to 1 over the photo, so each object's mass is 1 whatever its position.
    gx /= np.maximum(gx.sum(1, keepdims=True), 1e-30)
    gy /= np.maximum(gy.sum(1, keepdims=True), 1e-30)
    return (gy.T @ gx).astype(np.float32)  # (H, W): the sum over k of outer(gy_k, gx_k)


def draw_crops(photos: list[Photo], n: int, size: int, channels: int, seed: int,
               sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`n` random crops (n, C, size, size) float32, their counts (n,) and their density
    targets (n, 1, size, size), in random order.

    Each photo is decoded once, at its own size, and its crops are cut from it and from its
    density target (`photo_density`); a crop's count is its target's sum.

    Args:
        photos: the training photos with their boxes.
        n: number of crops.
        size: side of a crop, px; every photo must be at least this large.
        channels: 1 (grey) or 3 (RGB).
        seed: the crops' seed (positions, shares per photo, order).
        sigma: the density target's std in box sides (TrainConfig.density_sigma).

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
    density = torch.empty((n, 1, size, size), dtype=torch.float32)
    i = 0
    for photo, (width, height), k in zip(photos, sizes, per_photo.tolist()):
        if k == 0:
            continue
        image = _read(photo, channels)  # (C, H, W)
        _check_centres(photo, width, height)
        target = torch.from_numpy(photo_density(photo.boxes, width, height, sigma))  # (H, W)
        lefts = rng.integers(0, width - size + 1, size=k)
        tops = rng.integers(0, height - size + 1, size=k)
        for left, top in zip(lefts.tolist(), tops.tolist()):
            x[i] = image[:, top:top + size, left:left + size]
            density[i, 0] = target[top:top + size, left:left + size]
            i += 1
    order = torch.from_numpy(rng.permutation(n))
    density = density[order]
    return x[order], density.sum((1, 2, 3)), density


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
    """train_x (train_size, C, crop, crop), train_y, val_x (M, C, H, W), val_y and
    train_density (train_size, 1, crop, crop), on the CPU.

    Args:
        cfg: a config with crop_size > 0 and data carpk or folder (`validate` checks
            crop_size's range and data kind when the config is made).
    """
    root = Path(cfg.data_dir)
    train_x, train_y, train_density = draw_crops(
        training_photos(cfg), cfg.train_size, cfg.crop_size, cfg.channels, cfg.data_seed,
        cfg.density_sigma)
    if cfg.data == "carpk":
        val_folder, val_rows = root, carpk_split(root, "test")
    else:
        _, (val_folder, val_rows) = labelled_splits(root, cfg.val_fraction)
    return (train_x, train_y, *whole_images(val_folder, val_rows, cfg.channels), train_density)


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


def _check_centres(photo: Photo, width: int, height: int) -> None:
    """A box centre outside its photo is a DataError: no crop could hold that object."""
    box_centres = centres(photo.boxes)
    x, y = box_centres[:, 0], box_centres[:, 1]
    outside = ~((x >= 0) & (x < width) & (y >= 0) & (y < height))
    if outside.any():
        k = int(np.argmax(outside))
        raise DataError(f"{photo.where}: box {photo.boxes[k].tolist()} of {photo.path} has its "
                        f"centre outside the {width}x{height} px image")
