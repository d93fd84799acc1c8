"""Inputs and outputs of `countnet diagnose`: load a run, bundle or checkpoint; write TensorBoard.

The measurements themselves live in `countnet.diagnose`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn
from torch.utils.tensorboard import SummaryWriter

from countnet.bundle import load_model, read_history
from countnet.checkpoint import check_state_dict, load_checkpoint
from countnet.config import ConfigError, TrainConfig
from countnet.datasets import load_splits
from countnet.diagnose import DEFAULT_SAMPLES, Diagnosis, diagnose
from countnet.diagnose_report import format_report, verdict_line
from countnet.models import model_from_config
from countnet.rundir import (
    BUNDLE,
    CHECKPOINT,
    LAST,
    METRICS_FILE,
    RUN,
    checkpoint_path,
    expect_kind,
    read_metrics,
)
from countnet.train import pick_device, set_threads

# (model, cfg, history, epoch, run dir or None, the trained weights of an averaging run or None)
Loaded = tuple[nn.Module, TrainConfig, list[dict[str, Any]], int | None, Path | None,
               nn.Module | None]


def load_for_diagnosis(path: str | Path) -> Loaded:
    """(model in eval mode, cfg, history, epoch of the weights, run dir for TensorBoard or None,
    the trained weights beside the averaged ones when the checkpoint holds both, else None).

    Accepts a run dir (diagnoses its *last* checkpoint: the printed train loss of the last epoch
    belongs to those weights), an exported bundle dir, or a checkpoint (a checkpoint.pt file or
    its directory).

    Raises:
        ConfigError: one line naming the path and the reason (any other kind of path, a file
            that does not load).
        FileNotFoundError: a run dir without checkpoints/last.
    """
    p = Path(path)
    kind = expect_kind(p, (RUN, BUNDLE, CHECKPOINT))
    target = checkpoint_path(p, LAST) if kind == RUN else p
    try:
        model, cfg = load_model(p, which=LAST)
    except (ConfigError, FileNotFoundError):
        raise
    except Exception as e:  # a torn or foreign file: one line, not a traceback
        raise ConfigError(f"{target}: cannot load a model: {_first_line(e)}") from e
    epoch, trained = None, None
    if kind == BUNDLE:
        history = read_history(p)
    else:
        try:
            state = load_checkpoint(target)
        except Exception as e:
            raise ConfigError(f"{target}: cannot read checkpoint: {_first_line(e)}") from e
        history = [dict(h) for h in state.get("history", [])]
        epoch = int(state["epoch"]) if "epoch" in state else None
        if "train_model" in state:  # a run that averages its weights: the optimiser's own too
            trained = model_from_config(cfg)
            trained.load_state_dict(check_state_dict(state["train_model"],
                                                     f"{target}: train_model"))
            trained.eval()
        if kind == RUN and not history and (p / METRICS_FILE).is_file():
            history = read_metrics(p)
    return model, cfg, history, epoch, (p if kind == RUN else None), trained


def _first_line(e: BaseException) -> str:
    """An exception as one line (torch.load's messages run over many)."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def write_tensorboard(diag: Diagnosis, log_dir: str | Path) -> None:
    """The figures as scalars `diagnose/<name>` and the report as text `diagnose/report`.

    Written at step = the weights' epoch, next to the run's own events.
    """
    step = diag.epoch or 0
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for name, v in diag.measurements.items():
            if v is not None:
                writer.add_scalar(f"diagnose/{name}", v, step)
        for name, v in (diag.attribution or {}).items():
            writer.add_scalar(f"diagnose/term_{name}", v, step)
        writer.add_scalar("diagnose/true_gap", diag.true_gap, step)
        # TensorBoard renders text as markdown: indent by 4 for a monospace block.
        text = "\n".join("    " + line for line in format_report(diag).splitlines())
        writer.add_text("diagnose/report", text, step)
        writer.add_text("diagnose/verdict", verdict_line(diag), step)
    finally:
        writer.close()


def diagnose_path(path: str | Path, *, samples: int = DEFAULT_SAMPLES,
                  device: str | None = None, tensorboard: bool = True) -> Diagnosis:
    """Load a run dir / bundle / checkpoint, its data, and diagnose it (see `diagnose`)."""
    model, cfg, history, epoch, run_dir, trained = load_for_diagnosis(path)
    if device:
        cfg = cfg.replace(device=device)
    set_threads(cfg.threads)
    dev = pick_device(cfg)
    model.to(dev)
    if trained is not None:
        trained.to(dev)
    splits = load_splits(cfg, dev)
    diag = diagnose(model, cfg, splits, history, samples=samples, epoch=epoch, source=str(path),
                    train_model=trained)
    if tensorboard and run_dir is not None:
        write_tensorboard(diag, run_dir)
    return diag
