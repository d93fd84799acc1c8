"""A run directory for `countnet train`: config, metrics log, TensorBoard events, checkpoints.

RUN/config.yaml            the resolved TrainConfig
RUN/metrics.jsonl          one JSON line per epoch (METRIC_KEYS)
RUN/events.out.tfevents.*  every metric as a TensorBoard scalar at step = epoch
RUN/checkpoints/last/      the latest epoch (resume from here)
RUN/checkpoints/best/      the epoch with the lowest val_loss so far
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from countnet.config import TrainConfig
from countnet.train import SaveFn

BEST_METRIC = "val_loss"  # lower is better


class RunLogger:
    """An `on_epoch_end` callback that writes everything a run leaves behind, every epoch."""

    def __init__(self, out_dir: str | Path, cfg: TrainConfig) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg.save_yaml(self.dir / "config.yaml")
        self.writer = SummaryWriter(log_dir=str(self.dir))
        self.last_dir = self.dir / "checkpoints" / "last"
        self.best_dir = self.dir / "checkpoints" / "best"
        # A resumed run keeps its earlier epochs, and its best epoch so far.
        earlier = read_metrics(self.dir) if (self.dir / "metrics.jsonl").is_file() else []
        finite = [m for m in earlier if math.isfinite(m[BEST_METRIC])]
        self.best = min(finite, key=lambda m: m[BEST_METRIC]) if finite else None

    def __call__(self, metrics: dict[str, float], save: SaveFn) -> None:
        epoch = int(metrics["epoch"])
        # Checkpoint first: metrics.jsonl never lists an epoch that cannot be resumed from.
        save(self.last_dir)
        with (self.dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps(metrics) + "\n")
        for key, value in metrics.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()
        value = metrics[BEST_METRIC]
        if math.isfinite(value) and (self.best is None or value < self.best[BEST_METRIC]):
            self.best = dict(metrics)
            save(self.best_dir)

    def close(self) -> None:
        self.writer.close()


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The per-epoch metrics a run logged (its metrics.jsonl)."""
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
