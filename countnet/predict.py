"""Count objects in image files with a trained model (bundle, run dir or checkpoint). No Ray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from countnet.bundle import load_model
from countnet.config import TrainConfig
from countnet.errors import DataError
from countnet.folder import IMAGE_SUFFIXES, load_image
from countnet.precision import fast_path
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


def count_images(model_path: str | Path, images: list[str | Path],
                 device: str | None = None) -> Iterator[tuple[Path, float]]:
    """Yield (path, raw predicted count) for every image, in order.

    The model and the list of files are loaded before this returns, so a bad bundle or a missing
    path fails before the first result. `device` (auto | cpu | cuda) overrides the one the
    model was trained with; without it a model trained on CUDA falls back to the CPU.
    """
    model, cfg = load_model(model_path)
    if device is None:
        device = "auto" if cfg.device == "cuda" else cfg.device
    dev = pick_device(cfg.replace(device=device))
    model.to(dev)
    paths = expand_paths(images)
    return _count(model, cfg, paths, dev)


def _count(model: torch.nn.Module, cfg: TrainConfig, paths: list[Path],
           device: torch.device) -> Iterator[tuple[Path, float]]:
    precision, layout = fast_path(model, cfg, device)  # as evaluate and the training loop
    for start in range(0, len(paths), PREDICT_BATCH):
        chunk = paths[start:start + PREDICT_BATCH]
        x = torch.stack([load_image(p, cfg.image_size, cfg.channels) for p in chunk])
        x = x.to(device).contiguous(memory_format=layout)  # (b, C, H, W)
        yield from zip(chunk, predict(model, x, cfg.eval_batch_size, precision).cpu().tolist())
