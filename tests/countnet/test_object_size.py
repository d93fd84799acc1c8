"""A bundle's config.json records the object sizes its model was trained on, when known."""

from __future__ import annotations

import json
import shutil

import numpy as np

from countnet.bundle import CONFIG_FILE, load_model, write_bundle
from countnet.config import TrainConfig
from countnet.models import model_from_config
from countnet.object_size import OBJECT_SIZE_KEY
from tests.conftest import tiny_config
from tests.countnet.photos import write_carpk


def _written(tmp_path, cfg: TrainConfig) -> dict:
    out = write_bundle(tmp_path / "bundle", model_from_config(cfg).state_dict(), cfg, {})
    load_model(out)  # still a bundle that loads
    return json.loads((out / CONFIG_FILE).read_text())


def test_synthetic_scenes_record_their_size_range(tmp_path) -> None:
    config = _written(tmp_path, tiny_config(min_object_size=4, max_object_size=9))
    assert config[OBJECT_SIZE_KEY]["min"] == 4 and config[OBJECT_SIZE_KEY]["max"] == 9
    assert config[OBJECT_SIZE_KEY]["unit"] == "px"


def test_photos_trained_on_crops_record_their_boxes_sizes(tmp_path) -> None:
    root = write_carpk(tmp_path / "carpk", n_train=3, n_test=1)
    cfg = tiny_config(data="carpk", data_dir=str(root), crop_size=32)
    config = _written(tmp_path, cfg)
    boxes = np.array([[float(v) for v in line.split()[:4]]
                      for i in range(3)
                      for line in (root / "Annotations" / f"train_{i:03d}.txt").open()])
    sides = np.concatenate([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    size = config[OBJECT_SIZE_KEY]
    assert (size["min"], size["max"]) == (sides.min(), sides.max())
    assert config["input"]["native"] is True and config["input"]["height"] is None
    # Photos resized to image_size, or data that is gone: nothing is recorded.
    assert OBJECT_SIZE_KEY not in _written(tmp_path, cfg.replace(crop_size=0))
    shutil.rmtree(root)
    assert OBJECT_SIZE_KEY not in _written(tmp_path, cfg)
