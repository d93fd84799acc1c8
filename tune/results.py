"""Reading a finished (or interrupted) experiment directory: its trials, and the best checkpoint.

The trials are countnet's own model (`countnet.experiment.Trial`), built from each trial's
result.json rows by the same Ray-free functions `countnet report` uses (one row per epoch, the
best epoch, the outcome). Which epoch is a trial's best follows the search's target
(`countnet.overfit_curve.rank_scope`): its best one over all epochs, or, for the overfit target,
its last one, whose checkpoint is Ray's latest (always kept). Only what needs Ray is read here,
through Ray's own `ExperimentAnalysis`/`ResultGrid` and from the files Ray wrote (so `countnet
export` works on a machine where no Ray cluster is running): the list of trials, their status
and sampled values (Ray's experiment state), and the checkpoints Ray kept. The files may be
local or in cloud storage (`tune.storage`).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from ray.tune import Checkpoint, ExperimentAnalysis, ResultGrid

from countnet.checkpoint import CHECKPOINT_FILE
from countnet.config import ConfigError
from countnet.experiment import (
    RESULT_FILE,
    SEARCH_INFO_FILE,
    Trial,
    make_trial,
    rank,
)
from countnet.formatting import fmt_number, format_params
from countnet.overfit_curve import SCOPE_ALL, SCOPE_LAST, scope_word
from countnet.rundir import CHECKPOINT, kind_of, parse_jsonl
from countnet.train import METRIC_KEYS
from tune.storage import is_uri, normalise, read_text


def read_search_info(exp_dir: str | Path) -> dict[str, Any]:
    """The search's own record (target, metric, mode, ...); {} for a foreign experiment.

    A torn or edited record is one ConfigError line naming the file and what is wrong with it.
    """
    where = f"{normalise(exp_dir)}/{SEARCH_INFO_FILE}"
    try:
        text = read_text(where)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text (offset {e.start})") from None
    if text is None:
        return {}
    try:
        info = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where}: not valid JSON (line {e.lineno} column {e.colno}: "
                          f"{e.msg}); was the search interrupted while writing it?") from None
    except RecursionError:
        raise ConfigError(f"{where}: not valid JSON (nested too deeply)") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{where}: must hold a JSON object, got {type(info).__name__}")
    if info.get("metric") not in METRIC_KEYS:
        raise ConfigError(f"{where}: metric: must be one of {', '.join(METRIC_KEYS)}; got "
                          f"{info.get('metric')!r}")
    if info.get("mode") not in ("min", "max"):
        raise ConfigError(f"{where}: mode: must be min or max; got {info.get('mode')!r}")
    if not isinstance(info.get("space"), dict):
        raise ConfigError(f"{where}: space: must be the search space as a mapping; got "
                          f"{type(info.get('space')).__name__}")
    return info


def load_trials(exp_dir: str | Path, metric: str, mode: str,
                scope: str = SCOPE_ALL) -> list[Trial]:
    """Every trial Ray knows of in an experiment directory, each with its best epoch by
    `metric`, the checkpoints Ray kept by it (`Trial.checkpoints`) and its latest one
    (`Trial.latest_checkpoint`).

    Args:
        exp_dir: the experiment directory (or URI).
        metric: the metric trials are ranked by.
        mode: "min" or "max".
        scope: which epoch is a trial's best (`countnet.overfit_curve.rank_scope` of the
            search's target): SCOPE_ALL, its best by `metric`; SCOPE_LAST, its last finite one,
            whose checkpoint (Ray's latest) is then in `Trial.checkpoints` under that epoch.
    """
    exp = normalise(exp_dir)
    local = not is_uri(exp)
    if local and not any(Path(exp).glob("experiment_state-*.json")):
        raise ConfigError(f"{exp}: not a Ray Tune experiment directory (no experiment_state)")
    analysis = ExperimentAnalysis(exp, default_metric=metric, default_mode=mode)
    results = {r.path: r for r in ResultGrid(analysis)}
    out = []
    for trial in analysis.trials:
        result = results.get(trial.path)
        # trial.path is a path on the storage's filesystem (no s3:// scheme): the trial's
        # result.json is read under the experiment's own location.
        where = f"{exp}/{PurePosixPath(trial.path).name}/{RESULT_FILE}"
        text = read_text(where)
        kept = {} if result is None else {
            int(m["epoch"]): c for c, m in result.best_checkpoints
            if "epoch" in m and (not local or kind_of(c.path) == CHECKPOINT)}
        latest = None if result is None else result.checkpoint
        record = make_trial(trial.trial_id, trial.path, str(trial.status), dict(trial.config),
                            dict(trial.evaluated_params or {}),
                            [] if text is None else parse_jsonl(text, where), metric, mode,
                            checkpoints=kept, latest_checkpoint=latest, scope=scope)
        if (scope == SCOPE_LAST and latest is not None and record.best is not None
                and not record.diverged and (not local or kind_of(latest.path) == CHECKPOINT)):
            # Ray's best_checkpoints hold the best by the target, not the last epoch's. The
            # trainable checkpoints every finite epoch and no other, so Ray's latest kept
            # checkpoint is that of the last finite epoch: the trial's best under this scope.
            # (`countnet export` checks the epoch inside the file.)
            record.checkpoints.setdefault(int(record.best["epoch"]), latest)
        out.append(record)
    return out


def best_result(exp_dir: str | Path, trials: list[Trial], metric: str, mode: str,
                scope: str = SCOPE_ALL) -> tuple[Trial, dict[str, Any], Checkpoint]:
    """The best trial, its best kept checkpoint and that epoch's row, as Ray's result API picks.

    Ray's `ResultGrid.get_best_result(scope=scope, filter_nan_and_inf=True)` ranks each trial by
    its best epoch (scope "all") or by its last one (scope "last", the overfit target:
    `countnet.overfit_curve.rank_scope`). Under "all", `Result.get_best_checkpoint` picks among
    the checkpoints Ray kept by the target; under "last" the checkpoint is the trial's latest
    (`Result.checkpoint`), which Ray always keeps. countnet's own policy differs in one place: a
    trial that diverged is never the best, not even by the finite epochs before its loss blew up
    (Ray would rank those), because its config is unstable. So diverged trials are dropped
    before Ray chooses.

    Args:
        exp_dir: the experiment directory (or URI).
        trials: `load_trials(exp_dir, metric, mode, scope)`.
        metric: the metric to rank by.
        mode: min or max.
        scope: SCOPE_ALL or SCOPE_LAST, as given to `load_trials`.

    Raises:
        ConfigError: no trial has a finite value and a kept checkpoint.
    """
    exp = normalise(exp_dir)
    analysis = ExperimentAnalysis(exp, default_metric=metric, default_mode=mode)
    by_path = {t.path: t for t in trials}
    analysis.trials = [t for t in analysis.trials
                       if t.path in by_path and not by_path[t.path].diverged]
    none = ConfigError(f"no trial has a kept checkpoint with a finite {metric} (all diverged, "
                       f"failed, or nothing ran)")
    if not analysis.trials:
        raise none
    try:
        result = ResultGrid(analysis).get_best_result(metric, mode, scope=scope,
                                                      filter_nan_and_inf=True)
    except RuntimeError:  # Ray: "No best trial found ..."
        raise none from None
    trial = by_path[result.path]
    if scope == SCOPE_LAST:
        # The last epoch's checkpoint is Ray's latest, kept whatever its score (load_trials
        # files it under the trial's last finite epoch, which is `trial.best`).
        checkpoint = result.checkpoint
        if checkpoint is None or trial.best is None:
            raise none
        epoch = int(trial.best["epoch"])
    else:
        checkpoint = result.get_best_checkpoint(metric, mode)
        if checkpoint is None:
            raise none
        epoch = next(int(m["epoch"]) for c, m in result.best_checkpoints
                     if c.path == checkpoint.path)
    if epoch not in trial.checkpoints:  # Ray's record names it, but the files are gone
        raise ConfigError(f"{checkpoint.path}: the best checkpoint of trial {trial.trial_id} "
                          f"is missing ({CHECKPOINT_FILE} not found)")
    row = next(r for r in trial.history if int(r["epoch"]) == epoch)
    return trial, row, checkpoint


def format_table(trials: list[Trial], metric: str, mode: str, top: int = 10,
                 scope: str = SCOPE_ALL) -> str:
    """The top trials by `metric` (values at each trial's best epoch), then the others.

    Args:
        trials: `load_trials`' trials (their `best` made under `scope`).
        metric: the metric they are ranked by.
        mode: "min" or "max".
        top: how many ranked trials to show.
        scope: SCOPE_ALL (each trial at its best epoch) or SCOPE_LAST (at its last epoch): only
            the words of the header change.
    """
    ranked = rank(trials, metric, mode)
    others = [t for t in trials if t not in ranked]
    word = scope_word(scope)
    cols = ("trial", "epochs", "outcome", f"{word}@", metric, "val_loss", "val_acc", "gap",
            "config")
    lines = []
    for t in ranked[:top] + others:
        b = t.best or {}
        lines.append((t.trial_id, str(t.epochs_run), t.outcome, str(b.get("epoch", "-")),
                      *(fmt_number(b.get(k)) for k in (metric, "val_loss", "val_acc", "gap")),
                      format_params(t.params)))
    if metric in ("val_loss", "val_acc", "gap"):  # no duplicate column
        lines = [row[:4] + row[5:] for row in lines]
        cols = cols[:4] + cols[5:]
    widths = [max(len(c), *(len(r[i]) for r in lines)) if lines else len(c)
              for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    shown = len(ranked[:top])
    head = (f"top {shown} of {len(ranked)} ranked trials by {metric} ({mode}) at their {word} "
            f"epoch; {len(others)} unranked (diverged, errored or without results)")
    return "\n".join([head, fmt.format(*cols), *(fmt.format(*r) for r in lines)])
