"""`countnet report`: a search experiment or a training run as PNG plots, a CSV and a Markdown page.

For an experiment directory (`countnet search`) it writes, into `--out` (default DIR/report):

- `history.png`: every trial's best-epoch target value in the order the trials started, the best
  so far, the trials ASHA stopped early marked;
- `importances.png`: Optuna's parameter importances over every trial's best-epoch value, the
  trials ASHA stopped included (Optuna's own importances use COMPLETE trials only, and in an ASHA
  search most trials are PRUNED);
- `curves.png`: train_loss, train_loss_eval and val_loss per epoch of the top trials, with ASHA's
  rungs and the best epoch marked;
- `rungs.png`: per ASHA rung, each trial's value there against its best value, with the
  Spearman rank correlation (`countnet.rung_audit`, `countnet.rung_report`);
- `error_by_count.png`: the winner's error by true count, when an evaluation with per-count
  figures is found (the experiment's or the exported bundle's `suite.json`, `evaluation.json` or
  `metrics.json`);
- `trials.csv`: one row per trial (outcome, epochs run, stopped early or not, best epoch and its
  metrics, config) and `report.md`, which links all of them.

For a run directory (`countnet train`) it writes `curves.png` (and `error_by_count.png`) and
`report.md`.

Everything is read from the files themselves (no Ray): per trial Ray's `params.json` (the config)
and `result.json` (one JSON line per epoch), and `countnet_search.json` (target, space). A trial's
best epoch is the best finite target value over its epochs, diverged trials excluded: the epoch
`countnet export` takes. Plots use matplotlib's Agg canvas: no display, no browser.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from countnet.config import ConfigError, TrainConfig, read_yaml
from countnet.folder import DataError
from countnet.rung_audit import rung_milestones
from countnet.rung_report import PNG_RUNGS, write_rung_audit

REPORT_DIR = "report"  # default output, inside the experiment or run directory
SEARCH_INFO_FILE = "countnet_search.json"  # written by `countnet search` (tune.results)
PARAMS_FILE = "params.json"  # Ray: a trial's config
RESULT_FILE = "result.json"  # Ray: one JSON line per reported epoch
ERROR_FILE = "error.txt"  # Ray: a trial's traceback when it failed
METRICS_FILE = "metrics.jsonl"  # countnet train: one JSON line per epoch (countnet.rundir)
RUN_CONFIG_FILE = "config.yaml"  # countnet train: the resolved config
EVALUATION_FILES = ("suite.json", "evaluation.json", "metrics.json")  # where per-count data lives
BY_COUNT_KEY = "by_count"  # countnet.evaluate.score: [{"count", "n", "mae", "acc", ...}, ...]
DIVERGED_KEY = "diverged"  # = tune.optuna_search.DIVERGED_KEY (set by the trainable)
SWITCH_PREFIX = "use_"  # = tune.space.SWITCH_PREFIX: the on/off switch of an `optional` field
STEP = "epoch"
RUN_BEST_METRIC, RUN_BEST_MODE = "val_loss", "min"  # = countnet.rundir.BEST_METRIC
CURVE_KEYS = ("train_loss", "train_loss_eval", "val_loss")
CURVE_LABELS = {"train_loss": "train_loss (train mode, running mean)",
                "train_loss_eval": "train_loss_eval (eval mode)",
                "val_loss": "val_loss (eval mode)"}
CURVE_STYLES = {"train_loss": dict(color="tab:orange", linestyle="--", marker="."),
                "train_loss_eval": dict(color="tab:blue", linestyle="-", marker="."),
                "val_loss": dict(color="tab:green", linestyle="-", marker="o", markersize=3)}
CSV_METRICS = ("train_loss", "train_loss_eval", "val_loss", "val_mae", "val_acc",
               "val_off_by_one", "gap", "lr_now")
TOP_CURVES = 4  # trials drawn in curves.png
MAX_POINT_LABELS = 30  # history.png names each trial's point up to this many trials
MAX_EVAL_SERIES = 6  # per-count series drawn in error_by_count.png
LOG_SCALE_RATIO = 20.0  # a positive axis spanning more than this factor is drawn log-scaled
DPI = 110
FONT_SIZE = 10
WRAP = 70  # characters per line of a parameter list under a panel title
IMPORTANCE_SEED = 0  # fANOVA's random forest: the same report for the same experiment
PNG_HISTORY, PNG_IMPORTANCES = "history.png", "importances.png"
PNG_CURVES, PNG_ERRORS = "curves.png", "error_by_count.png"
TRIALS_CSV, REPORT_MD = "trials.csv", "report.md"


@dataclass
class TrialRecord:
    """One trial as the report sees it, read from its directory."""

    trial_id: str
    path: Path
    config: dict[str, Any]  # Ray's config: fixed + sampled values
    params: dict[str, Any]  # the searched fields, with the value the trial used
    history: list[dict[str, Any]]  # one row per epoch
    planned: int  # epochs of a full trial
    done: bool  # Ray marked its last result final (finished or stopped)
    error: bool  # Ray wrote an error.txt and the trial did not end cleanly
    start: float  # seconds since the epoch, estimated from its first result
    best: dict[str, Any] | None = None  # the epoch row `countnet export` takes

    @property
    def epochs_run(self) -> int:
        return int(self.history[-1][STEP]) if self.history else 0

    @property
    def diverged(self) -> bool:
        return any(r.get(DIVERGED_KEY) is True for r in self.history)

    @property
    def stopped_early(self) -> bool:
        """Ended cleanly before its planned epochs: ASHA stopped it."""
        return (self.done and not self.error and not self.diverged
                and self.epochs_run < self.planned)

    @property
    def outcome(self) -> str:
        """As in `countnet search`'s table: complete, stopped@N, diverged, error, unfinished."""
        if self.diverged:
            return "diverged"
        if self.error:
            return "error"
        if self.stopped_early:
            return f"stopped@{self.epochs_run}"
        return "complete" if self.done else "unfinished"


