"""Reading a search's trials and a run's epochs from their files, without Ray: one trial model.

A `countnet search` experiment directory holds Ray's files per trial (`params.json`: the config;
`result.json`: one JSON line per reported epoch; `error.txt` after a failure) and countnet's own
`countnet_search.json` (target, metric, mode, space). `load_experiment` reads them with the
standard library alone, so `countnet report` runs where Ray is not installed. `tune.results` reads
the same rows through the same functions (from local or cloud storage) and adds only what needs
Ray: the trial list and status from Ray's experiment state, and the checkpoints Ray kept.
`tune.progress` and `tune.tensorboard` use the same model while the search runs.

Each rule is defined once, here:

- a trial's history (`epoch_history`): one row per epoch, the last report of an epoch winning (a
  restarted trial repeats some), with the keys of `countnet.train.METRIC_KEYS` and `diverged`;
- a trial's best epoch (`best_epoch`), the epoch `countnet export` takes and by which trials are
  ranked (`rank`); which epoch that is depends on the search's target (`rank_scope`, defined in
  `countnet.overfit_curve` next to the target it is about): scope "all" (generalise) is the best
  finite target value over its epochs, the first on ties; scope "last" (overfit) is its last
  epoch with a finite target value; diverged epochs excluded in both;
- its outcome (`Trial.outcome`): diverged, error, stopped@N (ASHA stopped it: it ended cleanly
  before its planned epochs), complete, or the state of an unfinished trial.

A `countnet train` run directory is read here too (`load_run`): its metrics.jsonl rows and its
config. Every JSON-lines file (result.json, metrics.jsonl) is read by `countnet.rundir`'s one
reader (`parse_jsonl`: a last line cut short by a crash is skipped, any other bad line is a
DataError naming the file and line); whether a directory is a run or an experiment is its
`kind_of`'s to say.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from countnet.config import ConfigError, TrainConfig, read_yaml
from countnet.errors import DataError
from countnet.formatting import is_finite
from countnet.overfit_curve import SCOPE_ALL, rank_scope, standing
from countnet.rundir import (
    BEST_METRIC,
    METRICS_FILE,
    PARAMS_FILE,
    RUN_CONFIG_FILE,
    SEARCH_INFO_FILE,
    read_jsonl,
    read_metrics,
)
from countnet.rung_audit import rung_milestones
from countnet.train import METRIC_KEYS

# SEARCH_INFO_FILE (target, metric, mode, seed, space: written by search) and PARAMS_FILE are
# countnet.rundir's, which tells an experiment directory by them (`kind_of`).
STUDY_FILE = "optuna.db"  # the Optuna study (SQLite) in the experiment directory
RESULT_FILE = "result.json"  # Ray: one JSON line per reported epoch
ERROR_FILE = "error.txt"  # Ray: a trial's traceback when it failed
DIVERGED_KEY = "diverged"  # set True by the trainable on the epoch whose loss went non-finite
SWITCH_PREFIX = "use_"  # the on/off switch of a space's `optional` field (tune.space)
STEP = "epoch"  # the result key counting epochs (ASHA's time_attr)
RUN_BEST_METRIC, RUN_BEST_MODE = BEST_METRIC, "min"  # the rule of a run's checkpoints/best
# Ray's trial states that end a trial; any other (RUNNING, PENDING, PAUSED) is unfinished.
TERMINATED, ERROR = "TERMINATED", "ERROR"
UNFINISHED = "UNFINISHED"  # from the files alone: started, not ended (Ray's own name unknown)


@dataclass
class Trial:
    """One trial of a search: what `countnet search`'s table, the export, the report, the live
    progress lines and TensorBoard's hparams all say about it."""

    trial_id: str
    path: str  # its directory (a local path or, read through tune.results, a storage path)
    status: str  # TERMINATED, ERROR, or an unfinished state (Ray's, or UNFINISHED)
    config: dict[str, Any]  # Ray's config: fixed + sampled values
    params: dict[str, Any]  # the searched values the trial sampled
    history: list[dict[str, Any]]  # one row per epoch (`epoch_history`)
    planned: int  # epochs of a full trial
    start: float = math.inf  # seconds since the epoch, estimated from its first result
    # The epoch row `countnet export` takes and the trial is ranked by (`best_epoch`): its best
    # one by the target, or its last one under scope "last" (`rank_scope`).
    best: dict[str, Any] | None = None
    # epoch -> the checkpoint kept for it: Ray's record (ray.tune.Checkpoint), filled by
    # tune.results; empty when read from the files alone.
    checkpoints: dict[int, Any] = field(default_factory=dict)
    # Ray's latest kept checkpoint (`Result.checkpoint`), which `checkpoints` (the best by the
    # target) may lack; None when read from the files alone.
    latest_checkpoint: Any = None

    @property
    def epochs_run(self) -> int:
        return int(self.history[-1][STEP]) if self.history else 0

    @property
    def diverged(self) -> bool:
        return any(r.get(DIVERGED_KEY) is True for r in self.history)

    @property
    def stopped_early(self) -> bool:
        """Ended cleanly before its planned epochs: ASHA stopped it."""
        return self.status == TERMINATED and not self.diverged and self.epochs_run < self.planned

    @property
    def outcome(self) -> str:
        """complete, stopped@N, diverged, error, or the unfinished state in lower case."""
        if self.diverged:
            return "diverged"
        if self.status == ERROR:
            return "error"
        if self.stopped_early:
            return f"stopped@{self.epochs_run}"
        return "complete" if self.status == TERMINATED else self.status.lower()


