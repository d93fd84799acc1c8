from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from countnet.config import ConfigError, TrainConfig
from countnet.datasets import load_splits, split_seed, synthetic_split
from countnet.folder import read_labels_csv
from countnet.generate import write_dataset
from countnet.scenes import render
from tests.countnet.components import components, count_filled_rectangles
from tests.countnet.images import PLAIN

THRESHOLD = 0.5  # between the plain background (0.1) and the plain objects (0.9)


def test_same_seed_same_images_other_seed_differs() -> None:
    cfg = TrainConfig()
    a, ya = render(cfg, 7, torch.arange(32))
    b, yb = render(cfg, 7, torch.arange(32))
    c, _ = render(cfg, 8, torch.arange(32))
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("layout", ["free", "grid"])
def test_image_is_a_function_of_seed_and_index_only(layout: str) -> None:
    """Batch size, composition and order change nothing."""
    cfg = TrainConfig(layout=layout, distractors=3)
    full, y = render(cfg, 3, torch.arange(40))
    picked, y2 = render(cfg, 3, torch.tensor([39, 5, 17]))
    assert torch.equal(picked, full[[39, 5, 17]]) and torch.equal(y2, y[[39, 5, 17]])
    parts = [render(cfg, 3, torch.arange(a, b)) for a, b in ((0, 1), (1, 8), (8, 40))]
    assert torch.equal(torch.cat([x for x, _ in parts]), full)
    assert torch.equal(torch.cat([c for _, c in parts]), y)


def test_counts_span_the_range_and_sizes_vary() -> None:
    x, y = render(TrainConfig(**PLAIN), 0, torch.arange(2000))
    assert y.min() == 0 and y.max() == 20
    assert set(y.long().tolist()) == set(range(21))
    # Lit pixels alone do not give the count: objects have different areas.
    lit = (x > THRESHOLD).sum((1, 2, 3)).float()
    per_object = lit[y > 0] / y[y > 0]
    assert per_object.std() > 3.0


def test_appearance_varies_per_image() -> None:
    """Background, contrast and polarity change from image to image (no single look to learn)."""
    cfg = TrainConfig(noise_max=0.0, blur_max=0.0, gradient_max=0.0, min_count=1)
    x, _ = render(cfg, 0, torch.arange(500))
    flat = x.flatten(1)
    level = flat.median(1).values  # (N,) the background
    spread = flat.max(1).values - flat.min(1).values  # (N,) the contrast
    inverted = (level - flat.min(1).values) > (flat.max(1).values - level)  # dark objects
    assert level.std() > 0.1 and spread.std() > 0.1
    assert 0.1 < inverted.float().mean() < 0.3  # invert_prob 0.2


def _boxes(img: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    return components(img > THRESHOLD)


@pytest.mark.parametrize("min_gap,max_count", [(1, 20), (2, 12), (0, 20)])
def test_free_objects_never_overlap_and_keep_min_gap(min_gap: int, max_count: int) -> None:
    """From the rendered pixels: each object is its own filled component, min_gap px apart."""
    cfg = TrainConfig(**PLAIN, min_gap=min_gap, min_count=max_count, max_count=max_count)
    x, y = render(cfg, 5, torch.arange(60))
    for img, n in zip(x[:, 0].numpy(), y.tolist()):
        assert n == max_count  # the largest count always fits
        boxes = _boxes(img)
        if min_gap == 0:  # touching objects merge into one component: never more than n
            assert len(boxes) <= n
            continue
        assert len(boxes) == n and all(p == (b - t) * (r - lf) for t, lf, b, r, p in boxes)
        for i, (t1, l1, b1, r1, _) in enumerate(boxes):
            for t2, l2, b2, r2, _ in boxes[i + 1:]:
                gap = max(t2 - b1, t1 - b2, l2 - r1, l1 - r2)  # px of background between
                assert gap >= min_gap


@pytest.mark.parametrize("layout", ["free", "grid"])
def test_free_objects_reach_the_border_grid_objects_never(layout: str) -> None:
    x, _ = render(TrainConfig(**PLAIN, layout=layout), 2, torch.arange(300))
    lit = x[:, 0] > THRESHOLD  # (N, H, W)
    for edge in (lit[:, 0, :], lit[:, -1, :], lit[:, :, 0], lit[:, :, -1]):
        share = edge.any(1).float().mean()  # images with an object on this edge
        # Uniform positions: ~10 objects x 1/60 chance each to sit on a given edge.
        assert share > 0.05 if layout == "free" else share == 0


def test_grid_objects_never_touch() -> None:
    cfg = TrainConfig(**PLAIN, layout="grid", min_count=20, max_count=20, distractors=4)
    x, y = render(cfg, 5, torch.arange(50))
    for img, n in zip(x[:, 0].numpy(), y.tolist()):
        filled = [c for c in _boxes(img) if c[4] == (c[2] - c[0]) * (c[3] - c[1])]
        assert len(filled) == n == 20  # merged objects would show as fewer, larger components


@pytest.mark.parametrize("layout,channels,distractors",
                         [("free", 1, 0), ("free", 1, 4), ("free", 3, 3), ("grid", 1, 2)])
def test_labels_match_independent_count_of_png_files(tmp_path, layout, channels,
                                                     distractors) -> None:
    cfg = TrainConfig(**PLAIN, layout=layout, channels=channels, distractors=distractors)
    write_dataset(tmp_path, cfg, 40, seed=11)
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


@pytest.mark.parametrize("overrides", [{"image_size": 16}, {"layout": "grid", "image_size": 32,
                                                             "max_count": 30}])
def test_scene_that_cannot_fit_is_rejected_by_the_config(overrides) -> None:
    with pytest.raises(ConfigError, match=r"scene does not fit .*image_size"):
        TrainConfig(**overrides)


def _hashes(x: torch.Tensor) -> set[str]:
    return {hashlib.sha1(img.numpy().tobytes()).hexdigest() for img in x}


def test_splits_are_disjoint() -> None:
    spec = TrainConfig()
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