@dataclass
class Experiment:
    """A search experiment: its target and its trials in the order they started."""

    path: Path
    metric: str
    mode: str
    trials: list[TrialRecord]
    search: dict[str, Any] = field(default_factory=dict)  # the space's `search` mapping
    scheduler: dict[str, Any] = field(default_factory=dict)  # the space's `scheduler` mapping
    target: str = ""

    def ranked(self) -> list[TrialRecord]:
        """Trials with a best epoch, best first (diverged ones never rank)."""
        ok = [t for t in self.trials if t.best is not None and not t.diverged]
        return sorted(ok, key=lambda t: t.best[self.metric], reverse=self.mode == "max")

    def rungs(self) -> list[float]:
        """ASHA's rung epochs below max_epochs: grace_period * reduction_factor**k (Ray's)."""
        return rung_milestones(self.scheduler.get("grace_period"),
                               self.scheduler.get("reduction_factor"),
                               self.scheduler.get("max_epochs"))


# ---- reading ----------------------------------------------------------------------------------

def is_experiment(path: Path) -> bool:
    """A `countnet search` experiment (or any Ray Tune one with trial directories)."""
    return ((path / SEARCH_INFO_FILE).is_file() or any(path.glob("experiment_state-*.json"))
            or any(path.glob(f"*/{PARAMS_FILE}")))


def is_run(path: Path) -> bool:
    """A `countnet train` run directory."""
    return (path / METRICS_FILE).is_file() or (path / RUN_CONFIG_FILE).is_file()