def make_trial(trial_id: str, path: str | Path, status: str, config: dict[str, Any],
               params: dict[str, Any], rows: list[dict[str, Any]], metric: str, mode: str,
               planned: int | None = None, start: float = math.inf,
               checkpoints: dict[int, Any] | None = None,
               latest_checkpoint: Any = None, scope: str = SCOPE_ALL) -> Trial:
    """A Trial from its result rows, with its per-epoch history and best epoch.

    Args:
        trial_id: Ray's trial id.
        path: the trial's directory.
        status: TERMINATED, ERROR or an unfinished state.
        config: the trial's whole config.
        params: the searched values it sampled.
        rows: its result rows as reported (`countnet.rundir.parse_jsonl`), in order.
        metric: the target metric; the best epoch is ranked by it.
        mode: "min" or "max".
        planned: epochs of a full trial (default: the config's `epochs`, else 0).
        start: when it started (seconds since the epoch), for ordering.
        checkpoints: epoch -> the checkpoint kept for it.
        latest_checkpoint: Ray's latest kept checkpoint of the trial.
        scope: which epoch is its best (`best_epoch`): SCOPE_ALL or SCOPE_LAST
            (`rank_scope` of the search's target).
    """
    history = epoch_history(rows)
    if planned is None:
        planned = int(config.get("epochs", 0) or 0)
    trial = Trial(str(trial_id), str(path), status, dict(config), dict(params), history,
                  planned, start, checkpoints=dict(checkpoints or {}),
                  latest_checkpoint=latest_checkpoint)
    trial.best = best_epoch(history, metric, mode, scope=scope)
    return trial


