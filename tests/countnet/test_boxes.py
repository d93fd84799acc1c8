"""Box annotations: boxes.csv (its rows, its errors, its agreement with labels.csv) and CARPK's."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from countnet.boxes import carpk_photos, folder_photos, read_boxes_csv
from countnet.errors import DataError
from countnet.folder import read_labels_csv
from tests.countnet.photos import write_carpk


def _folder(tmp_path, labels: str, boxes: str):
    for name in ("a.png", "b.png"):
        Image.new("L", (40, 30)).save(tmp_path / name)
    (tmp_path / "labels.csv").write_text(labels)
    (tmp_path / "boxes.csv").write_text(boxes)
    return read_labels_csv(tmp_path / "labels.csv")


def test_boxes_csv_gives_each_image_its_boxes(tmp_path) -> None:
    rows = _folder(tmp_path, "filename,count\na.png,2\nb.png,0\n",
                   "filename,x0,y0,x1,y1\na.png,1,2,5,6\na.png,10.5,3,12,4.5\n")
    photos = folder_photos(tmp_path, rows)
    assert [p.path.name for p in photos] == ["a.png", "b.png"]
    assert photos[0].boxes.tolist() == [[1, 2, 5, 6], [10.5, 3, 12, 4.5]]
    assert photos[1].boxes.shape == (0, 4)


@pytest.mark.parametrize("boxes,message", [
    ("a.png,1,2,5\n", r"boxes\.csv:1: expected 'filename,x0,y0,x1,y1'"),
    ("a.png,1,2,five,6\n", r"boxes\.csv:1: box coordinates must be numbers"),
    ("a.png,1,2,nan,6\n", r"boxes\.csv:1: box coordinates must be finite"),
    ("a.png,5,2,1,6\n", r"boxes\.csv:1: box needs x0 <= x1 and y0 <= y1"),
    ("../a.png,1,2,5,6\n", r"boxes\.csv:1: file name .* leaves the dataset folder"),
])
def test_a_bad_boxes_row_is_named_by_its_line(tmp_path, boxes, message) -> None:
    (tmp_path / "boxes.csv").write_text(boxes)
    with pytest.raises(DataError, match=message):
        read_boxes_csv(tmp_path / "boxes.csv")


def test_boxes_must_agree_with_labels(tmp_path) -> None:
    rows = _folder(tmp_path, "filename,count\na.png,2\nb.png,0\n", "a.png,1,2,5,6\n")
    with pytest.raises(DataError, match=r"labels\.csv:2: count 2, but boxes\.csv holds 1 box"):
        folder_photos(tmp_path, rows)
    rows = _folder(tmp_path, "filename,count\na.png,1\nb.png,0\n",
                   "a.png,1,2,5,6\nc.png,1,1,2,2\n")
    with pytest.raises(DataError, match=r"boxes for 'c\.png', which labels\.csv does not name"):
        folder_photos(tmp_path, rows)
    (tmp_path / "boxes.csv").unlink()
    with pytest.raises(DataError, match=r"boxes\.csv: missing"):
        folder_photos(tmp_path, rows)


def test_carpk_boxes_are_read_from_its_annotations(tmp_path) -> None:
    root = write_carpk(tmp_path, n_train=2, n_test=1)
    photos = carpk_photos(root, "train")
    assert [p.path.name for p in photos] == ["train_000.png", "train_001.png"]
    for photo in photos:
        lines = (root / "Annotations" / f"{photo.path.stem}.txt").read_text().splitlines()
        expected = np.array([[float(v) for v in line.split()[:4]] for line in lines])
        assert np.array_equal(photo.boxes, expected)
