"""Count objects in image files with a trained model (bundle, run dir or checkpoint). No Ray.

By default every image is resized to the model's square input (`image_size`) and counted in
batches. With `native` (or a `scale`, or a model trained on crops) each image is counted at its
own size, scaled first when asked, in tiles (`countnet.counter`); `density_dir` also writes each
image's density map there (`countnet.density_map`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from countnet import density_map
from countnet.bundle import load_model
from countnet.config import ConfigError, TrainConfig
from countnet.counter import Counter, sizing_for
from countnet.errors import DataError
from countnet.folder import IMAGE_SUFFIXES, load_image, native_size
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


def count_images(model_path: str | Path, images: list[str | Path], device: str | None = None,
                 *, native: bool = False, scale: float | None = None,
                 density_dir: str | Path | None = None) -> Iterator[tuple[Path, float]]:
    """Yield (path, raw predicted count) for every image, in order.

    The model and the list of files are loaded (and `density_dir` created) before this returns,
    so a bad bundle, a missing path or a model without a density head fails before the first
    result.

    Args:
        model_path: exported bundle dir, run dir, or checkpoint.
        images: image files and folders of images.
        device: auto | cpu | cuda, overriding the model's own; without it a model trained on
            CUDA falls back to the CPU.
        native: count each image at its own size (in tiles) instead of resized to image_size.
        scale: resize each image by this factor first (implies native).
        density_dir: write each image's density map there (`density_map.map_path`); the model
            must have pool `density`.

    Raises:
        ConfigError: a bad scale, or a density map asked of a model without a density head.
    """
    model, cfg = load_model(model_path)
    if device is None:
        device = "auto" if cfg.device == "cuda" else cfg.device
    dev = pick_device(cfg.replace(device=device))
    model.to(dev)
    sizing = sizing_for(cfg, native, scale)
    if density_dir is not None and cfg.pool != "density":
        raise ConfigError(f"--density-map: {model_path} has pool {cfg.pool!r}, no density head; "
                          f"only models trained with pool: density give a density map")
    paths = expand_paths(images)
    if density_dir is not None:
        prepare_density_dir(Path(density_dir), paths)
    if not sizing.native and density_dir is None:
        return _count(model, cfg, paths, dev)
    for path in paths:  # a bad or oversized image fails before the first result
        native_size(path, sizing.scale if sizing.native else 1.0)
    counter = Counter(model, cfg, dev, sizing)
    return _count_each(counter, paths, None if density_dir is None else Path(density_dir))


def prepare_density_dir(out: Path, paths: list[Path]) -> None:
    """Create `out` for the density maps of `paths`; two images whose maps would share a file
    name, or a place that is not a writable directory, is a ConfigError. Maps written there
    before under the same names are replaced; other files are left alone."""
    seen: dict[Path, Path] = {}
    for path in paths:
        target = density_map.map_path(out, path)
        if target in seen:
            raise ConfigError(f"--density-map {out}: {seen[target]} and {path} would both write "
                              f"{target.name}; count them in two runs")
        seen[target] = path
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--density-map {out}: cannot create it ({e.strerror})") from None


def _count_each(counter: Counter, paths: list[Path],
                density_dir: Path | None) -> Iterator[tuple[Path, float]]:
    """One image at a time, through the counter's tiles; density maps when asked."""
    for path in paths:
        image = counter.load(path)  # (C, H, W)
        result = counter.count(image, with_density=density_dir is not None)
        if density_dir is not None and result.density is not None:
            density_map.write(density_map.map_path(density_dir, path), image, result.density,
                              counter.geometry.stride, result.count)
        yield path, result.count


def _count(model: torch.nn.Module, cfg: TrainConfig, paths: list[Path],
           device: torch.device) -> Iterator[tuple[Path, float]]:
    precision, layout = fast_path(model, cfg, device)  # as evaluate and the training loop
    for start in range(0, len(paths), PREDICT_BATCH):
        chunk = paths[start:start + PREDICT_BATCH]
        x = torch.stack([load_image(p, cfg.image_size, cfg.channels) for p in chunk])
        x = x.to(device).contiguous(memory_format=layout)  # (b, C, H, W)
        yield from zip(chunk, predict(model, x, cfg.eval_batch_size, precision).cpu().tolist())
