"""Training on crops of box-annotated photos: crop counts at the edges, crops cut from real PNG
files, whole photos to validate, and `countnet train` + `evaluate` on a CARPK-layout fixture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from countnet.boxes import Photo
from countnet.cli import main
from countnet.config import TrainConfig
from countnet.crops import draw_crops, load_crop_splits, photo_density
from countnet.datasets import load_splits
from countnet.errors import DataError
from countnet.train import density_region_loss, fit
from tests.countnet.photos import PHOTO_SIZE, draw_photo, write_box_folder, write_carpk


def test_a_photo_density_holds_one_unit_per_box_wherever_the_box_is() -> None:
    # One box in the middle, one against the corner: the Gaussian is renormalised inside the photo.
    boxes = np.array([[40.0, 30.0, 56.0, 46.0], [0.0, 0.0, 6.0, 4.0], [70.0, 50.0, 70.0, 50.0]])
    density = photo_density(boxes, width=100, height=80, sigma=0.25)
    assert density.shape == (80, 100) and (density >= 0).all()
    assert density.sum() == pytest.approx(3.0, abs=1e-4)
    # The mass sits at the centres: the middle box's peak is at (48, 38).
    row, col = np.unravel_index(np.argmax(density[20:50, 30:60]), (30, 30))
    assert (row + 20, col + 30) in {(37, 47), (37, 48), (38, 47), (38, 48)}
    assert photo_density(np.zeros((0, 4)), 10, 8, 0.25).sum() == 0


def test_crops_of_a_tiling_add_up_to_the_photo_count() -> None:
    # An object cut by a crop's edge counts by the share of it inside: no centre-side ambiguity.
    rng = np.random.default_rng(0)
    corners = rng.uniform(4, 52, size=(30, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(3, 8, size=(30, 2))], axis=1)
    density = photo_density(boxes, width=64, height=64, sigma=0.25)
    tiles = [density[top:top + 32, left:left + 32].sum() for left in (0, 32) for top in (0, 32)]
    assert sum(tiles) == pytest.approx(30.0, abs=1e-3)
    assert any(abs(t - round(t)) > 0.05 for t in tiles)  # some objects straddle an edge


def _coordinate_photo(path: Path, width: int = 120, height: int = 90) -> None:
    """An RGB photo whose red channel is the column and green the row of each pixel."""
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    Image.fromarray(np.stack([cols, rows, np.zeros_like(cols)], axis=2).astype(np.uint8),
                    mode="RGB").save(path)


def test_crops_are_cut_at_native_size_with_their_piece_of_the_density(tmp_path) -> None:
    _coordinate_photo(tmp_path / "p.png")
    rng = np.random.default_rng(1)
    corners = rng.uniform([0, 0], [110, 80], size=(150, 2))
    sides = rng.uniform(2, 8, size=(150, 2))
    boxes = np.concatenate([corners, corners + sides], axis=1)  # x0, y0, x1, y1
    photos = [Photo(tmp_path / "p.png", boxes, "test")]
    x, y, density = draw_crops(photos, n=64, size=40, channels=3, seed=5, sigma=0.25)
    assert x.shape == (64, 3, 40, 40) and y.shape == (64,) and density.shape == (64, 1, 40, 40)
    whole = photo_density(boxes, 120, 90, 0.25)
    for crop, count, piece in zip(x, y, density):
        left, top = round(float(crop[0, 0, 0]) * 255), round(float(crop[1, 0, 0]) * 255)
        cols = np.round(crop[0].numpy() * 255)  # at native size: one column per px, never resized
        assert (cols == np.arange(left, left + 40)[None, :]).all()
        assert np.array_equal(piece[0].numpy(), whole[top:top + 40, left:left + 40])
        assert float(count) == pytest.approx(float(piece.sum()), rel=1e-5)
    # Drawn once per seed: the same seed gives the same crops, another seed others.
    again, _, _ = draw_crops(photos, n=64, size=40, channels=3, seed=5, sigma=0.25)
    other, _, _ = draw_crops(photos, n=64, size=40, channels=3, seed=6, sigma=0.25)
    assert (again == x).all() and not (other == x).all()


def test_a_photo_smaller_than_a_crop_or_a_centre_outside_is_named(tmp_path) -> None:
    _coordinate_photo(tmp_path / "p.png", 50, 30)
    with pytest.raises(DataError, match=r"row 1: .*p\.png is 50x30 px, smaller than crop_size 40"):
        draw_crops([Photo(tmp_path / "p.png", np.zeros((0, 4)), "row 1")], 4, 40, 1, 0, 0.25)
    outside = Photo(tmp_path / "p.png", np.array([[45.0, 5.0, 56.0, 9.0]]), "row 2")
    with pytest.raises(DataError, match=r"row 2: box .* has its centre outside the 50x30 px"):
        draw_crops([outside], 4, 20, 1, 0, 0.25)


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
    x, _, vx, vy, density = load_crop_splits(cfg)
    assert x.shape == (16, 1, 48, 48) and vx.shape[2:] == (PHOTO_SIZE[1], PHOTO_SIZE[0])
    assert density.shape == (16, 1, 48, 48)
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


def test_the_density_loss_counts_misplaced_objects_the_count_loss_misses() -> None:
    target = torch.zeros(1, 1, 32, 32)
    target[0, 0, 4, 4] = 1.0  # one object in the top-left 8 px region
    moved = torch.zeros(1, 1, 16, 16)  # the model's map at stride 2: the object, bottom-right
    moved[0, 0, 12, 12] = 1.0
    assert density_region_loss(moved, target, cell_px=8).item() == pytest.approx(2.0)
    same = torch.nn.functional.avg_pool2d(target, 2) * 4  # the target at stride 2, mass kept
    assert density_region_loss(same, target, cell_px=8).item() == pytest.approx(0.0)
    # One region as large as the crop: only the count is compared.
    assert density_region_loss(moved, target, cell_px=32).item() == pytest.approx(0.0)


def test_training_on_crops_with_the_density_loss_places_the_density_on_the_objects(
        tmp_path) -> None:
    # The same crops, seed and steps: with the density loss the map's mass sits on the boxes.
    rng = np.random.default_rng(3)
    root = write_box_folder(tmp_path / "photos", [draw_photo(rng) for _ in range(8)])
    base = {"data": "folder", "data_dir": str(root), "crop_size": 32, "train_size": 512,
            "val_fraction": 0.4, "width": 8, "depth": 3, "epochs": 4, "threads": 1,
            "precision": "fp32", "ema_epochs": 0.0, "lr": 2e-3}
    splits = load_splits(TrainConfig(**base))
    x, target = splits.train_x[:64], splits.train_density[:64]
    on_objects = {}
    for weight in (0.0, 4.0):
        model = fit(TrainConfig(**base, density_loss=weight)).model.eval()
        with torch.no_grad():
            dmap = model.density_map(x)  # (64, 1, 16, 16)
        near = torch.nn.functional.avg_pool2d(target, 2) > 1e-3  # (64, 1, 16, 16)
        on_objects[weight] = (dmap * near).sum().item() / max(dmap.sum().item(), 1e-9)
    # Measured: 0.21 of the mass near an object without the density loss, 0.54 with it.
    assert on_objects[4.0] > on_objects[0.0] + 0.15
