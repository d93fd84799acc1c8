"""ASHA that never stops the search's starting trials (`start_from`).

A starting trial is the baseline the search must beat (the defaults, or a config the user
trusts). Ray's ASHA would stop it at a rung where a trial with a faster early schedule leads,
and then the export could be worse than the baseline: measured on `make search`, the defaults
were stopped at epoch 18 of 24 and the exported epoch-17 weights lost 0.05-0.37 exact-count
accuracy to a full default run. So a starting trial always runs to max_t; its results still
enter ASHA's rungs and set the cut-offs for the other trials.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler


class StartFromASHA(ASHAScheduler):
    """Ray's ASHAScheduler, except that trials whose config holds a starting point run to max_t.

    Args:
        starts: the Optuna parameters of each starting trial (`SearchSpace.start_points`); a
            trial is one of them when its config holds every one of those values.
        Other arguments as for `ASHAScheduler`.
    """

    def __init__(self, *args: Any, starts: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._starts = [dict(p) for p in starts]

    def is_start(self, config: dict[str, Any]) -> bool:
        return any(all(k in config and config[k] == v for k, v in p.items())
                   for p in self._starts)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if (action == TrialScheduler.STOP and result.get(self._time_attr, 0) < self._max_t
                and self.is_start(trial.config)):
            self._num_stopped -= 1  # counted as stopped by ASHA's own bookkeeping above
            return TrialScheduler.CONTINUE
        return action
