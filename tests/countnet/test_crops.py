"""Training on crops of box-annotated photos: crop counts at the edges, crops cut from real PNG
files, whole photos to validate, and `countnet train` + `evaluate` on a CARPK-layout fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from countnet.boxes import Photo
from countnet.cli import main
from countnet.config import TrainConfig
from countnet.crops import crop_count, draw_crops, load_crop_splits
from countnet.datasets import load_splits
from countnet.errors import DataError
from tests.countnet.photos import PHOTO_SIZE, draw_photo, write_box_folder, write_carpk


@pytest.mark.parametrize("x,y,inside", [
    (10.0, 20.0, True),  # the left and top edges belong to the crop
    (9.999, 20.0, False), (10.0, 19.999, False),
    (41.999, 51.999, True),  # just before the right and bottom edges
    (42.0, 30.0, False), (30.0, 52.0, False),  # the right and bottom edges belong to the next
])
def test_a_box_counts_when_its_centre_is_inside_the_crop(x, y, inside) -> None:
    # A crop of 32 px at left 10, top 20 covers [10, 42) x [20, 52).
    assert crop_count(np.array([[x, y]]), left=10, top=20, size=32) == int(inside)


def test_adjacent_crops_count_every_centre_once() -> None:
    rng = np.random.default_rng(0)
    centres = np.concatenate([rng.uniform(0, 64, size=(200, 2)),
                              np.array([[32.0, 5.0], [5.0, 32.0], [32.0, 32.0]])])  # on edges
    total = sum(crop_count(centres, left, top, 32) for left in (0, 32) for top in (0, 32))
    assert total == len(centres)


def _coordinate_photo(path: Path, width: int = 120, height: int = 90) -> None:
    """An RGB photo whose red channel is the column and green the row of each pixel."""
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    Image.fromarray(np.stack([cols, rows, np.zeros_like(cols)], axis=2).astype(np.uint8),
                    mode="RGB").save(path)


def test_crops_are_cut_at_native_size_and_count_the_centres_inside(tmp_path) -> None:
    _coordinate_photo(tmp_path / "p.png")
    rng = np.random.default_rng(1)
    corners = rng.uniform([0, 0], [118, 88], size=(150, 2))
    sides = rng.uniform(0, 2, size=(150, 2))
    boxes = np.concatenate([corners, corners + sides], axis=1)  # x0, y0, x1, y1
    photos = [Photo(tmp_path / "p.png", boxes, "test")]
    x, y = draw_crops(photos, n=64, size=40, channels=3, seed=5)
    assert x.shape == (64, 3, 40, 40) and y.shape == (64,)
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    for crop, count in zip(x, y):
        left, top = round(float(crop[0, 0, 0]) * 255), round(float(crop[1, 0, 0]) * 255)
        cols = np.round(crop[0].numpy() * 255)  # at native size: one column per px, never resized
        assert (cols == np.arange(left, left + 40)[None, :]).all()
        inside = ((centres[:, 0] >= left) & (centres[:, 0] < left + 40)
                  & (centres[:, 1] >= top) & (centres[:, 1] < top + 40))
        assert count == inside.sum()
    # Drawn once per seed: the same seed gives the same crops, another seed others.
    again, _ = draw_crops(photos, n=64, size=40, channels=3, seed=5)
    other, _ = draw_crops(photos, n=64, size=40, channels=3, seed=6)
    assert (again == x).all() and not (other == x).all()


def test_a_photo_smaller_than_a_crop_or_a_centre_outside_is_named(tmp_path) -> None:
    _coordinate_photo(tmp_path / "p.png", 50, 30)
    with pytest.raises(DataError, match=r"row 1: .*p\.png is 50x30 px, smaller than crop_size 40"):
        draw_crops([Photo(tmp_path / "p.png", np.zeros((0, 4)), "row 1")], 4, 40, 1, 0)
    outside = Photo(tmp_path / "p.png", np.array([[45.0, 5.0, 56.0, 9.0]]), "row 2")
    with pytest.raises(DataError, match=r"row 2: box .* has its centre outside the 50x30 px"):
        draw_crops([outside], 4, 20, 1, 0)


def test_carpk_crops_train_and_whole_photos_validate(tmp_path) -> None:
    root = write_carpk(tmp_path / "carpk", n_train=3, n_test=2)
    cfg = TrainConfig(data="carpk", data_dir=str(root), crop_size=32, train_size=40)
    splits = load_splits(cfg)
    width, height = PHOTO_SIZE
    assert splits.train_x.shape == (40, 1, 32, 32)
    assert splits.val_x.shape == (2, 1, height, width)  # whole photos, native size
    truth = [len((root / "Annotations" / f"test_{i:03d}.txt").read_text().splitlines())
             for i in range(2)]
    assert splits.val_y.tolist() == truth


def test_a_labelled_folder_with_boxes_trains_on_crops(tmp_path) -> None:
    rng = np.random.default_rng(2)
    root = write_box_folder(tmp_path / "photos", [draw_photo(rng) for _ in range(8)])
    cfg = TrainConfig(data="folder", data_dir=str(root), crop_size=48, train_size=16,
                      val_fraction=0.4)
    x, _, vx, vy = load_crop_splits(cfg)
    assert x.shape == (16, 1, 48, 48) and vx.shape[2:] == (PHOTO_SIZE[1], PHOTO_SIZE[0])
    assert len(vx) == len(vy) >= 1


def test_validation_photos_of_two_sizes_are_named(tmp_path) -> None:
    root = write_carpk(tmp_path / "carpk", n_train=1, n_test=2)
    Image.new("L", (100, 100)).save(root / "Images" / "test_001.png")
    (root / "Annotations" / "test_001.txt").write_text("")
    cfg = TrainConfig(data="carpk", data_dir=str(root), crop_size=32, train_size=4)
    with pytest.raises(DataError, match=r"test\.txt:2: .*100x100 px but .* 160x96 px"):
        load_crop_splits(cfg)


def test_train_then_evaluate_a_carpk_fixture_at_native_resolution(capsys, tmp_path) -> None:
    root = write_carpk(tmp_path / "carpk", n_train=4, n_test=3)
    flags = [f"--set={k}={v}" for k, v in {
        "data": "carpk", "data_dir": root, "crop_size": 32, "pool": "density", "width": 8,
        "depth": 3, "train_size": 128, "train_eval_size": 64, "epochs": 2, "batch_size": 32,
        "eval_batch_size": 2}.items()]
    assert main(["train", "--no-progress", "--out", str(tmp_path / "run"), *flags]) == 0
    capsys.readouterr()
    history = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    best = min(history, key=lambda h: h["val_loss"])
    # evaluate on the CARPK root (its test split): whole photos at native resolution, the very
    # figures the training loop validated the best checkpoint with.
    assert main(["evaluate", str(tmp_path / "run"), str(root), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["n"] == 3
    assert figures["mae"] == pytest.approx(best["val_mae"], rel=1e-4)
