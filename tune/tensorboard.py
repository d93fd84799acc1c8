"""TensorBoard files of a search: one run per trial, every metric per epoch, hparams at the end.

Ray's TBXLoggerCallback writes each result key as `ray/tune/<key>` at step `training_iteration`,
and, when a trial ends, hparams made of the searched values and the *last* result's metrics.
This subclass writes:

- the countnet metrics under their own names (`train_loss`, `train_loss_eval`, `val_loss`,
  `lr_now`, ...) at step `epoch`, so a resumed trial continues its curves at the right epoch;
- a custom-scalars layout that draws the three losses of a trial in one chart;
- when the trial ends, the HParams view's data: the hparams are the trial's config (its `lr` is
  the config's, never the scheduled per-epoch `lr_now`), and the metrics are those of the trial's
  *best* epoch by the search's target (the epoch `countnet export` takes; for the overfit target
  its last finite epoch, `rank_scope`), written as the scalars `best/<metric>`, plus
  `best/epoch`, `epochs_run`, `asha_stopped` and `diverged` (1 or 0).
  TensorBoard's HParams plugin shows, for each metric tag, the last value in the trial's run:
  each of these tags is written once, so that value is the best epoch's.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ray.tune.logger import TBXLoggerCallback
from ray.tune.utils import flatten_dict

from countnet.experiment import (
    DIVERGED_KEY,
    ERROR,
    RESULT_FILE,
    STEP,
    TERMINATED,
    make_trial,
)
from countnet.formatting import is_finite
from countnet.overfit_curve import SCOPE_ALL
from countnet.rundir import read_jsonl
from countnet.train import METRIC_KEYS
from tune.storage import is_uri

STEP_KEY = STEP
SCALAR_KEYS = tuple(k for k in METRIC_KEYS if k != STEP_KEY)
# The best epoch's metrics shown as HParams metric columns (tag BEST_PREFIX + key).
HPARAM_METRICS = ("val_loss", "val_acc", "val_mae", "val_off_by_one", "gap", "train_loss",
                  "train_loss_eval")
BEST_PREFIX = "best/"
BEST_EPOCH_TAG = "best/epoch"
EPOCHS_RUN_TAG = "epochs_run"
STOPPED_TAG = "asha_stopped"  # 1: ended cleanly before its planned epochs (ASHA stopped it)
DIVERGED_TAG = "diverged"
# TensorBoard's "Custom Scalars" tab: category -> chart -> (kind, tags).
LAYOUT = {
    "countnet": {
        "loss: train (running) vs train (eval) vs val": [
            "Multiline", ["train_loss", "train_loss_eval", "val_loss"]],
        "val_acc and val_off_by_one": ["Multiline", ["val_acc", "val_off_by_one"]],
        "gap = val_loss - train_loss_eval": ["Multiline", ["gap"]],
        "lr_now: scheduled lr at the epoch's last step": ["Multiline", ["lr_now"]],
    },
}


class CountnetTBXLogger(TBXLoggerCallback):
    """Per-trial event files with countnet metric names; replaces Ray's default TBX logger.

    Args:
        metric: the search's target metric; a trial's best epoch is ranked by it.
        mode: "min" or "max" for `metric`.
        scope: which epoch is a trial's best (`rank_scope` of the target): SCOPE_ALL, the best
            by `metric`; SCOPE_LAST, the last finite one.
    """

    def __init__(self, metric: str = "val_loss", mode: str = "min",
                 scope: str = SCOPE_ALL) -> None:
        super().__init__()
        self.metric, self.mode, self.scope = metric, mode, scope
        self._epochs: dict[Any, dict[int, dict[str, Any]]] = {}  # trial -> epoch -> result row

    def log_trial_start(self, trial: Any) -> None:
        super().log_trial_start(trial)
        self._trial_writer[trial].add_custom_scalars(LAYOUT)
        # Not reset on a restart: a recovered trial re-reports epochs after its checkpoint.
        self._epochs.setdefault(trial, {})

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
        self._epochs.setdefault(trial, {})[step] = {
            k: result[k] for k in (*METRIC_KEYS, DIVERGED_KEY) if k in result}
        # Ray's log_trial_end writes hparams only when this is non-empty; ours reads _epochs.
        self._trial_result[trial] = {**scalars, STEP_KEY: step}
        writer.flush()

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if trial in self._trial_writer:
            rows = self._history(trial)
            if rows:
                self._log_hparams(trial, rows, failed)
            self._trial_writer[trial].close()
            del self._trial_writer[trial]
            self._trial_result.pop(trial, None)
        self._epochs.pop(trial, None)

    def _history(self, trial: Any) -> list[dict[str, Any]]:
        """Every epoch of the trial, in order; those before a resume come from result.json."""
        rows = dict(self._epochs.get(trial, {}))
        if rows and min(rows) > 1:  # resumed in this driver: earlier epochs are on disk only
            # The driver's staging copy, then the experiment's (local storage): either may be
            # the one that holds the epochs before the resume.
            for base in (trial.local_path, trial.path):
                if not base or is_uri(str(base)):
                    continue
                for row in read_jsonl(Path(base) / RESULT_FILE) or []:
                    if STEP_KEY in row:
                        rows.setdefault(int(row[STEP_KEY]), row)
        return [rows[e] for e in sorted(rows)]

    def _log_hparams(self, trial: Any, rows: list[dict[str, Any]], failed: bool) -> None:
        """The trial's config as hparams; its best epoch's metrics as HParams metrics."""
        from tensorboardX.proto.api_pb2 import Status
        from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
        from tensorboardX.summary import hparams

        epochs_run = int(rows[-1][STEP_KEY])
        # The one trial model (countnet.experiment): best epoch, diverged, stopped early.
        record = make_trial(trial.trial_id, trial.path, ERROR if failed else TERMINATED,
                             dict(trial.config), {}, rows, self.metric, self.mode,
                             planned=int(trial.config.get("epochs", epochs_run)),
                             scope=self.scope)
        metrics: dict[str, float] = {}
        best = record.best
        if best is not None and not record.diverged:
            metrics.update({BEST_PREFIX + k: float(best[k]) for k in HPARAM_METRICS
                            if is_finite(best.get(k))})
            metrics[BEST_EPOCH_TAG] = float(best[STEP_KEY])
        metrics[EPOCHS_RUN_TAG] = float(epochs_run)
        metrics[STOPPED_TAG] = float(record.stopped_early)
        metrics[DIVERGED_TAG] = float(record.diverged)
        writer = self._trial_writer[trial]
        for tag, value in metrics.items():  # the values the HParams view shows
            writer.add_scalar(tag, value, global_step=epochs_run)
        experiment, start, end = hparams(hparam_dict=_hparam_values(trial.config),
                                         metric_dict=metrics)
        if failed or record.diverged:
            content = HParamsPluginData(
                session_end_info=SessionEndInfo(status=Status.Value("STATUS_FAILURE")),
                version=0)
            end.value[0].metadata.plugin_data.content = content.SerializeToString()
        for summary in (experiment, start, end):
            writer.file_writer.add_summary(summary)
        writer.flush()


def _hparam_values(config: dict[str, Any]) -> dict[str, Any]:
    """The trial's config, flattened, with the types TensorBoard's hparams take."""
    out: dict[str, Any] = {}
    for key, value in flatten_dict(config).items():
        if hasattr(value, "item"):  # numpy scalars
            value = value.item()
        if isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif isinstance(value, (list, tuple)) or value is None:
            out[key] = str(value)
    return out
