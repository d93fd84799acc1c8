"""A run directory for `countnet train`: config, metrics log, TensorBoard events, checkpoints.

RUN/config.yaml            the resolved TrainConfig
RUN/metrics.jsonl          one JSON line per epoch (METRIC_KEYS); a NaN or inf is written as null
RUN/events.out.tfevents.*  every metric as a TensorBoard scalar at step = epoch
RUN/checkpoints/last/      the latest finite epoch (resume from here)
RUN/checkpoints/best/      the finite epoch with the lowest val_loss so far
RUN/suite.json             the best checkpoint on the shift suite (countnet.suite)

An epoch with a NaN or inf metric (a diverged one) is logged but never checkpointed: `last` and
`best` keep the last finite weights.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from countnet.checkpoint import load_checkpoint
from countnet.config import ConfigError, TrainConfig
from countnet.errors import DataError
from countnet.folder import read_text
from countnet.formatting import nan_to_null
from countnet.outdir import OutputKind
from countnet.train import RESUME_FREE_FIELDS, SaveFn

BEST_METRIC = "val_loss"  # lower is better
METRICS_FILE = "metrics.jsonl"
SUITE_FILE = "suite.json"  # written by `countnet train` (countnet.suite.record_suite)


def is_run_dir(path: Path) -> bool:
    """A directory `countnet train` wrote: its config, and metrics or checkpoints."""
    return (path / "config.yaml").is_file() and (
        (path / METRICS_FILE).is_file() or (path / "checkpoints").is_dir())


RUN_OUTPUT = OutputKind("run dir", is_run_dir,
                        "it has no config.yaml + metrics.jsonl or checkpoints/")


def finite_epoch(metrics: dict[str, Any]) -> bool:
    """Every number of the epoch is finite: its weights may be checkpointed and ranked."""
    return all(math.isfinite(v) for v in metrics.values() if isinstance(v, (int, float)))


class RunLogger:
    """An `on_epoch_end` callback that writes everything a run leaves behind, every epoch.

    `resume_from` (a checkpoint of this run) continues a run: metrics.jsonl is rewritten from
    the checkpoint's own history, which drops a line torn by a crash and any epoch logged after
    the checkpoint, so the log and the weights agree. Without it the directory must hold no run.
    """

    def __init__(self, out_dir: str | Path, cfg: TrainConfig, *,
                 resume_from: str | Path | None = None) -> None:
        self.dir = Path(out_dir)
        self.last_dir = self.dir / "checkpoints" / "last"
        self.best_dir = self.dir / "checkpoints" / "best"
        self.last_epoch: int | None = None  # the epoch checkpoints/last holds
        history: list[dict[str, Any]] = []
        if resume_from is not None:
            state = load_checkpoint(resume_from)
            # fit() refuses other values too, but only after this logger would have rewritten
            # the log: check first, so that a refused resume leaves the run as it was.
            saved = TrainConfig.from_dict(state["config"]).to_dict()
            diff = [k for k, v in cfg.to_dict().items()
                    if k not in RESUME_FREE_FIELDS and saved[k] != v]
            if diff:
                raise ConfigError(f"resume: checkpoint {resume_from} was trained with other "
                                  f"values of {', '.join(diff)}")
            history = [dict(h) for h in state["history"]]
            self.last_epoch = int(state["epoch"])
        elif is_run_dir(self.dir):  # never append a second run to the first one's log
            raise ConfigError(f"{self.dir}: already holds a run; resume it or use an empty "
                              f"directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg.save_yaml(self.dir / "config.yaml")
        if resume_from is not None:
            write_metrics(self.dir, history)
        self.writer = SummaryWriter(log_dir=str(self.dir))
        # A resumed run keeps its best epoch so far.
        finite = [m for m in history if finite_epoch(m)]
        self.best = min(finite, key=lambda m: m[BEST_METRIC]) if finite else None

    def __call__(self, metrics: dict[str, float], save: SaveFn) -> None:
        epoch = int(metrics["epoch"])
        finite = finite_epoch(metrics)
        if finite:
            # Checkpoint first: metrics.jsonl never lists a finite epoch that cannot be resumed.
            save(self.last_dir)
            self.last_epoch = epoch
        with (self.dir / METRICS_FILE).open("a") as f:
            f.write(metrics_line(metrics) + "\n")
        for key, value in metrics.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()
        if finite and (self.best is None or metrics[BEST_METRIC] < self.best[BEST_METRIC]):
            self.best = dict(metrics)
            save(self.best_dir)

    def close(self) -> None:
        self.writer.close()


def metrics_line(metrics: dict[str, Any]) -> str:
    """One strict-JSON line: NaN and inf become null (JSON has neither)."""
    return json.dumps(nan_to_null(metrics), allow_nan=False)


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Replace metrics.jsonl by `history`, atomically (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{METRICS_FILE}.", dir=run_dir)
    with os.fdopen(fd, "w") as f:
        f.writelines(metrics_line(m) + "\n" for m in history)
    os.replace(tmp, run_dir / METRICS_FILE)


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The per-epoch metrics a run logged (its metrics.jsonl); null reads back as NaN.

    A last line without its newline was cut off by a crash while being written: it is skipped
    (the checkpoint of that epoch was written before it). Any other bad line is a DataError.
    """
    path = Path(run_dir) / METRICS_FILE
    lines = read_text(path).split("\n")
    rows = []
    for n, line in enumerate(lines[:-1], start=1):  # lines[-1]: "" or a torn last line
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{n}: not a JSON object of metrics")
        rows.append({k: math.nan if v is None else v for k, v in row.items()})
    return rows
