"""Write synthetic scenes to disk as PNG files plus `labels.csv` (filename,count)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from countnet.config import TrainConfig
from countnet.folder import LABELS_CSV
from countnet.scenes import render

WRITE_CHUNK = 256  # images rendered per call


def to_pil(image: torch.Tensor) -> Image.Image:
    """(C, H, W) float in [0, 1] -> an 8-bit grey or RGB PIL image."""
    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(arr[0]) if arr.shape[0] == 1 else Image.fromarray(np.moveaxis(arr, 0, 2))


def write_dataset(out_dir: str | Path, cfg: TrainConfig, n: int, seed: int) -> Path:
    """Render scenes 0..n-1 of `seed` to out_dir/scene_000000.png ... and out_dir/labels.csv.

    Args:
        out_dir: the folder to write (created if missing).
        cfg: a config whose scene fields shape the images.
        n: number of images.
        seed: the dataset seed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(n - 1)))
    with (out / LABELS_CSV).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filename", "count"])
        for start in range(0, n, WRITE_CHUNK):
            images, counts = render(cfg, seed, torch.arange(start, min(n, start + WRITE_CHUNK)))
            for i, (image, count) in enumerate(zip(images, counts.tolist()), start=start):
                name = f"scene_{i:0{width}d}.png"
                to_pil(image).save(out / name)
                writer.writerow([name, int(count)])
    return out / LABELS_CSV