def load_experiment(exp_dir: str | Path) -> Experiment:
    """Every trial of an experiment directory, read from Ray's and countnet's files.

    Args:
        exp_dir: the experiment directory.

    Raises:
        ConfigError: no trial directory, or no trial reported an epoch.
        DataError: a file that cannot be read (the message names it).
    """
    exp = Path(exp_dir)
    info = _read_json(exp / SEARCH_INFO_FILE) if (exp / SEARCH_INFO_FILE).is_file() else {}
    metric, mode = info.get("metric", RUN_BEST_METRIC), info.get("mode", RUN_BEST_MODE)
    space = info.get("space") or {}
    search, scheduler = dict(space.get("search") or {}), dict(space.get("scheduler") or {})
    dirs = sorted(p.parent for p in exp.glob(f"*/{PARAMS_FILE}"))
    if not dirs:
        raise ConfigError(f"{exp}: no trials (no trial_*/{PARAMS_FILE}): the search has not "
                          f"started a trial, or this is not its experiment directory")
    configs = [_read_json(d / PARAMS_FILE) for d in dirs]
    names = searched_names(search, configs)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                if f.default is not dataclasses.MISSING}
    trials = []
    for d, config in zip(dirs, configs):
        rows = _read_jsonl(d / RESULT_FILE) if (d / RESULT_FILE).is_file() else []
        history = _per_epoch(rows)
        done = bool(rows and rows[-1].get("done"))
        planned = int(config.get("epochs", scheduler.get("max_epochs", 0)) or 0)
        first = rows[0] if rows else {}
        start = float(first.get("timestamp", math.inf)) - float(first.get("time_this_iter_s", 0))
        record = TrialRecord(
            trial_id=str(first.get("trial_id") or d.name.removeprefix("trial_")), path=d,
            config=config, params=effective_params(config, names, defaults), history=history,
            planned=planned, done=done,
            # A trial Ray restarted after a failure and that then ended keeps its error.txt.
            error=(d / ERROR_FILE).is_file() and not done, start=start)
        record.best = best_epoch(history, metric, mode)
        trials.append(record)
    if not any(t.history for t in trials):
        raise ConfigError(f"{exp}: no trial reported an epoch yet ({len(trials)} trial "
                          f"directories, no {RESULT_FILE} rows)")
    trials.sort(key=lambda t: (t.start, t.trial_id))
    return Experiment(exp, metric, mode, trials, search, scheduler, info.get("target", ""))


def load_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A run directory's per-epoch metrics and its config.

    Raises:
        DataError: no metrics.jsonl, or no epoch in it.
    """
    run = Path(run_dir)
    path = run / METRICS_FILE
    if not path.is_file():
        raise DataError(f"{run}: no {METRICS_FILE}: no epoch of this run finished yet")
    history = _per_epoch(_read_jsonl(path))
    if not history:
        raise DataError(f"{path}: no epochs in it")
    config: dict[str, Any] = {}
    if (run / RUN_CONFIG_FILE).is_file():
        config = read_yaml(run / RUN_CONFIG_FILE) or {}
    return history, config


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


def best_epoch(history: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    """The epoch row with the best finite `metric`, diverged rows excluded; the first on ties.

    The same choice as `tune.results.best_row`, which `countnet export` uses.
    """
    rows = [r for r in history if _finite(r.get(metric)) and r.get(DIVERGED_KEY) is not True]
    if not rows:
        return None
    pick = min if mode == "min" else max
    return pick(rows, key=lambda r: r[metric])


def _per_epoch(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch, the last report of an epoch winning (a restarted trial repeats some)."""
    by_epoch = {}
    for row in rows:
        if STEP in row and _finite(row[STEP]):
            by_epoch[int(row[STEP])] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read it as JSON ({exc})") from exc


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read it ({exc})") from exc
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines):  # a line cut short by a crash mid-write: the epochs before count
                break
            raise DataError(f"{path}:{i}: not a JSON line ({exc.msg})") from exc
        if isinstance(row, dict):
            rows.append(row)
    return rows


# ---- parameter importances --------------------------------------------------------------------

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
        defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)
                    if f.default is not dataclasses.MISSING}
    names = sorted({k for t in study.trials for k in t.params})
    pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    out = []
    for t in study.trials:
        if t.state == states.COMPLETE and _finite(t.value):
            value = t.value
        elif t.state == states.PRUNED:
            finite = [v for v in t.intermediate_values.values() if _finite(v)]
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


