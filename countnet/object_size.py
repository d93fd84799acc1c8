"""The object sizes a model was trained on: what `--scale` is chosen from.

A model counts objects of about the size it saw in training; a user brings the objects of a photo
to that size with `countnet predict --scale S`. A bundle's config.json records the range under
"object_size" when it is known:
- synthetic scenes: the config's own `min_object_size` and `max_object_size` (every side of every
  rectangle lies in that range);
- box-annotated photos trained on crops (`crop_size` > 0): the training boxes' shortest and
  longest sides and the median of their longer side, read from the data when it is still there.
Photos trained resized to `image_size`, or whose boxes cannot be read, record nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from countnet.config import ConfigError, TrainConfig
from countnet.crops import training_photos
from countnet.errors import DataError

OBJECT_SIZE_KEY = "object_size"  # config.json: {"object_size": {"min": px, "max": px, ...}}


def trained_object_size(cfg: TrainConfig) -> dict[str, Any] | None:
    """{"min", "max", "unit", "source"} (and "median_long" for boxes) of the objects `cfg`
    trains on, in px of the model's input; None when unknown.

    Args:
        cfg: the model's training config.
    """
    if cfg.data == "synthetic":
        return {"min": cfg.min_object_size, "max": cfg.max_object_size, "unit": "px",
                "source": "synthetic scenes: min_object_size and max_object_size"}
    if cfg.crop_size <= 0:
        return None
    try:
        photos = training_photos(cfg)
    except (DataError, ConfigError, OSError):
        return None  # the data moved or changed since training: the range is not known
    boxes = np.concatenate([p.boxes for p in photos]) if photos else np.zeros((0, 4))
    if not len(boxes):
        return None
    sides = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)  # (K, 2)
    return {"min": float(sides.min()), "max": float(sides.max()),
            "median_long": float(np.median(sides.max(axis=1))), "unit": "px",
            "source": f"{len(boxes)} boxes of the training photos ({cfg.data})"}
