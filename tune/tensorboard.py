"""TensorBoard files of a search: one run per trial, every metric per epoch, hparams at the end.

Ray's TBXLoggerCallback writes each result key as `ray/tune/<key>` at step `training_iteration`.
This subclass writes the countnet metrics under their own names (`train_loss`, `train_loss_eval`,
`val_loss`, ...) at step `epoch`, so a resumed trial continues its curves at the right epoch, and
adds a custom-scalars layout that draws the three losses of a trial in one chart. Hparams (the
searched values and the last epoch's metrics) are written by the parent when a trial ends.
"""

from __future__ import annotations

import math
from typing import Any

from ray.tune.logger import TBXLoggerCallback

from countnet.train import METRIC_KEYS

STEP_KEY = "epoch"
SCALAR_KEYS = tuple(k for k in METRIC_KEYS if k != STEP_KEY)
# TensorBoard's "Custom Scalars" tab: category -> chart -> (kind, tags).
LAYOUT = {
    "countnet": {
        "loss: train (running) vs train (eval) vs val": [
            "Multiline", ["train_loss", "train_loss_eval", "val_loss"]],
        "val_acc and val_off_by_one": ["Multiline", ["val_acc", "val_off_by_one"]],
        "gap = val_loss - train_loss_eval": ["Multiline", ["gap"]],
    },
}


class CountnetTBXLogger(TBXLoggerCallback):
    """Per-trial event files with countnet metric names; replaces Ray's default TBX logger."""

    def log_trial_start(self, trial: Any) -> None:
        super().log_trial_start(trial)
        self._trial_writer[trial].add_custom_scalars(LAYOUT)

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if STEP_KEY not in result:
            return
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        writer, step = self._trial_writer[trial], int(result[STEP_KEY])
        scalars = {k: float(result[k]) for k in SCALAR_KEYS
                   if k in result and math.isfinite(result[k])}
        for key, value in scalars.items():
            writer.add_scalar(key, value, global_step=step)
        # The parent logs these as the hparams metrics when the trial ends.
        self._trial_result[trial] = {**scalars, STEP_KEY: step}
        writer.flush()