# ---- evaluation (per-count errors) ------------------------------------------------------------

def find_by_count(paths: list[Path]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Per-count figures (`by_count` lists, as `countnet evaluate` writes) found in JSON files.

    Args:
        paths: directories to look in (EVALUATION_FILES in each) or JSON files.

    Returns:
        (label, rows) per series: the label names the file and, inside it, the set.
    """
    files = []
    for p in paths:
        if p.is_dir():
            files += [p / name for name in EVALUATION_FILES if (p / name).is_file()]
        elif p.is_file():
            files.append(p)
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # not an evaluation: nothing to plot from it
        for where, rows in _by_count_lists(data, ()):
            label = f"{f.parent.name}/{f.name}" + (f" {'/'.join(where)}" if where else "")
            out.append((label, rows))
    return out


def _by_count_lists(obj: Any, where: tuple[str, ...]) -> list[tuple[tuple[str, ...], list]]:
    found = []
    if isinstance(obj, dict):
        rows = obj.get(BY_COUNT_KEY)
        if isinstance(rows, list) and rows and all(
                isinstance(r, dict) and "count" in r and "mae" in r for r in rows):
            found.append((where, rows))
        for key, value in obj.items():
            if key != BY_COUNT_KEY:
                found += _by_count_lists(value, (*where, str(key)))
    return found


# ---- plots ------------------------------------------------------------------------------------

def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on an Agg canvas: no pyplot state, no display needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    # bbox_inches="tight": nothing (legend, long titles) is cut off at the edges.
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    return path


def _style(ax: Any) -> None:
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=FONT_SIZE - 1)


def _maybe_log(ax: Any, values: list[float]) -> None:
    """Log-scale the y axis when positive values span more than LOG_SCALE_RATIO."""
    from matplotlib.ticker import FuncFormatter

    finite = [v for v in values if _finite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > LOG_SCALE_RATIO:
        ax.set_yscale("log")
        # Plain numbers (1, 2, 5, 10, 20, 50), not 2 x 10^0; minor ticks at 2 and 5 only.
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label))


def _minor_log_label(v: float, _pos: Any = None) -> str:
    """A minor log tick's label: 2x and 5x a power of ten get one, the rest none (legibility)."""
    if v <= 0:
        return ""
    mantissa = v / 10 ** math.floor(math.log10(v))
    return f"{v:g}" if round(mantissa) in (2, 5) and abs(mantissa - round(mantissa)) < 1e-6 \
        else ""


def plot_history(exp: Experiment, path: Path) -> Path:
    """Best-epoch target value per trial in start order, best so far, ASHA-stopped marked."""
    fig = _figure(8.0, 4.6)
    ax = fig.subplots()
    better = (lambda a, b: a < b) if exp.mode == "min" else (lambda a, b: a > b)
    xs_best, ys_best, best = [], [], None
    groups: dict[str, tuple[list[int], list[float]]] = {
        "ran all epochs": ([], []), "stopped early by ASHA": ([], []), "other": ([], [])}
    no_value = []
    for i, t in enumerate(exp.trials, 1):
        if t.best is None or t.diverged:
            no_value.append(i)
            continue
        v = float(t.best[exp.metric])
        key = ("stopped early by ASHA" if t.stopped_early
               else "ran all epochs" if t.outcome == "complete" else "other")
        groups[key][0].append(i)
        groups[key][1].append(v)
        if best is None or better(v, best):
            best = v
        xs_best.append(i)
        ys_best.append(best)
    ax.step(xs_best, ys_best, where="post", color="tab:red", linewidth=1.5, label="best so far")
    styles = {"ran all epochs": dict(marker="o", color="tab:blue", s=36),
              "stopped early by ASHA": dict(marker="X", color="tab:orange", s=50),
              "other": dict(marker="s", color="tab:gray", s=30)}
    for name, (xs, ys) in groups.items():
        if xs:
            label = "unfinished or failed" if name == "other" else name
            ax.scatter(xs, ys, label=f"{label} ({len(xs)})", zorder=3, **styles[name])
    _maybe_log(ax, [v for _, ys in groups.values() for v in ys])
    if len(exp.trials) <= MAX_POINT_LABELS:  # which trial is which, as in trials.csv
        for i, t in enumerate(exp.trials, 1):
            if t.best is not None and not t.diverged:
                ax.annotate(t.trial_id, (i, float(t.best[exp.metric])), fontsize=FONT_SIZE - 3,
                            xytext=(4, 4), textcoords="offset points", color="0.35")
    for i in no_value:  # diverged or no epoch: no value to plot; a tick at the bottom says so
        ax.axvline(i, color="tab:red", alpha=0.25, linewidth=4)
    if no_value:
        ax.plot([], [], color="tab:red", alpha=0.25, linewidth=4,
                label=f"diverged / no value ({len(no_value)})")
    ax.set_xlabel("trial, in the order the trials started", fontsize=FONT_SIZE)
    ax.set_ylabel(f"{exp.metric} at the trial's best epoch ({exp.mode})", fontsize=FONT_SIZE)
    ax.set_title(f"Optimisation history: {len(exp.trials)} trials, "
                 f"{sum(t.stopped_early for t in exp.trials)} stopped early by ASHA",
                 fontsize=FONT_SIZE + 1)
    # Room on the right for the last point's trial-id label.
    ax.set_xlim(0.5, len(exp.trials) + (0.9 if len(exp.trials) <= MAX_POINT_LABELS else 0.5))
    ax.xaxis.get_major_locator().set_params(integer=True)
    _style(ax)
    ax.legend(fontsize=FONT_SIZE - 1, loc="best")
    return _save(fig, path)


def plot_importances(importances: dict[str, float], n_trials: int, n_stopped: int,
                     metric: str, path: Path) -> Path:
    """Horizontal bars, most important on top."""
    names = list(importances)[::-1]
    fig = _figure(7.5, 1.4 + 0.42 * len(names))
    ax = fig.subplots()
    values = [importances[n] for n in names]
    bars = ax.barh(names, values, color="tab:blue")
    for bar, v in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.2f}",
                va="center", fontsize=FONT_SIZE - 1)
    ax.set_xlim(0, max(values) * 1.18 if values else 1)
    ax.set_xlabel(f"importance for {metric} (fANOVA, sums to 1)", fontsize=FONT_SIZE)
    ax.set_ylabel("parameter", fontsize=FONT_SIZE)
    ax.set_title(f"Parameter importances over {n_trials} trials' best epochs\n"
                 f"({n_stopped} of them stopped early by ASHA)", fontsize=FONT_SIZE + 1)
    _style(ax)
    ax.grid(False, axis="y")
    return _save(fig, path)


