"""Checkpoint files: plain tensors and Python values only, loaded with `weights_only=True`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FILE = "checkpoint.pt"


def resolve(path: str | Path) -> Path:
    """A `.pt` file as given; anything else names a directory holding `checkpoint.pt`."""
    p = Path(path)
    return p if p.suffix == ".pt" else p / CHECKPOINT_FILE


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename), so a crash never leaves half a checkpoint."""
    target = resolve(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, target)
    return target


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load without unpickling code: weights_only=True."""
    target = resolve(path)
    if not target.is_file():
        raise FileNotFoundError(f"{target}: no checkpoint there")
    return torch.load(target, map_location=map_location, weights_only=True)
