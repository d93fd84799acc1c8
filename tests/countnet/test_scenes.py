from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from countnet.config import TrainConfig
from countnet.datasets import load_splits, split_seed, synthetic_split
from countnet.folder import read_labels_csv
from countnet.generate import write_dataset
from countnet.scenes import SceneSpec, render
from tests.countnet.components import components, count_filled_rectangles

THRESHOLD = 0.4  # between the background (<= 0.12 + noise) and the dimmest object (0.64)


def test_same_seed_same_images_other_seed_differs() -> None:
    spec = SceneSpec()
    a, ya = render(spec, 7, torch.arange(32))
    b, yb = render(spec, 7, torch.arange(32))
    c, _ = render(spec, 8, torch.arange(32))
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.equal(a, c)


def test_image_is_a_function_of_seed_and_index_only() -> None:
    """Batch composition and order change nothing."""
    spec = SceneSpec(distractors=3)
    full, y = render(spec, 3, torch.arange(40))
    picked, y2 = render(spec, 3, torch.tensor([39, 5, 17]))
    assert torch.equal(picked, full[[39, 5, 17]]) and torch.equal(y2, y[[39, 5, 17]])


def test_counts_span_the_range_and_sizes_vary() -> None:
    spec = SceneSpec(noise=0.0)
    x, y = render(spec, 0, torch.arange(2000))
    assert y.min() == 0 and y.max() == 20
    assert set(y.long().tolist()) == set(range(21))
    # Lit pixels alone do not give the count: objects have different areas.
    lit = (x > THRESHOLD).sum((1, 2, 3)).float()
    per_object = lit[y > 0] / y[y > 0]
    assert per_object.std() > 3.0


@pytest.mark.parametrize("channels,distractors", [(1, 0), (1, 4), (3, 3)])
def test_labels_match_independent_count_of_png_files(tmp_path, channels, distractors) -> None:
    spec = SceneSpec(channels=channels, distractors=distractors, noise=0.03)
    write_dataset(tmp_path, spec, 40, seed=11)
    rows = read_labels_csv(tmp_path / "labels.csv")
    assert len(rows) == 40
    frames_seen = 0
    for name, count, _ in rows:
        img = np.asarray(Image.open(tmp_path / name)).astype(np.float32) / 255.0
        assert img.shape == ((64, 64) if channels == 1 else (64, 64, 3))
        mask = (img if channels == 1 else img.max(axis=2)) > THRESHOLD
        assert count_filled_rectangles(mask) == count, name
        frames_seen += len(components(mask)) - int(count)
    assert (frames_seen > 0) == (distractors > 0)


def test_objects_never_overlap_or_touch() -> None:
    spec = SceneSpec(noise=0.0, min_count=20, max_count=20, distractors=4, jitter=0.0)
    x, y = render(spec, 5, torch.arange(50))
    for img, n in zip(x[:, 0].numpy(), y.tolist()):
        comps = components(img > THRESHOLD)
        filled = [c for c in comps if c[4] == (c[2] - c[0]) * (c[3] - c[1])]
        assert len(filled) == n == 20  # merged objects would show as fewer, larger components


def test_scene_that_cannot_fit_is_rejected() -> None:
    with pytest.raises(ValueError, match="image_size"):
        render(SceneSpec(image_size=32, max_count=30), 0, torch.arange(2))


def _hashes(x: torch.Tensor) -> set[str]:
    return {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in x}


def test_splits_are_disjoint() -> None:
    spec = SceneSpec()
    seeds = {split_seed(d, s) for d in range(5) for s in ("train", "val", "test")}
    assert len(seeds) == 15
    parts = {s: _hashes(synthetic_split(spec, 0, s, 500, "cpu")[0])
             for s in ("train", "val", "test")}
    assert all(len(h) == 500 for h in parts.values())
    assert not parts["train"] & parts["val"]
    assert not parts["train"] & parts["test"]
    assert not parts["val"] & parts["test"]


def test_load_splits_controls() -> None:
    cfg = TrainConfig(train_size=64, val_size=32)
    plain = load_splits(cfg)
    same = load_splits(cfg.replace(val_equals_train=True))
    assert torch.equal(same.val_x, plain.train_x[:32])
    assert torch.equal(same.val_y, plain.train_y[:32])
    shuffled = load_splits(cfg.replace(shuffle_labels=True))
    assert torch.equal(shuffled.train_x, plain.train_x)
    assert not torch.equal(shuffled.train_y, plain.train_y)
    assert sorted(shuffled.train_y.tolist()) == sorted(plain.train_y.tolist())
