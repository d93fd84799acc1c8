"""A search space as Optuna samples it through Ray Tune, and a sampled config back to TrainConfig.

`DefineByRun` is the define-by-run function Ray's OptunaSearch calls once per trial: each
`trial.suggest_*` call becomes a key of the trial's Ray config. Conditions are plain `if`s: a
`when:` field is suggested only when the fields it depends on have one of its values, and an
`optional` field first suggests its on/off switch `use_<field>` (`tune.space`). `trial_config`
undoes the switches: the trainable's TrainConfig from a trial's Ray config.
"""

from __future__ import annotations

from typing import Any

from countnet.config import TrainConfig, field_names
from countnet.experiment import SWITCH_PREFIX
from tune.space import Param, SearchSpace


class DefineByRun:
    """The Optuna define-by-run function of a space: conditions are plain `if`s.

    Ray's OptunaSearch records every `trial.suggest_*` call as the trial's config. A class, not a
    closure, because Ray pickles the searcher (and this with it) to resume experiments.
    """

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    def __call__(self, trial: Any) -> None:
        chosen: dict[str, Any] = {}
        defaults = TrainConfig().to_dict()
        for prm in self.space.params:
            if not all(_current(f, chosen, self.space.fixed, defaults) in ok
                       for f, ok in prm.when):
                continue
            if prm.optional and not trial.suggest_categorical(prm.switch, [False, True]):
                continue
            chosen[prm.name] = _suggest(trial, prm)


def trial_config(config: dict[str, Any]) -> TrainConfig:
    """A trial's TrainConfig from its Ray config: fixed + sampled values, switches dropped."""
    fields = set(field_names())
    values = {k: v for k, v in config.items()
              if not (k.startswith(SWITCH_PREFIX) and k[len(SWITCH_PREFIX):] in fields)}
    return TrainConfig.from_dict(values)


def _suggest(trial: Any, prm: Param) -> Any:
    if prm.type == "choice":
        return trial.suggest_categorical(prm.name, list(prm.values))
    if prm.type == "int":
        return trial.suggest_int(prm.name, int(prm.low), int(prm.high))
    return trial.suggest_float(prm.name, float(prm.low), float(prm.high),
                               log=prm.type == "loguniform")


def _current(field: str, chosen: dict, fixed: dict, defaults: dict) -> Any:
    return chosen.get(field, fixed.get(field, defaults.get(field)))