def plot_curves(panels: list[tuple[str, str, list[dict[str, Any]], int | None]],
                rungs: list[float], path: Path, max_epochs: int | None = None) -> Path:
    """Learning curves: one panel per (title, subtitle, history, best epoch).

    Args:
        panels: what each panel shows.
        rungs: ASHA's rung epochs, drawn as vertical dotted lines ([] for a single run).
        path: the PNG to write.
        max_epochs: the x axis' end (default: the longest history).
    """
    n = len(panels)
    cols = 1 if n == 1 else 2
    rows = math.ceil(n / cols)
    fig = _figure(6.2 * cols, 3.9 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False)
    last = max_epochs or max(int(h[-1][STEP]) for _, _, h, _ in panels)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.set_visible(False)
            continue
        title, subtitle, history, best = panels[k]
        epochs = [int(r[STEP]) for r in history]
        values = []
        for key in CURVE_KEYS:
            pts = [(e, r[key]) for e, r in zip(epochs, history) if _finite(r.get(key))]
            if pts:
                ax.plot(*zip(*pts), label=CURVE_LABELS[key], **CURVE_STYLES[key])
                values += [v for _, v in pts]
        for i, r in enumerate(rungs):
            ax.axvline(r, color="gray", linestyle=":", linewidth=1.2,
                       label="ASHA rung" if i == 0 else None)
        if best is not None:
            row = next((r for r in history if int(r[STEP]) == best), None)
            if row is not None and _finite(row.get("val_loss")):
                # Hollow: the val_loss point under it stays visible.
                ax.plot([best], [row["val_loss"]], marker="*", markersize=16,
                        markerfacecolor="none", markeredgecolor="tab:red", markeredgewidth=1.5,
                        linestyle="none", label="best epoch", zorder=4)
        _maybe_log(ax, values)
        ax.set_xlim(0.7, last + 0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch", fontsize=FONT_SIZE)
        ax.set_ylabel("loss", fontsize=FONT_SIZE)
        text = title + (f"\n{subtitle}" if subtitle else "")
        ax.set_title(text, fontsize=FONT_SIZE - 0.5, loc="left")
        _style(ax)
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center",
               ncol=min(3, len(labels)), fontsize=FONT_SIZE - 1, frameon=False)
    return _save(fig, path)


