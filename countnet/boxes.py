"""Box annotations of photos: a labelled folder's `boxes.csv`, and CARPK's annotation files.

This module owns the `boxes.csv` format (CARPK's `Annotations/*.txt` stay with `countnet.folder`,
which owns that layout). A labelled folder whose photos are box-annotated holds, next to its
`labels.csv` (filename,count):

    boxes.csv       one row per box: filename,x0,y0,x1,y1 (a header row of these names is optional)

- `filename` is the image as labels.csv names it (relative to the folder, never leaving it);
- `x0, y0, x1, y1` are the box's left, top, right and bottom edges in pixels of the image at its
  own size: x to the right and y down from the top-left corner of the image, where pixel (i, j)
  covers [i, i + 1) x [j, j + 1). Finite, x0 <= x1 and y0 <= y1; fractions are allowed;
- an image without objects has no row; every image's number of rows must equal its labels.csv
  count (a mismatch names both files).

A box gives its object a place and a size: `countnet.crops` spreads one unit of mass around its
centre ((x0 + x1) / 2, (y0 + y1) / 2), as wide as the box, and a crop counts the mass inside it.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from countnet.errors import DataError
from countnet.folder import (
    LABELS_CSV,
    MAX_COUNT,
    Row,
    carpk_annotation,
    carpk_split,
    check_inside,
    read_carpk_boxes,
    read_labels_csv,
    read_text,
)

BOXES_CSV = "boxes.csv"
BOX_COLUMNS = ("filename", "x0", "y0", "x1", "y1")


class Photo(NamedTuple):
    """One box-annotated photo."""

    path: Path  # the image file
    boxes: np.ndarray  # (K, 4) float64 rows of x0, y0, x1, y1 in px of the image at its own size
    where: str  # the labels row or listing line that names it, for error messages


def centres(boxes: np.ndarray) -> np.ndarray:
    """Box centres (K, 2) as (x, y) in px, of boxes (K, 4) = x0, y0, x1, y1."""
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)


def read_boxes_csv(path: Path) -> dict[str, np.ndarray]:
    """{filename: boxes (K, 4) float64} of a boxes.csv; a bad row is a DataError naming its line.

    Args:
        path: the boxes.csv file.
    """
    if not path.is_file():
        raise DataError(f"{path}: missing (box-annotated folders need filename,x0,y0,x1,y1 rows "
                        f"next to labels.csv)")
    reader = csv.reader(io.StringIO(read_text(path), newline=""), strict=True)
    boxes: dict[str, list[list[float]]] = {}
    total = 0
    try:
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if not row or (reader.line_num == 1 and row[0].strip().lower() == BOX_COLUMNS[0]):
                continue
            if len(row) != len(BOX_COLUMNS) or not row[0].strip():
                raise DataError(f"{where}: expected '{','.join(BOX_COLUMNS)}', got {row!r}")
            name = check_inside(row[0].strip(), where)
            boxes.setdefault(name, []).append(_box(row[1:], where))
            total += 1
            if total > MAX_COUNT * 100:  # 10 M boxes: far beyond any real annotation
                raise DataError(f"{path}: more than {MAX_COUNT * 100} boxes")
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None
    return {name: np.array(rows, dtype=np.float64) for name, rows in boxes.items()}


def _box(fields: list[str], where: str) -> list[float]:
    """x0, y0, x1, y1 of one row: finite numbers with x0 <= x1 and y0 <= y1."""
    try:
        x0, y0, x1, y1 = (float(f) for f in fields)
    except ValueError:
        raise DataError(f"{where}: box coordinates must be numbers, got {fields!r}") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise DataError(f"{where}: box coordinates must be finite, got {fields!r}")
    if x1 < x0 or y1 < y0:
        raise DataError(f"{where}: box needs x0 <= x1 and y0 <= y1, got {fields!r}")
    return [x0, y0, x1, y1]


def folder_photos(folder: Path, rows: list[Row]) -> list[Photo]:
    """The photos of labels rows with their boxes from `folder/boxes.csv`.

    Args:
        folder: the folder holding labels.csv, boxes.csv and the images.
        rows: rows of its labels.csv (`countnet.folder.read_labels_csv`), all or one split.

    Raises:
        DataError: no boxes.csv, a bad row, a box for an image labels.csv does not name, or an
            image whose number of boxes differs from its count.
    """
    table = read_boxes_csv(folder / BOXES_CSV)
    named = {r.name for r in read_labels_csv(folder / LABELS_CSV)}  # rows may be one split
    stray = sorted(set(table) - named)
    if stray:
        raise DataError(f"{folder / BOXES_CSV}: boxes for {stray[0]!r}, which labels.csv does "
                        f"not name ({len(stray)} such file(s))")
    photos = []
    for row in rows:
        boxes = table.get(row.name, np.zeros((0, 4)))
        if len(boxes) != row.count:
            raise DataError(f"{row.where}: count {row.count:g}, but {BOXES_CSV} holds "
                            f"{len(boxes)} box(es) for {row.name}")
        photos.append(Photo(folder / check_inside(row.name, row.where), boxes, row.where))
    return photos


def carpk_photos(root: Path, split: str) -> list[Photo]:
    """The photos of one CARPK split (`ImageSets/<split>.txt`) with their annotation boxes.

    Args:
        root: the CARPK root (Images/, Annotations/, ImageSets/).
        split: "train" or "test".
    """
    return [Photo(root / row.name, read_carpk_boxes(carpk_annotation(root, row)), row.where)
            for row in carpk_split(root, split)]
