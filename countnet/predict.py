"""Count objects in image files with a trained model (bundle, run dir or checkpoint). No Ray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from countnet.bundle import load_model
from countnet.folder import IMAGE_SUFFIXES, DataError, load_image
from countnet.train import pick_device, predict

PREDICT_BATCH = 64  # images per forward pass; bounds memory for large folders


def expand_paths(items: list[str | Path]) -> list[Path]:
    """Files as given, and the image files inside given directories (sorted)."""
    out: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            out += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            out.append(item)
        else:
            raise DataError(f"{item}: no such file or directory")
    return out


def count_images(model_path: str | Path, images: list[str | Path]) -> Iterator[tuple[Path, float]]:
    """Yield (path, raw predicted count) for every image, in order."""
    model, cfg = load_model(model_path)
    device = pick_device(cfg)
    model.to(device)
    paths = expand_paths(images)
    for start in range(0, len(paths), PREDICT_BATCH):
        chunk = paths[start:start + PREDICT_BATCH]
        x = torch.stack([load_image(p, cfg.image_size, cfg.channels) for p in chunk]).to(device)
        yield from zip(chunk, predict(model, x).cpu().tolist())
