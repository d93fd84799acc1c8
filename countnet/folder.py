"""Real photo folders: `labels.csv` (filename,count) + images, or the CARPK layout.

Images of any size are resized to the model's square input (`load_image`), or read at their own
size, optionally scaled (`load_native`). Every problem (a missing file, an image that cannot be
decoded, a malformed row) raises DataError naming the file and the row.

Untrusted folders are safe to read:
- text files must be UTF-8; `labels.csv` is parsed by the csv module in strict mode;
- a count is a whole number in [0, MAX_COUNT] (a float32 label of 1e39 would be inf);
- a file named by a row must stay inside the folder: absolute paths and `..` are refused
  (a symbolic link inside the folder is followed: whoever made the folder put it there);
- an image may hold at most MAX_IMAGE_PIXELS pixels, checked from its header before decoding.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import struct
import warnings
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import NamedTuple, TypeVar

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from countnet.errors import DataError

LABELS_CSV = "labels.csv"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# Largest count a label may hold. Far above any real scene, far below float32 trouble (a count is
# regressed with MSE in float32: 1e5 squared is still exact enough; 1e39 is inf).
MAX_COUNT = 100_000
# Decoded pixels per image (width x height): 64 MP, e.g. 8000 x 8000, below Pillow's own
# decompression-bomb limit (89 MP). A bigger header is refused before anything is decoded.
MAX_IMAGE_PIXELS = 64_000_000
# Errors Pillow raises for a truncated or malformed file (its plugins use all of these).
DECODE_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
                 struct.error)


T = TypeVar("T")


class Row(NamedTuple):
    name: str  # image file name, relative to the labels file
    count: float
    where: str  # "labels.csv:LINE", for error messages


def read_text(path: Path) -> str:
    """A UTF-8 text file (a BOM is dropped); a byte that is not UTF-8 is named by its line."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset "
                        f"{e.start}); save the file as UTF-8") from None


def check_inside(name: str, where: str) -> str:
    """`name` as given, when it is a relative path that stays inside its folder."""
    if "\x00" in name:
        raise DataError(f"{where}: file name {name!r} holds a NUL character")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or windows.root:
        raise DataError(f"{where}: file name {name!r} is absolute; names must be relative to "
                        f"the dataset folder")
    if ".." in posix.parts or ".." in windows.parts:
        raise DataError(f"{where}: file name {name!r} leaves the dataset folder ('..' is not "
                        f"allowed)")
    return name


def parse_count(text: str, where: str) -> float:
    """A label count: a whole number in [0, MAX_COUNT], as float."""
    try:
        count = float(text)
    except ValueError:
        raise DataError(f"{where}: count {text!r} is not a number") from None
    if not math.isfinite(count):
        raise DataError(f"{where}: count {text!r} is not finite")
    if count < 0:
        raise DataError(f"{where}: count {text!r} is negative")
    if not count.is_integer():
        raise DataError(f"{where}: count {text!r} is not a whole number")
    if count > MAX_COUNT:
        raise DataError(f"{where}: count {text!r} is above the maximum of {MAX_COUNT}")
    return count


def read_labels_csv(path: Path) -> list[Row]:
    """Rows of `filename,count` (a header row `filename,count` is optional)."""
    if not path.is_file():
        raise DataError(f"{path}: missing (expected filename,count rows)")
    reader = csv.reader(io.StringIO(read_text(path), newline=""), strict=True)
    rows: list[Row] = []
    first = True
    try:
        for row in reader:
            lineno = reader.line_num  # the physical line, also for quoted multi-line fields
            is_header = first and bool(row) and row[0].strip().lower() == "filename"
            first = False
            if not row or is_header:
                continue
            where = f"{path}:{lineno}"
            if len(row) != 2 or not row[0].strip():
                raise DataError(f"{where}: expected 'filename,count', got {row!r}")
            name = check_inside(row[0].strip(), where)
            rows.append(Row(name, parse_count(row[1].strip(), where), where))
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def load_image(path: Path, image_size: int, channels: int) -> torch.Tensor:
    """One image as (C, H, W) float32 in [0, 1], resized to image_size x image_size."""
    return _read(path, lambda im: _pixels(im, channels, (image_size, image_size)))


def scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) of an image resized by `scale`: each side rounded, at least 1 px."""
    return max(1, round(width * scale)), max(1, round(height * scale))


def load_native(path: Path, channels: int, scale: float = 1.0) -> torch.Tensor:
    """One image as (C, H, W) float32 in [0, 1] at its own size, or resized by `scale` first.

    Args:
        path: the image file.
        channels: 1 (grey) or 3 (RGB).
        scale: resize factor (> 0); H and W become round(H * scale) and round(W * scale).

    Raises:
        DataError: a missing or undecodable file, or more than MAX_IMAGE_PIXELS pixels in the
            file or after scaling (checked before decoding).
    """
    return _read(path, lambda im: _pixels(im, channels, _scaled(path, im.size, scale)))


def native_size(path: Path, scale: float = 1.0) -> tuple[int, int]:
    """(width, height) that `load_native` would give, read from the header only: the same
    checks (missing, not an image, over the pixel limit), nothing decoded."""
    return _read(path, lambda im: _scaled(path, im.size, scale))


def _scaled(path: Path, size: tuple[int, int], scale: float) -> tuple[int, int]:
    """`scaled_size`, refused when it is over MAX_IMAGE_PIXELS."""
    width, height = size
    new = scaled_size(width, height, scale)
    if new[0] * new[1] > MAX_IMAGE_PIXELS:
        raise DataError(f"{path}: {width}x{height} px scaled by {scale:g} is {new[0]}x{new[1]} "
                        f"px, over the limit of {MAX_IMAGE_PIXELS} pixels")
    return new


def _pixels(im: Image.Image, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """Decode an opened image to (C, H, W) float32 in [0, 1], resized to size = (W, H)."""
    im = im.convert("L" if channels == 1 else "RGB")
    if size != im.size:
        im = im.resize(size, Image.BILINEAR)
    t = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0)
    return t[None] if channels == 1 else t.permute(2, 0, 1)


def _read(path: Path, use: Callable[[Image.Image], T]) -> T:
    """use(opened image), after checking its size against MAX_IMAGE_PIXELS from the header
    (nothing decoded yet); every failure is a DataError naming the file."""
    try:
        with warnings.catch_warnings():
            # Pillow warns between its limit and twice it; MAX_IMAGE_PIXELS refuses those anyway.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            width, height = im.size  # from the header: nothing decoded yet
            if width * height > MAX_IMAGE_PIXELS:
                raise DataError(f"{path}: {width}x{height} px is over the limit of "
                                f"{MAX_IMAGE_PIXELS} decoded pixels")
            return use(im)
    except FileNotFoundError:
        raise DataError(f"{path}: missing") from None
    except DataError:  # a ValueError too: keep it from the generic clause below
        raise
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: over Pillow's decompression-bomb limit ({e})") from None
    except DECODE_ERRORS as e:
        raise DataError(f"{path}: cannot decode image ({e})") from None


def load_rows(root: Path, rows: list[Row], image_size: int,
              channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) and counts (N,); an unreadable image names its labels row too."""
    images = []
    for row in rows:
        try:
            # Rows from elsewhere than read_labels_csv get the same containment check.
            images.append(load_image(root / check_inside(row.name, row.where), image_size,
                                     channels))
        except DataError as e:
            raise DataError(f"{row.where}: {e}") from None
    return torch.stack(images), torch.tensor([r.count for r in rows], dtype=torch.float32)


def in_val(name: str, val_fraction: float) -> bool:
    """A stable train/val assignment by filename hash: adding files never moves the others."""
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return h / 2.0**64 < val_fraction


def labelled_splits(root: Path, val_fraction: float) -> tuple[tuple[Path, list[Row]], ...]:
    """((train folder, train rows), (val folder, val rows)) of a labelled folder.

    `root/{train,val}/labels.csv` when both exist; else one `root/labels.csv`, whose files are
    split by filename hash (`val_fraction` go to val).
    """
    if (root / "train" / LABELS_CSV).is_file() and (root / "val" / LABELS_CSV).is_file():
        return tuple((root / split, read_labels_csv(root / split / LABELS_CSV))
                     for split in ("train", "val"))
    rows = read_labels_csv(root / LABELS_CSV)
    train = [r for r in rows if not in_val(r.name, val_fraction)]
    val = [r for r in rows if in_val(r.name, val_fraction)]
    if not train or not val:
        raise DataError(f"{root / LABELS_CSV}: {len(rows)} rows give an empty train or val split "
                        f"at val_fraction={val_fraction}")
    return (root, train), (root, val)


