"""Checkpoint files: plain tensors and Python values only, loaded with `weights_only=True`.

A checkpoint (or a bundle's model.pt) from anyone is safe to load: torch's weights-only unpickler
refuses every Python object that is not a tensor, a container or a plain value, so a malicious
pickle fails with DataError instead of running code.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from countnet.folder import DataError

CHECKPOINT_FILE = "checkpoint.pt"
# What `countnet.train` saves; every reader (resume, export, predict, diagnose) needs these.
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "rng", "config", "history")


def resolve(path: str | Path) -> Path:
    """A `.pt` file as given; anything else names a directory holding `checkpoint.pt`."""
    p = Path(path)
    return p if p.suffix == ".pt" else p / CHECKPOINT_FILE


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename), so a crash never leaves half a checkpoint."""
    target = resolve(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_atomic(state, target)
    return target


def save_atomic(obj: Any, target: Path) -> None:
    """torch.save to a temp file in target's directory, then rename it over target."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def load_tensors(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True; any failure is one DataError line naming the file."""
    if not path.is_file():
        raise DataError(f"{path}: missing")
    try:
        with warnings.catch_warnings():
            # A foreign pickle protocol makes torch warn before it refuses: one line, not three.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a torn, foreign or malicious file: its content is the problem
        raise DataError(f"{path}: {_load_failure(e)}") from None


def _load_failure(e: Exception) -> str:
    """torch.load's many-line messages, as one short line that says what was wrong."""
    text = str(e)
    if "Weights only load failed" in text:
        # The reason is the line naming what was refused: "Unsupported global: GLOBAL io.open
        # was not an allowed global ...", or "Unsupported operand 149".
        lines = (line.strip().removeprefix("WeightsUnpickler error:").strip()
                 for line in text.splitlines())
        detail = next((line for line in lines if line.startswith("Unsupported")), "")
        detail = detail.split(" was not an allowed global")[0]
        return ("refused: it holds Python objects, not only tensors, and is never unpickled "
                f"as code (weights_only=True){': ' + detail if detail else ''}")
    first = text.strip().splitlines()[0] if text.strip() else ""
    first = first.split(". ")[0]  # torch appends paragraphs of advice after the first sentence
    return f"not a readable torch file ({type(e).__name__}{': ' + first if first else ''})"


def check_state_dict(state: Any, where: str) -> dict[str, torch.Tensor]:
    """`state` when it is a mapping of parameter name -> tensor, else DataError."""
    if not isinstance(state, Mapping):
        raise DataError(f"{where}: not a state_dict (a mapping of parameter name to tensor), "
                        f"got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise DataError(f"{where}: not a state_dict: entry {bad[0]!r} is not a named tensor")
    return dict(state)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load without unpickling code (weights_only=True); a bad file raises DataError."""
    target = resolve(path)
    if not target.is_file():
        raise FileNotFoundError(f"{target}: no checkpoint there")
    state = load_tensors(target, map_location)
    if not isinstance(state, dict):
        raise DataError(f"{target}: not a countnet checkpoint (a dict), got "
                        f"{type(state).__name__}")
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise DataError(f"{target}: not a countnet checkpoint: no {', '.join(missing)}")
    check_state_dict(state["model"], f"{target}: model")
    return state
