"""The independent PIL renderer, checked from its PNG files alone (never its coordinates)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from countnet.pil_render import PilScene, write_pil_set
from tests.countnet.components import components

N = 40  # images per set: enough to reach every border and the closest allowed gaps
# Clean scenes: one flat background and one object level per image, so a pixel is an object
# pixel exactly when it differs from the image's most common value (the background).
CLEAN = PilScene(image_size=48, min_count=0, max_count=14, min_object_size=2, max_object_size=7,
                 background_min=0.0, background_max=0.5, contrast_min=0.15, contrast_max=0.9)


def read_set(labels: Path) -> list[tuple[np.ndarray, int]]:
    """(pixels (H, W) or (H, W, 3) uint8, label) per row of a labels.csv."""
    with labels.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [(np.asarray(Image.open(labels.parent / name)), int(count)) for name, count in rows]


def object_mask(pixels: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels that are not the background level."""
    background = np.bincount(pixels.ravel(), minlength=256).argmax()
    return pixels != background


def boxes_of(pixels: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (top, left, bottom, right) of the objects; each must be a filled rectangle."""
    out = []
    for top, left, bottom, right, n in components(object_mask(pixels)):
        assert n == (bottom - top) * (right - left), "a component is not a filled rectangle"
        out.append((top, left, bottom, right))
    return out


def chebyshev_gap(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Background px between two boxes along the axis where they are furthest apart."""
    rows = max(b[0] - a[2], a[0] - b[2])
    cols = max(b[1] - a[3], a[1] - b[3])
    return max(rows, cols)


@pytest.mark.parametrize("gap", [1, 3])
def test_labels_match_components_and_objects_keep_their_gap(tmp_path, gap) -> None:
    scene = PilScene(**{**CLEAN.__dict__, "min_gap": gap})
    images = read_set(write_pil_set(tmp_path, scene, N, seed=5))
    assert len(images) == N
    closest, labels = [], []
    for pixels, label in images:
        boxes = boxes_of(pixels)
        assert len(boxes) == label  # the label is what was drawn
        labels.append(label)
        for top, left, bottom, right in boxes:  # a merge of two objects would be too large
            assert scene.min_object_size <= bottom - top <= scene.max_object_size
            assert scene.min_object_size <= right - left <= scene.max_object_size
        gaps = [chebyshev_gap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]]
        assert all(g >= gap for g in gaps)
        closest += gaps
    assert min(closest) == gap  # objects do sit exactly min_gap apart
    assert len(set(labels)) > 5  # counts spread over the range


def test_objects_reach_every_border(tmp_path) -> None:
    touched = set()
    for pixels, _ in read_set(write_pil_set(tmp_path, CLEAN, N, seed=2)):
        for top, left, bottom, right in boxes_of(pixels):
            touched |= {side for side, hit in (("top", top == 0), ("left", left == 0),
                                               ("bottom", bottom == 48), ("right", right == 48))
                        if hit}
    assert touched == {"top", "left", "bottom", "right"}


def test_inverted_rgb_dense_scenes_at_the_size_limits(tmp_path) -> None:
    scene = PilScene(**{**CLEAN.__dict__, "channels": 3, "min_count": 10, "max_count": 10,
                        "invert_prob": 1.0, "sizes_at_limits": True})
    for pixels, label in read_set(write_pil_set(tmp_path, scene, 12, seed=9)):
        assert pixels.shape == (48, 48, 3)
        assert (pixels == pixels[:, :, :1]).all()  # grey: the same value in R, G and B
        grey = pixels[:, :, 0]
        boxes = boxes_of(grey)
        assert label == len(boxes) == 10
        background = np.bincount(grey.ravel()).argmax()
        assert (grey[object_mask(grey)] < background).all()  # dark objects on a light ground
        for top, left, bottom, right in boxes:
            assert {bottom - top, right - left} <= {2, 7}


def test_noise_blur_and_seeds(tmp_path) -> None:
    noisy = PilScene(**{**CLEAN.__dict__, "noise_min": 0.05, "noise_max": 0.05,
                        "blur_min": 1.0, "blur_max": 1.0})
    a = read_set(write_pil_set(tmp_path / "a", noisy, 4, seed=1))
    b = read_set(write_pil_set(tmp_path / "b", noisy, 4, seed=1))
    c = read_set(write_pil_set(tmp_path / "c", noisy, 4, seed=2))
    assert all((x == y).all() and lx == ly for (x, lx), (y, ly) in zip(a, b))  # reproducible
    assert not all((x == y).all() for (x, _), (y, _) in zip(a, c))  # seeds differ
    assert all(len(np.unique(x)) > 20 for x, _ in a)  # noise and blur did change the pixels
