"""An independent renderer of counting scenes: Pillow ImageDraw, one image at a time.

It exists to test countnet's own generator (`countnet/scenes.py`) from the outside: a model that
only counts one program's rectangles has learned that program, not counting. So this file shares
no drawing code with scenes.py (and never imports it). It uses other tools on purpose:
- positions by rejection sampling with numpy's Generator, one object after another;
- drawing with PIL ImageDraw.rectangle, blur with PIL ImageFilter.GaussianBlur;
- noise from numpy, added to the float image, which is clipped to [0, 1] and saved as 8-bit PNG.

A scene is filled axis-aligned rectangles, height and width each drawn in
[min_object_size, max_object_size] px, anywhere in the image (touching its border is allowed),
never overlapping and at least `min_gap` px of background apart in the Chebyshev sense: a box grown
by min_gap on every side meets no other box. The label is the number of rectangles actually
placed: when rejection sampling gives up on one, it is neither drawn nor counted.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from countnet.folder import LABELS_CSV

MAX_TRIES = 500  # random positions tried per object before giving up on it
CHECK_BLOCK = 16  # candidate positions checked at a time (speed only: any value, same scenes)
NAME_DIGITS = 6  # image_000000.png ...


@dataclass(frozen=True)
class PilScene:
    """What one set of PIL-drawn scenes looks like. Each appearance value is drawn per image,
    uniformly in [min, max] (intensity units: the image is in [0, 1]).
    """

    image_size: int = 64  # px, square
    channels: int = 1  # 1 (grey) or 3 (the same grey value in R, G and B)
    min_count: int = 0  # rectangles per image, inclusive
    max_count: int = 20  # ... inclusive
    min_object_size: int = 3  # px, the shortest side
    max_object_size: int = 8  # px, the longest side; height and width drawn independently
    sizes_at_limits: bool = False  # each side is min_ or max_object_size, none between
    min_gap: int = 1  # px of background between any two rectangles
    background_min: float = 0.0  # background level, lowest (capped at 1 - contrast)
    background_max: float = 0.5  # ... highest
    contrast_min: float = 0.15  # object level minus background level, lowest
    contrast_max: float = 0.9  # ... highest
    jitter: float = 0.0  # +/- relative jitter of each rectangle's contrast
    gradient_max: float = 0.0  # largest rise of a linear background ramp across the image
    invert_prob: float = 0.0  # probability of dark objects on a light background (1 - image)
    noise_min: float = 0.0  # std of Gaussian pixel noise, lowest
    noise_max: float = 0.0  # ... highest
    blur_min: float = 0.0  # px, sigma of PIL's Gaussian blur, lowest (0 = no blur)
    blur_max: float = 0.0  # ... highest


def place_boxes(rng: np.random.Generator, scene: PilScene, count: int) -> np.ndarray:
    """Rejection-sample up to `count` boxes; returns (K, 4) int rows of (top, left, bottom, right),
    bottom and right exclusive, K <= count.

    Args:
        rng: the image's own generator (draws sizes, then positions, object by object).
        scene: sizes, gap and image size.
        count: how many boxes to try to place.
    """
    size, gap = scene.image_size, scene.min_gap
    boxes = np.zeros((0, 4), dtype=np.int64)
    for _ in range(count):
        if scene.sizes_at_limits:
            h, w = rng.choice([scene.min_object_size, scene.max_object_size], size=2)
        else:
            h, w = rng.integers(scene.min_object_size, scene.max_object_size + 1, size=2)
        # All tries of one object are drawn at once: (MAX_TRIES,) candidate corners, and the
        # first valid one wins. They are checked a block at a time (the first block usually
        # holds one), so that scenes of thousands of objects stay fast; the result is the same.
        top = rng.integers(0, size - h + 1, size=MAX_TRIES)
        left = rng.integers(0, size - w + 1, size=MAX_TRIES)
        for start in range(0, MAX_TRIES, CHECK_BLOCK):
            t, c = top[start:start + CHECK_BLOCK, None], left[start:start + CHECK_BLOCK, None]
            # (block, K) separation from every placed box, in rows and in columns: the
            # background between two boxes along an axis (negative when their spans overlap).
            row_gap = np.maximum(boxes[None, :, 0] - (t + h), t - boxes[None, :, 2])
            col_gap = np.maximum(boxes[None, :, 1] - (c + w), c - boxes[None, :, 3])
            ok = np.all(np.maximum(row_gap, col_gap) >= gap, axis=1)  # Chebyshev distance >= gap
            if ok.any():
                i = start + int(np.argmax(ok))
                boxes = np.vstack([boxes, [[top[i], left[i], top[i] + h, left[i] + w]]])
                break
    return boxes


def render_one(scene: PilScene, seed: int, index: int) -> tuple[Image.Image, int]:
    """One scene as an 8-bit PIL image ("L", or "RGB" for 3 channels) and its count.

    Args:
        scene: what the set looks like.
        seed: the set's seed; with `index` it fixes the image.
        index: the image's number in the set.
    """
    rng = np.random.default_rng([seed, index])
    size = scene.image_size
    count = int(rng.integers(scene.min_count, scene.max_count + 1))
    boxes = place_boxes(rng, scene, count)
    contrast = rng.uniform(scene.contrast_min, scene.contrast_max)
    background = min(rng.uniform(scene.background_min, scene.background_max), 1.0 - contrast)
    background = max(background, 0.0)

    # Background: a level plus a linear ramp in a random direction, (H, W) float32.
    rise = rng.uniform(0.0, scene.gradient_max)
    angle = rng.uniform(0.0, 2 * np.pi)
    rows, cols = np.mgrid[0:size, 0:size] / max(1, size - 1)
    ramp = np.cos(angle) * cols + np.sin(angle) * rows
    ramp = ramp - ramp.min()
    base = background + rise * ramp / max(float(ramp.max()), 1e-9)

    # Objects: each rectangle's contrast, drawn into a float ("F") layer added to the background.
    layer = Image.new("F", (size, size), 0.0)
    draw = ImageDraw.Draw(layer)
    for top, left, bottom, right in boxes.tolist():
        level = contrast * (1.0 + rng.uniform(-scene.jitter, scene.jitter))
        draw.rectangle([left, top, right - 1, bottom - 1], fill=float(level))  # inclusive corners
    image = np.clip(base + np.asarray(layer, dtype=np.float32), 0.0, 1.0)

    sigma = rng.uniform(scene.blur_min, scene.blur_max)
    if sigma > 0:
        # PIL blurs 8-bit images only: one 1/255 rounding before the blur, far below the noise.
        grey = Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L")
        image = np.asarray(grey.filter(ImageFilter.GaussianBlur(sigma)), dtype=np.float32) / 255
    if rng.random() < scene.invert_prob:
        image = 1.0 - image
    noise = rng.uniform(scene.noise_min, scene.noise_max)
    if noise > 0:
        image = image + rng.normal(0.0, noise, size=image.shape)
    pixels = np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)  # (H, W)
    if scene.channels == 3:
        return Image.fromarray(np.repeat(pixels[:, :, None], 3, axis=2), mode="RGB"), len(boxes)
    return Image.fromarray(pixels, mode="L"), len(boxes)


def write_pil_set(out_dir: str | Path, scene: PilScene, n: int, seed: int) -> Path:
    """Render scenes 0..n-1 of `seed` to out_dir/image_000000.png ... and out_dir/labels.csv.

    Args:
        out_dir: folder to write (created if missing).
        scene: what the set looks like.
        n: number of images.
        seed: the set's seed.

    Returns:
        The path of labels.csv (header `filename,count`).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    width = max(NAME_DIGITS, len(str(n - 1)))
    with (out / LABELS_CSV).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "count"])
        for i in range(n):
            image, count = render_one(scene, seed, i)
            name = f"image_{i:0{width}d}.png"
            image.save(out / name)
            writer.writerow([name, count])
    return out / LABELS_CSV