def plot_errors(series: list[tuple[str, list[dict[str, Any]]]], title: str, path: Path) -> Path:
    """MAE and exact-count accuracy by true count, one line per evaluated set."""
    fig = _figure(9.5, 4.2)
    ax_mae, ax_acc = fig.subplots(1, 2)
    for label, rows in series[:MAX_EVAL_SERIES]:
        rows = sorted(rows, key=lambda r: r["count"])
        counts = [r["count"] for r in rows]
        ax_mae.plot(counts, [r["mae"] for r in rows], marker=".", label=label)
        if all("acc" in r for r in rows):
            ax_acc.plot(counts, [r["acc"] for r in rows], marker=".", label=label)
    ax_mae.set_xlabel("true count", fontsize=FONT_SIZE)
    ax_mae.set_ylabel("mean absolute error (objects)", fontsize=FONT_SIZE)
    ax_mae.set_title("error by true count", fontsize=FONT_SIZE)
    ax_acc.set_xlabel("true count", fontsize=FONT_SIZE)
    ax_acc.set_ylabel("exact-count accuracy", fontsize=FONT_SIZE)
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_title("accuracy by true count", fontsize=FONT_SIZE)
    for ax in (ax_mae, ax_acc):
        _style(ax)
        ax.xaxis.get_major_locator().set_params(integer=True)  # counts are whole numbers
    handles, labels = ax_mae.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=FONT_SIZE - 1,
               frameon=False)
    fig.suptitle(title, fontsize=FONT_SIZE + 1)
    return _save(fig, path)


# ---- the report -------------------------------------------------------------------------------

def write_report(directory: str | Path, out_dir: str | Path | None = None, *,
                 bundle: str | Path | None = None, top: int = TOP_CURVES) -> Path:
    """The report of an experiment or run directory; returns the path of report.md.

    Args:
        directory: a `countnet search` experiment or a `countnet train` run directory.
        out_dir: where the files go (default directory/report).
        bundle: an exported bundle whose evaluation (per-count figures) to plot as the winner's.
        top: trials drawn in curves.png.

    Raises:
        DataError: not a directory, neither kind of directory, or unreadable files.
        ConfigError: an experiment without trials.
    """
    src = Path(directory)
    if not src.is_dir():
        raise DataError(f"{src}: no such directory")
    out = Path(out_dir) if out_dir is not None else src / REPORT_DIR
    if is_run(src) and not is_experiment(src):
        history, config = load_run(src)
        out.mkdir(parents=True, exist_ok=True)
        return _run_report(src, history, config, out)
    if not is_experiment(src):
        raise DataError(f"{src}: neither a run directory ({METRICS_FILE}) nor a search "
                        f"experiment ({SEARCH_INFO_FILE}, trial_*/{PARAMS_FILE})")
    exp = load_experiment(src)
    out.mkdir(parents=True, exist_ok=True)
    return _experiment_report(exp, out, Path(bundle) if bundle else None, max(1, top))


