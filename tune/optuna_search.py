"""Ray's OptunaSearch, telling Optuna the truth about trials that ASHA stopped early.

Ray 2.60's `OptunaSearch.on_trial_complete` tells Optuna every trial that ends with a metric value
is COMPLETE, with its last value. A trial that ASHA stopped after one epoch then looks to TPE like
a finished run whose final val_loss is its epoch-1 val_loss. Here such a trial is told PRUNED,
with the value of every epoch it ran as an intermediate value (Optuna's own convention for trials
its pruners stop), and a diverged trial (non-finite loss) is told FAIL.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from countnet.experiment import DIVERGED_KEY  # set True by the trainable on a non-finite epoch

logger = logging.getLogger(__name__)


class PruningAwareOptunaSearch(OptunaSearch):
    """OptunaSearch where an early-stopped trial is PRUNED and a diverged one FAIL.

    Args:
        max_t: the epochs of a full trial (ASHA's max_t). A trial that ends without error before
            reaching it was stopped by the scheduler.
        time_attr: the result key counting epochs; it is the step of intermediate values.
        Other arguments as for `OptunaSearch`.
    """

    def __init__(self, *args: Any, max_t: int, time_attr: str = "epoch", **kwargs: Any) -> None:
        self._max_t = max_t
        self._time_attr = time_attr
        self._reported: dict[str, set[int]] = {}  # trial_id -> steps already reported
        super().__init__(*args, **kwargs)

    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials and self._ot_study is not None:
            orphan = self._orphan()
            if orphan is not None:
                # Asked for after Ray's last state save, then forgotten by Tuner.restore: reuse
                # it, so the study holds each trial once. The define-by-run suggest_* calls
                # return the values already stored for it (the ones TPE chose).
                logger.warning("trial %s takes over Optuna trial %d (asked after Ray's last "
                               "experiment-state save)", trial_id, orphan.number)
                self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, orphan._trial_id)
        return super().suggest(trial_id)

    def _orphan(self) -> optuna.trial.FrozenTrial | None:
        """The oldest RUNNING study trial that no Ray trial of this searcher holds."""
        held = {t._trial_id for t in self._ot_trials.values()}
        running = self._ot_study.get_trials(deepcopy=False,
                                            states=(optuna.trial.TrialState.RUNNING,))
        return next((t for t in running if t._trial_id not in held), None)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._completed_trials:
            return
        self._report(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if error or not result or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result, error)
            return
        # The result that made ASHA stop the trial never reached on_trial_result.
        self._report(trial_id, result)
        ot_trial = self._ot_trials[trial_id]
        epochs = int(result.get(self._time_attr, 0))
        if result.get(DIVERGED_KEY):
            ot_trial.set_user_attr("diverged", True)
            self._tell(trial_id, optuna.trial.TrialState.FAIL)
        elif epochs < self._max_t:
            ot_trial.set_user_attr("stopped_early_at_epoch", epochs)
            self._tell(trial_id, optuna.trial.TrialState.PRUNED)
        else:
            super().on_trial_complete(trial_id, result, error)

    def _report(self, trial_id: str, result: dict) -> None:
        value, step = result.get(self.metric), result.get(self._time_attr)
        if value is None or step is None or not math.isfinite(value):
            return
        # Optuna ignores (with a warning) a second value for a step: report each epoch once.
        steps = self._reported.setdefault(trial_id, set())
        if int(step) not in steps:
            self._ot_trials[trial_id].report(float(value), int(step))
            steps.add(int(step))

    def _tell(self, trial_id: str, state: optuna.trial.TrialState) -> None:
        """PRUNED or FAIL take no value: Optuna uses a pruned trial's last intermediate value."""
        try:
            self._ot_study.tell(self._ot_trials[trial_id], state=state)
        except Exception as exc:  # e.g. told twice after a restore; Ray's own handling
            logger.warning(exc)
        self._completed_trials.add(trial_id)
