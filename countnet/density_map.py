"""Density-map pictures: the model's per-position density over the photo, as a PNG.

This module owns the format of `countnet predict --density-map DIR`'s files, one per image:
`DIR/<image stem>.density.png`, RGB:
- the image as the model saw it (native, scaled or resized), in grey;
- over it, the density in a heat colour (red, through orange, to yellow at the image's largest
  density), more opaque where it is higher (none where it is 0), each position as a stride x
  stride px block at its place in the image;
- images whose shorter side is under MIN_SIDE px are enlarged by a whole factor (nearest), so
  a 64 px scene stays legible;
- the count (rounded, and the raw sum) in the top-left corner, on a black strip added above the
  image, so that it hides no object.
PNG text chunks record `count` (the raw count, = `density_sum`), `density_sum`, `density_max`
(the density drawn at full colour) and `stride` (input px per density position), so the colours
can be read back as numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

SUFFIX = ".density.png"
MIN_SIDE = 512  # px: smaller pictures are enlarged by a whole factor to at least this
HEAT_ALPHA = 0.8  # opacity of the heat colour at the largest density
LABEL_SHARE = 1 / 24  # height of the count's text as a share of the picture's height
MIN_FONT_PX = 14
BAND_ROWS = 256  # image rows rendered at a time: bounds the memory of a large picture


def map_path(out_dir: Path, image: Path) -> Path:
    """Where the density map of `image` goes in `out_dir`."""
    return out_dir / f"{image.stem}{SUFFIX}"


def heat(value: np.ndarray) -> np.ndarray:
    """Colours (..., 3) float in [0, 1] of values in [0, 1]: red, through orange, to yellow."""
    v = np.clip(value, 0.0, 1.0)[..., None]
    return np.concatenate([np.ones_like(v), v, np.zeros_like(v)], axis=-1)


def render(image: torch.Tensor, density: torch.Tensor, stride: int, raw: float) -> Image.Image:
    """The picture: the density (h, w) over the image (C, H, W) in [0, 1], the count on top.

    Args:
        image: the model's input image (C, H, W), C = 1 or 3.
        density: its density map (h, w), position (i, j) centred on pixel (stride i, stride j).
        stride: input px per density position.
        raw: the raw count (the density's sum).
    """
    height, width = image.shape[1:]
    d = density.float().cpu().numpy()  # (h, w)
    top = float(d.max()) if d.size else 0.0
    level_of_position = d / top if top > 0 else np.zeros_like(d)  # (h, w) in [0, 1]
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    # In bands of rows, so that a 4096 px photo's float temporaries stay small.
    for row in range(0, height, BAND_ROWS):
        end = min(height, row + BAND_ROWS)
        grey = image[:, row:end].float().mean(0).cpu().numpy()  # (rows, W)
        # Each position as a stride x stride block, cut or padded with 0 to the image's size.
        first = row // stride  # the positions of these rows only
        level = np.repeat(np.repeat(level_of_position[first:-(-end // stride)], stride, axis=0),
                          stride, axis=1)[row - first * stride:end - first * stride, :width]
        level = np.pad(level, ((0, end - row - level.shape[0]), (0, width - level.shape[1])))
        alpha = (HEAT_ALPHA * np.sqrt(level))[..., None]  # faint densities stay visible
        band = (1 - alpha) * grey[..., None] + alpha * heat(level)  # (rows, W, 3)
        rgb[row:end] = np.round(np.clip(band, 0, 1) * 255).astype(np.uint8)
    picture = Image.fromarray(rgb, mode="RGB")
    factor = max(1, math.ceil(MIN_SIDE / max(1, min(height, width))))
    if factor > 1:
        picture = picture.resize((width * factor, height * factor), Image.NEAREST)
    return _labelled(picture, f"count {max(0, round(raw))} (sum {raw:.2f})")


def write(path: Path, image: torch.Tensor, density: torch.Tensor, stride: int,
          raw: float) -> Path:
    """Write `render`'s picture to `path` as PNG with its text chunks; returns `path`.

    Args:
        path: the PNG file to write (its folder must exist).
        image: the model's input image (C, H, W).
        density: its density map (h, w).
        stride: input px per density position.
        raw: the raw count.
    """
    info = PngImagePlugin.PngInfo()
    info.add_text("count", f"{raw:.6f}")
    info.add_text("density_sum", f"{float(density.double().sum()):.6f}")
    info.add_text("density_max", f"{float(density.max()) if density.numel() else 0.0:.6g}")
    info.add_text("stride", str(stride))
    render(image, density, stride, raw).save(path, pnginfo=info)
    return path


def _labelled(picture: Image.Image, text: str) -> Image.Image:
    """The picture below a black strip that holds `text` in white at its left."""
    size = max(MIN_FONT_PX, round(picture.height * LABEL_SHARE))
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: its small bitmap font
        font = ImageFont.load_default()
    left, top, right, bottom = ImageDraw.Draw(picture).textbbox((0, 0), text, font=font)
    pad = max(2, size // 4)
    strip = bottom - top + 2 * pad
    out = Image.new("RGB", (max(picture.width, right - left + 2 * pad), picture.height + strip))
    out.paste(picture, (0, strip))
    ImageDraw.Draw(out).text((pad - left, pad - top), text, fill=(255, 255, 255), font=font)
    return out