def epoch_history(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch in epoch order, the last report of an epoch winning (a restarted trial
    repeats some); each row keeps the keys of METRIC_KEYS and `diverged` (not Ray's own)."""
    keys = (*METRIC_KEYS, DIVERGED_KEY)
    return [{k: r[k] for k in keys if k in r} for r in per_epoch(rows)]


def per_epoch(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch in epoch order, the last report of an epoch winning."""
    by_epoch = {}
    for row in rows:
        if STEP in row and is_finite(row[STEP]):
            by_epoch[int(row[STEP])] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def best_epoch(history: list[dict[str, Any]], metric: str, mode: str,
               epochs: set[int] | None = None,
               scope: str = SCOPE_ALL) -> dict[str, Any] | None:
    """The epoch row that stands for a trial: among the rows with a finite `metric`, diverged
    rows excluded, the best one (scope "all", the first on ties) or the last one (scope "last");
    None when there is no such row.

    Args:
        history: per-epoch rows in epoch order.
        metric: the metric to rank by.
        mode: "min" or "max" (unused under scope "last": the last row is taken as it is).
        epochs: only these epochs (None: all).
        scope: SCOPE_ALL or SCOPE_LAST (`rank_scope` of the search's target).
    """
    rows = [r for r in history if is_finite(r.get(metric)) and r.get(DIVERGED_KEY) is not True
            and (epochs is None or int(r[STEP]) in epochs)]
    if not rows:
        return None
    # Under scope "last" the row is the last finite epoch: the trainable checkpoints every
    # finite epoch and no other, so its checkpoint is the trial's latest, which Ray always keeps.
    return standing(rows, lambda r: r[metric], mode, scope)


def rank(trials: list[Trial], metric: str, mode: str) -> list[Trial]:
    """Trials that can be best (not diverged, with a finite value), best first, each by the
    value at its `Trial.best` (its best or its last epoch, as `make_trial`'s scope chose)."""
    ok = [t for t in trials if t.best is not None and not t.diverged]
    return sorted(ok, key=lambda t: t.best[metric], reverse=mode == "max")


def train_defaults() -> dict[str, Any]:
    """TrainConfig's default value of every field that has one."""
    return {f.name: f.default for f in dataclasses.fields(TrainConfig)
            if f.default is not dataclasses.MISSING}


# ---- experiments ------------------------------------------------------------------------------

@dataclass
class Experiment:
    """A search experiment: its target and its trials in the order they started."""

    path: Path
    metric: str
    mode: str
    trials: list[Trial]
    search: dict[str, Any] = field(default_factory=dict)  # the space's `search` mapping
    scheduler: dict[str, Any] = field(default_factory=dict)  # the space's `scheduler` mapping
    target: str = ""
    names: list[str] = field(default_factory=list)  # the searched fields (`searched_names`)

    @property
    def scope(self) -> str:
        """Which epoch stands for each trial (`rank_scope` of the target): "all" or "last"."""
        return rank_scope(self.target)

    def ranked(self) -> list[Trial]:
        """Trials with a best epoch, best first (diverged ones never rank)."""
        return rank(self.trials, self.metric, self.mode)

    def rungs(self) -> list[float]:
        """ASHA's rung epochs below max_epochs: grace_period * reduction_factor**k (Ray's)."""
        return rung_milestones(self.scheduler.get("grace_period"),
                               self.scheduler.get("reduction_factor"),
                               self.scheduler.get("max_epochs"))

    def effective_params(self, trial: Trial) -> dict[str, Any]:
        """Every searched field of `trial` with the value it trained with (`effective_params`)."""
        return effective_params(trial.config, self.names, train_defaults())


def load_experiment(exp_dir: str | Path) -> Experiment:
    """Every trial of an experiment directory, read from Ray's and countnet's files.

    A trial's status comes from its files: TERMINATED when Ray marked its last result `done`,
    ERROR when Ray wrote an error.txt and it did not end cleanly, UNFINISHED otherwise.

    Args:
        exp_dir: the experiment directory.

    Raises:
        ConfigError: no trial directory, or no trial reported an epoch.
        DataError: a file that cannot be read (the message names it).
    """
    exp = Path(exp_dir)
    info = _read_json(exp / SEARCH_INFO_FILE) if (exp / SEARCH_INFO_FILE).is_file() else {}
    metric, mode = info.get("metric", RUN_BEST_METRIC), info.get("mode", RUN_BEST_MODE)
    target = info.get("target", "")
    space = info.get("space") or {}
    search, scheduler = dict(space.get("search") or {}), dict(space.get("scheduler") or {})
    dirs = sorted(p.parent for p in exp.glob(f"*/{PARAMS_FILE}"))
    if not dirs:
        raise ConfigError(f"{exp}: no trials (no trial_*/{PARAMS_FILE}): the search has not "
                          f"started a trial, or this is not its experiment directory")
    configs = [_read_json(d / PARAMS_FILE) for d in dirs]
    names = searched_names(search, configs)
    trials = []
    for d, config in zip(dirs, configs):
        rows = read_jsonl(d / RESULT_FILE) or []
        done = bool(rows and rows[-1].get("done"))
        # A trial Ray restarted after a failure and that then ended keeps its error.txt.
        status = TERMINATED if done else ERROR if (d / ERROR_FILE).is_file() else UNFINISHED
        first = rows[0] if rows else {}
        start = float(first.get("timestamp", math.inf)) - float(first.get("time_this_iter_s", 0))
        trials.append(make_trial(
            str(first.get("trial_id") or d.name.removeprefix("trial_")), d, status, config,
            {n: config[n] for n in names if n in config}, rows, metric, mode,
            planned=int(config.get("epochs", scheduler.get("max_epochs", 0)) or 0),
            start=start, scope=rank_scope(target)))
    if not any(t.history for t in trials):
        raise ConfigError(f"{exp}: no trial reported an epoch yet ({len(trials)} trial "
                          f"directories, no {RESULT_FILE} rows)")
    trials.sort(key=lambda t: (t.start, t.trial_id))
    return Experiment(exp, metric, mode, trials, search, scheduler, target, names)


def searched_names(search: dict[str, Any], configs: list[dict[str, Any]]) -> list[str]:
    """The searched fields (and the switches of optional ones); without a space, the config
    keys whose values differ between trials."""
    if search:
        names = []
        for name, spec in search.items():
            if isinstance(spec, dict) and spec.get("optional"):
                names.append(SWITCH_PREFIX + name)
            names.append(name)
        return names
    keys = sorted({k for c in configs for k in c})
    return [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs}) > 1]


def effective_params(config: dict[str, Any], names: list[str],
                     defaults: dict[str, Any]) -> dict[str, Any]:
    """The value of each searched field that the trial trained with.

    A field a trial did not sample (a `when` condition off, an `optional` switch off) keeps its
    TrainConfig default, so every trial has every field: importances then compare like with
    like instead of dropping the fields a conditional space samples only sometimes.
    """
    out = {}
    for name in names:
        if name in config:
            out[name] = config[name]
        elif name.startswith(SWITCH_PREFIX) and name not in defaults:
            out[name] = False  # an optional field whose switch was not sampled is off
        elif name in defaults:
            out[name] = defaults[name]
    return out


# ---- run directories --------------------------------------------------------------------------

def load_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A run directory's per-epoch metrics (`countnet.rundir.read_metrics`) and its config.

    Args:
        run_dir: the run directory.

    Raises:
        DataError: no metrics.jsonl, or no epoch in it.
    """
    run = Path(run_dir)
    path = run / METRICS_FILE
    if not path.is_file():
        raise DataError(f"{run}: no {METRICS_FILE}: no epoch of this run finished yet")
    history = per_epoch(read_metrics(run))
    if not history:
        raise DataError(f"{path}: no epochs in it")
    config: dict[str, Any] = {}
    if (run / RUN_CONFIG_FILE).is_file():
        config = read_yaml(run / RUN_CONFIG_FILE) or {}
    return history, config


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read it as JSON ({exc})") from exc
