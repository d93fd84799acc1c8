from __future__ import annotations

import pytest
from PIL import Image

from countnet.config import TrainConfig
from countnet.datasets import load_splits
from countnet.folder import DataError, load_carpk, load_labelled_folder, read_labels_csv


def _photo(path, size=(97, 53), colour=(10, 200, 30)) -> None:
    Image.new("RGB", size, colour).save(path)


def test_folder_of_any_size_is_resized(tmp_path) -> None:
    for i in range(20):
        _photo(tmp_path / f"p{i}.jpg", size=(40 + i, 90 - i))
    (tmp_path / "labels.csv").write_text("filename,count\n" + "".join(
        f"p{i}.jpg,{i}\n" for i in range(20)))
    tx, ty, vx, vy = load_labelled_folder(tmp_path, 32, 3, 0.3)
    assert tx.shape[1:] == (3, 32, 32) and vx.shape[1:] == (3, 32, 32)
    assert len(tx) + len(vx) == 20 and len(vx) > 0
    assert sorted(ty.tolist() + vy.tolist()) == [float(i) for i in range(20)]


def test_train_val_subfolders_via_config(tmp_path) -> None:
    for split, n in (("train", 6), ("val", 3)):
        (tmp_path / split).mkdir()
        for i in range(n):
            _photo(tmp_path / split / f"{i}.png")
        (tmp_path / split / "labels.csv").write_text("".join(f"{i}.png,{i}\n" for i in range(n)))
    cfg = TrainConfig(data="folder", data_dir=str(tmp_path), image_size=16)
    s = load_splits(cfg)
    assert s.train_x.shape == (6, 1, 16, 16) and s.val_y.tolist() == [0.0, 1.0, 2.0]


def test_carpk_layout_counts_boxes(tmp_path) -> None:
    for d in ("Images", "Annotations", "ImageSets"):
        (tmp_path / d).mkdir()
    names = {"train": ["a", "b"], "test": ["c"]}
    for split, items in names.items():
        (tmp_path / "ImageSets" / f"{split}.txt").write_text("\n".join(items) + "\n")
        for k, name in enumerate(items):
            _photo(tmp_path / "Images" / f"{name}.png", size=(120, 80))
            boxes = "".join(f"{j} {j} {j + 5} {j + 5} 1\n" for j in range(k + 2))
            (tmp_path / "Annotations" / f"{name}.txt").write_text(boxes)
    tx, ty, _, vy = load_carpk(tmp_path, 24, 3)
    assert ty.tolist() == [2.0, 3.0] and vy.tolist() == [2.0]
    assert tx.shape == (2, 3, 24, 24)


def test_malformed_row_names_file_and_row(tmp_path) -> None:
    (tmp_path / "labels.csv").write_text("filename,count\na.png,3\nb.png,many\n")
    with pytest.raises(DataError, match=r"labels\.csv:3: count 'many'"):
        read_labels_csv(tmp_path / "labels.csv")


def test_missing_and_undecodable_images_name_file_and_row(tmp_path) -> None:
    for split in ("train", "val"):
        (tmp_path / split).mkdir()
        _photo(tmp_path / split / "ok.png")
    (tmp_path / "val" / "labels.csv").write_text("ok.png,1\n")
    (tmp_path / "train" / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "train" / "labels.csv").write_text("ok.png,1\nbroken.png,1\n")
    with pytest.raises(DataError, match=r"labels\.csv:2: .*broken\.png: cannot decode"):
        load_labelled_folder(tmp_path, 16, 1, 0.5)
    (tmp_path / "train" / "labels.csv").write_text("gone.png,1\n")
    with pytest.raises(DataError, match=r"labels\.csv:1: .*gone\.png: missing"):
        load_labelled_folder(tmp_path, 16, 1, 0.5)


def test_carpk_missing_annotation_is_named(tmp_path) -> None:
    for d in ("Images", "Annotations", "ImageSets"):
        (tmp_path / d).mkdir()
    (tmp_path / "ImageSets" / "train.txt").write_text("a\n")
    _photo(tmp_path / "Images" / "a.png")
    with pytest.raises(DataError, match=r"train\.txt:1: annotation .*a\.txt is missing"):
        load_carpk(tmp_path, 16, 1)