def _experiment_report(exp: Experiment, out: Path, bundle: Path | None, top: int) -> Path:
    written: dict[str, Path] = {}
    notes: list[str] = []
    ranked = exp.ranked()
    written["history"] = plot_history(exp, out / PNG_HISTORY)
    points = [(dict(t.params), float(t.best[exp.metric])) for t in ranked]
    importances = param_importances(points, exp.mode, exp.search) if points else {}
    if importances:
        written["importances"] = plot_importances(
            importances, len(points), sum(t.stopped_early for t in ranked), exp.metric,
            out / PNG_IMPORTANCES)
    else:
        notes.append(f"no parameter importances: they need two trials with a finite "
                     f"{exp.metric} and a parameter that varies ({len(points)} trials)")
    if ranked:
        panels = [(f"#{i} {t.trial_id} ({t.outcome}): best {exp.metric} "
                   f"{t.best[exp.metric]:.4g} at epoch {int(t.best[STEP])}",
                   textwrap.fill(_params_text(t.params), WRAP), t.history, int(t.best[STEP]))
                  for i, t in enumerate(ranked[:top], 1)]
        written["curves"] = plot_curves(panels, exp.rungs(), out / PNG_CURVES,
                                        exp.scheduler.get("max_epochs"))
    _, rung_lines = write_rung_audit({t.trial_id: t.history for t in exp.trials}, exp.rungs(),
                                     exp.metric, exp.mode, out)
    series = find_by_count([p for p in (bundle, exp.path) if p is not None])
    if series:
        winner = ranked[0].trial_id if ranked else "?"
        written["errors"] = plot_errors(series, f"Winner ({winner}): error by true count",
                                        out / PNG_ERRORS)
    else:
        where = ", ".join(str(p) for p in (bundle, exp.path) if p is not None)
        notes.append(f"no error-by-count plot: no evaluation with per-count figures "
                     f"(`{BY_COUNT_KEY}` in {'/'.join(EVALUATION_FILES)}) in {where}")
    written["csv"] = write_trials_csv(exp, out / TRIALS_CSV)
    md = out / REPORT_MD
    md.write_text(_experiment_md(exp, ranked, importances, written, notes, md.parent,
                                 rung_lines))
    return md


def write_trials_csv(exp: Experiment, path: Path) -> Path:
    """One row per trial (start order): outcome, epochs, best epoch and its metrics, config."""
    config_keys: list[str] = []
    for t in exp.trials:
        config_keys += [k for k in t.config if k not in config_keys]
    head = ["order", "trial_id", "outcome", "epochs_run", "epochs_planned", "stopped_early",
            "diverged", "best_epoch", *(f"best_{m}" for m in CSV_METRICS),
            *(f"config.{k}" for k in config_keys)]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for i, t in enumerate(exp.trials, 1):
            b = t.best or {}
            w.writerow([i, t.trial_id, t.outcome, t.epochs_run, t.planned, t.stopped_early,
                        t.diverged, int(b[STEP]) if b else "", *(b.get(m, "") for m in
                                                                  CSV_METRICS),
                        *(_csv_value(t.config.get(k, "")) for k in config_keys)])
    return path


