"""Optuna's parameter importances over every trial's best epoch, ASHA-stopped trials included.

Optuna's own `get_param_importances` uses COMPLETE trials only, and in an ASHA search most trials
are PRUNED. Here every trial with a finite best-epoch value becomes a COMPLETE trial of an
in-memory study, so the trials ASHA stopped count with their best epoch's value.
"""

from __future__ import annotations

import json
from typing import Any

from countnet.experiment import SWITCH_PREFIX, effective_params, train_defaults
from countnet.formatting import is_finite

IMPORTANCE_SEED = 0  # fANOVA's random forest: the same report for the same experiment


def param_importances(points: list[tuple[dict[str, Any], float]], mode: str,
                      search: dict[str, Any] | None = None) -> dict[str, float]:
    """Optuna's parameter importances over (params, best-epoch value) points.

    Every point becomes a COMPLETE trial of an in-memory study (`optuna.trial.create_trial` +
    `study.add_trials`), so trials that ASHA stopped count with their best epoch's value.

    Args:
        points: one (params, value) per trial with a finite value.
        mode: "min" or "max".
        search: the space's `search` mapping (distribution types); inferred when absent.

    Returns:
        parameter -> importance (summing to 1), most important first; {} when fewer than two
        points or no parameter varies.
    """
    import optuna

    dists = _distributions([p for p, _ in points], search or {})
    if len(points) < 2 or not dists:
        return {}
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
        study.add_trials([
            optuna.trial.create_trial(params={k: p[k] for k in dists}, distributions=dists,
                                      value=float(v))
            for p, v in points])
        try:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
            result = optuna.importance.get_param_importances(study, evaluator=evaluator)
        except ImportError:  # fANOVA needs scikit-learn; PED-ANOVA does not
            result = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    finally:
        optuna.logging.set_verbosity(level)
    return {k: float(v) for k, v in result.items()}


def study_points(study: Any, defaults: dict[str, Any] | None = None
                 ) -> list[tuple[dict[str, Any], float]]:
    """(params, best value) of every COMPLETE and PRUNED trial of an Optuna study.

    A PRUNED trial's value is its best intermediate value (countnet's search reports every epoch
    of a trial as one); a parameter a trial did not sample takes its TrainConfig default.

    Args:
        study: an optuna.Study (e.g. loaded from an experiment's optuna.db).
        defaults: values for parameters a trial lacks; TrainConfig's defaults by default.
    """
    import optuna

    states = optuna.trial.TrialState
    if defaults is None:
        defaults = train_defaults()
    names = sorted({k for t in study.trials for k in t.params})
    pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    out = []
    for t in study.trials:
        if t.state == states.COMPLETE and is_finite(t.value):
            value = t.value
        elif t.state == states.PRUNED:
            finite = [v for v in t.intermediate_values.values() if is_finite(v)]
            if not finite:
                continue
            value = pick(finite)
        else:
            continue
        out.append((effective_params(t.params, names, defaults), float(value)))
    return out


def _distributions(params: list[dict[str, Any]], search: dict[str, Any]) -> dict[str, Any]:
    """An Optuna distribution per parameter that takes more than one value, from the values
    the trials used (a default outside the searched range included).

    Values of a categorical parameter that Optuna cannot hold (lists) are replaced, in `params`,
    by their JSON text.
    """
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    names = [k for k in (params[0] if params else {}) if all(k in p for p in params)]
    out: dict[str, Any] = {}
    for name in names:
        values = [p[name] for p in params]
        if len({json.dumps(v, sort_keys=True) for v in values}) < 2:
            continue  # no variation: nothing to attribute
        spec = search.get(name.removeprefix(SWITCH_PREFIX)) if name.startswith(
            SWITCH_PREFIX) else search.get(name)
        kind = spec.get("type") if isinstance(spec, dict) and not name.startswith(
            SWITCH_PREFIX) else None
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numbers and kind != "choice":
            lo, hi = min(values), max(values)
            if all(isinstance(v, int) for v in values) and kind in (None, "int"):
                out[name] = IntDistribution(int(lo), int(hi))
            else:
                log = lo > 0 and (kind == "loguniform" or (kind is None and hi / lo >= 100))
                out[name] = FloatDistribution(float(lo), float(hi), log=log)
        else:
            choices = sorted({_categorical(v) for v in values}, key=lambda v: (str(type(v)),
                                                                               str(v)))
            out[name] = CategoricalDistribution(choices)
            for p in params:
                p[name] = _categorical(p[name])
    return out


def _categorical(v: Any) -> Any:
    return v if v is None or isinstance(v, (bool, int, float, str)) else json.dumps(v)
