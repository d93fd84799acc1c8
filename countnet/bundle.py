"""Exported bundles, and loading a trained model from a bundle, a run dir or a checkpoint.

A bundle directory holds:
- `model.pt`: the model's state_dict only (tensors; loads with weights_only=True);
- `config.json`: the TrainConfig, plus the input size and normalisation the model expects;
- `metrics.json`: where it came from and how good it was.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from countnet.checkpoint import CHECKPOINT_FILE, load_checkpoint, resolve
from countnet.config import TrainConfig
from countnet.models import model_from_config

MODEL_FILE, CONFIG_FILE, METRICS_FILE = "model.pt", "config.json", "metrics.json"
# Inputs are images scaled to [0, 1] with no mean/std shift; recorded so other tools can match it.
NORMALISATION = {"scale": 1.0 / 255.0, "mean": 0.0, "std": 1.0}
RUN_BEST = Path("checkpoints") / "best" / CHECKPOINT_FILE


def write_bundle(out_dir: str | Path, model_state: dict[str, torch.Tensor], cfg: TrainConfig,
                 metrics: dict[str, Any]) -> Path:
    """Write a bundle that `load_model` (and `countnet predict`) can use without Ray."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model_state.items()}, out / MODEL_FILE)
    config = {"train_config": cfg.to_dict(),
              "input": {"height": cfg.image_size, "width": cfg.image_size,
                        "channels": cfg.channels, "normalisation": NORMALISATION}}
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=str))
    return out


def load_model(path: str | Path,
               device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """(model in eval mode, its config) from a bundle dir, a run dir or a checkpoint file/dir."""
    p = Path(path)
    if (p / MODEL_FILE).is_file() and (p / CONFIG_FILE).is_file():
        cfg = TrainConfig.from_dict(json.loads((p / CONFIG_FILE).read_text())["train_config"])
        state = torch.load(p / MODEL_FILE, map_location=device, weights_only=True)
    else:
        ckpt_path = p / RUN_BEST if (p / RUN_BEST).is_file() else resolve(p)
        if not ckpt_path.is_file():
            raise FileNotFoundError(
                f"{p}: not a bundle (model.pt + config.json), a run dir (checkpoints/best) "
                f"or a checkpoint")
        ckpt = load_checkpoint(ckpt_path, map_location=device)
        cfg, state = TrainConfig.from_dict(ckpt["config"]), ckpt["model"]
    # Weights are loaded below: a local pre-trained file is not needed (nor read) again.
    model = model_from_config(cfg.replace(weights_path=""))
    model.load_state_dict(state)
    return model.to(device).eval(), cfg