def _experiment_md(exp: Experiment, ranked: list[TrialRecord], importances: dict[str, float],
                   written: dict[str, Path], notes: list[str], base: Path,
                   rung_lines: list[str]) -> str:
    def link(key: str, alt: str) -> list[str]:
        return [f"![{alt}]({written[key].relative_to(base)})", ""] if key in written else []

    counts: dict[str, int] = {}
    for t in exp.trials:
        kind = "stopped early" if t.stopped_early else t.outcome
        counts[kind] = counts.get(kind, 0) + 1
    lines = [f"# Search report: {exp.path.name}", "",
             f"- experiment: `{exp.path}`",
             f"- target: {exp.target or '?'} ({exp.mode} `{exp.metric}`), each trial at its "
             f"best epoch (the one `countnet export` takes)",
             f"- trials: {len(exp.trials)} ("
             + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ")",
             f"- one row per trial: [{TRIALS_CSV}]({TRIALS_CSV})", ""]
    if ranked:
        lines += ["## Top trials", "",
                  f"| # | trial | outcome | best epoch | {exp.metric} | val_acc | parameters |",
                  "| ---: | --- | --- | ---: | ---: | ---: | --- |"]
        for i, t in enumerate(ranked[:10], 1):
            b = t.best
            acc = f"{b['val_acc']:.3f}" if _finite(b.get("val_acc")) else "-"
            lines.append(f"| {i} | {t.trial_id} | {t.outcome} | {int(b[STEP])} | "
                         f"{b[exp.metric]:.4g} | {acc} | {_params_text(t.params)} |")
        lines.append("")
    lines += ["## Optimisation history", "", *link("history", "optimisation history")]
    lines += ["## Parameter importances", ""]
    if importances:
        lines += [f"Over the best-epoch {exp.metric} of all {len(ranked)} ranked trials, the "
                  f"ones ASHA stopped included: "
                  + ", ".join(f"`{k}` {v:.2f}" for k, v in importances.items()) + ".", "",
                  *link("importances", "parameter importances")]
    lines += ["## Learning curves of the top trials", "",
              "train_loss is the running train-mode mean over the epoch; train_loss_eval and "
              "val_loss are eval-mode losses after the epoch. Dotted lines: ASHA's rungs.", "",
              *link("curves", "learning curves"), *rung_lines]
    if "errors" in written:
        lines += ["## The winner's error by true count", "", *link("errors", "error by count")]
    if notes:
        lines += ["## Notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines).rstrip() + "\n"


def _run_report(run: Path, history: list[dict[str, Any]], config: dict[str, Any],
                out: Path) -> Path:
    written: dict[str, Path] = {}
    best = best_epoch(history, RUN_BEST_METRIC, RUN_BEST_MODE)
    epoch = int(best[STEP]) if best else None
    title = (f"{run.name}: best {RUN_BEST_METRIC} {best[RUN_BEST_METRIC]:.4g} at epoch {epoch}"
             if best else f"{run.name}: no finite {RUN_BEST_METRIC}")
    keys = ("model", "width", "depth", "lr", "batch_size", "schedule", "epochs")
    subtitle = textwrap.fill(_params_text({k: config[k] for k in keys if k in config}), WRAP)
    written["curves"] = plot_curves([(title, subtitle, history, epoch)], [], out / PNG_CURVES,
                                    int(config.get("epochs") or 0) or None)
    series = find_by_count([run])
    if series:
        written["errors"] = plot_errors(series, f"{run.name}: error by true count",
                                        out / PNG_ERRORS)
    lines = [f"# Run report: {run.name}", "", f"- run directory: `{run}`",
             f"- epochs: {int(history[-1][STEP])}"]
    if best:
        lines.append(f"- best epoch {epoch}: val_loss {best['val_loss']:.4g}, val_acc "
                     f"{best.get('val_acc', float('nan')):.3f}")
    lines += ["", "## Learning curves", "",
              f"![learning curves]({written['curves'].relative_to(out)})", ""]
    if "errors" in written:
        lines += ["## Error by true count", "",
                  f"![error by count]({written['errors'].relative_to(out)})", ""]
    else:
        lines += ["## Notes", "", f"- no error-by-count plot: no per-count figures "
                  f"(`{BY_COUNT_KEY}`) in {'/'.join(EVALUATION_FILES)} of {run}", ""]
    md = out / REPORT_MD
    md.write_text("\n".join(lines).rstrip() + "\n")
    return md


def report_files(md: Path) -> list[Path]:
    """The files of the report whose report.md is `md`, report.md last."""
    names = (PNG_HISTORY, PNG_IMPORTANCES, PNG_CURVES, PNG_RUNGS, PNG_ERRORS, TRIALS_CSV,
             REPORT_MD)
    return [md.parent / n for n in names if (md.parent / n).is_file()]


def _params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in params.items())


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _csv_value(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, (list, dict)) else v


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
