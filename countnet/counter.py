"""Count image files one at a time: at their own size (optionally scaled), or resized to the
model's input, through `countnet.native`'s tiles. What `predict --native`, `evaluate --native`,
`predict --density-map` and the suite's `large` set use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from countnet.config import ConfigError, TrainConfig
from countnet.folder import load_image, load_native
from countnet.native import TILE_PX, Geometry, NativeCount, count_native, geometry
from countnet.precision import fast_path


@dataclass(frozen=True)
class Sizing:
    """How an image file becomes the model's input."""

    native: bool = False  # True: at its own size (times `scale`); False: resized to image_size
    scale: float = 1.0  # resize factor applied first, native only


def sizing_for(cfg: TrainConfig, native: bool = False, scale: float | None = None) -> Sizing:
    """The sizing a command asked for. `--scale` implies native; so does a model trained on
    crops at native resolution (crop_size > 0), which was never trained on resized photos.

    Args:
        cfg: the model's config.
        native: `--native` was given.
        scale: `--scale S`, or None.

    Raises:
        ConfigError: a scale that is not a finite number > 0.
    """
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"--scale: must be a number > 0, got {scale}")
    native = native or scale is not None or cfg.crop_size > 0
    return Sizing(native, 1.0 if scale is None else float(scale))


class Counter:
    """A loaded model that counts one image file at a time, in the fast path it trained in."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, device: torch.device,
                 sizing: Sizing, tile: int = TILE_PX) -> None:
        """Args:
            model: a CountNet in eval mode (moved to `device` here).
            cfg: its config.
            device: where to count.
            sizing: native (scaled) or resized input.
            tile: side of a tile's core, px (`countnet.native.count_native`).
        """
        self.model, self.cfg, self.device, self.sizing, self.tile = model, cfg, device, sizing, tile
        self.precision, self.layout = fast_path(model, cfg, device)
        self.geometry: Geometry = geometry(cfg)

    def load(self, path: Path) -> torch.Tensor:
        """The model's input for one image file (C, H, W) float32 in [0, 1], on the CPU."""
        if self.sizing.native:
            return load_native(path, self.cfg.channels, self.sizing.scale)
        return load_image(path, self.cfg.image_size, self.cfg.channels)

    def count(self, image: torch.Tensor, with_density: bool = False) -> NativeCount:
        """The count (and density map) of one input image (C, H, W), as `load` gives it."""
        return count_native(self.model, self.geometry, image.to(self.device), tile=self.tile,
                            precision=self.precision, layout=self.layout,
                            with_density=with_density)