def load_labelled_folder(root: Path, image_size: int, channels: int,
                         val_fraction: float) -> tuple[torch.Tensor, ...]:
    """train_x, train_y, val_x, val_y of `labelled_splits`, resized to image_size."""
    out: list[torch.Tensor] = []
    for folder, rows in labelled_splits(root, val_fraction):
        out += load_rows(folder, rows, image_size, channels)
    return tuple(out)


def count_boxes(ann: Path) -> int:
    """The number of boxes of a CARPK annotation file (`read_carpk_boxes`)."""
    return len(read_carpk_boxes(ann))


def read_carpk_boxes(ann: Path) -> np.ndarray:
    """The boxes of a CARPK annotation file, (K, 4) float64 rows of x0, y0, x1, y1 in px.

    Each non-empty line holds >= 4 finite numbers: `x0 y0 x1 y1 [class]`, as CARPK writes them.
    """
    boxes: list[list[float]] = []
    for box_line, text in enumerate(read_text(ann).splitlines(), start=1):
        fields = text.split()
        if not fields:
            continue
        where = f"{ann}:{box_line}"
        if len(fields) < 4:
            raise DataError(f"{where}: a box needs 4 numbers: {text!r}")
        try:
            values = [float(v) for v in fields[:4]]
        except ValueError:
            raise DataError(f"{where}: not a box: {text!r}") from None
        if not all(math.isfinite(v) for v in values):
            raise DataError(f"{where}: box coordinates must be finite: {text!r}")
        boxes.append(values)
        if len(boxes) > MAX_COUNT:
            raise DataError(f"{ann}: more than the maximum of {MAX_COUNT} boxes")
    return np.array(boxes, dtype=np.float64).reshape(-1, 4)


def carpk_split(root: Path, split: str) -> list[Row]:
    """CARPK: `ImageSets/<split>.txt` names, `Images/<name>.png`, `Annotations/<name>.txt` boxes."""
    listing = root / "ImageSets" / f"{split}.txt"
    if not listing.is_file():
        raise DataError(f"{listing}: missing (CARPK layout needs ImageSets/{{train,test}}.txt)")
    rows: list[Row] = []
    for lineno, line in enumerate(read_text(listing).splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        where = f"{listing}:{lineno}"
        check_inside(name, where)  # names become paths under Images/ and Annotations/
        image = next((root / "Images" / f"{name}{s}" for s in IMAGE_SUFFIXES
                      if (root / "Images" / f"{name}{s}").is_file()), None)
        if image is None:
            raise DataError(f"{where}: no image Images/{name}.* for this row")
        ann = root / "Annotations" / f"{name}.txt"
        if not ann.is_file():
            raise DataError(f"{where}: annotation {ann} is missing")
        rows.append(Row(image.relative_to(root).as_posix(), float(count_boxes(ann)), where))
    if not rows:
        raise DataError(f"{listing}: no rows")
    return rows


def carpk_annotation(root: Path, row: Row) -> Path:
    """The `Annotations/<name>.txt` file of a `carpk_split` row (whose image is Images/<name>.*)."""
    name = PurePosixPath(row.name).relative_to("Images").with_suffix("")
    return root / "Annotations" / f"{name}.txt"


def is_carpk(root: Path) -> bool:
    """Whether `root` is laid out like CARPK (it has ImageSets/test.txt)."""
    return (root / "ImageSets" / "test.txt").is_file()


def load_carpk(root: Path, image_size: int, channels: int) -> tuple[torch.Tensor, ...]:
    """train_x, train_y, val_x, val_y: CARPK's train split, and its test split as validation."""
    out: list[torch.Tensor] = []
    for split in ("train", "test"):
        out += load_rows(root, carpk_split(root, split), image_size, channels)
    return tuple(out)
