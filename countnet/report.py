"""`countnet report`: a search experiment or a training run as PNG plots, a CSV and a Markdown page.

For an experiment directory (`countnet search`) it writes, into `--out` (default DIR/report):

- `history.png`: every trial's best-epoch target value in the order the trials started, the best
  so far, the trials ASHA stopped early marked;
- `importances.png`: Optuna's parameter importances over every trial's best-epoch value, the
  trials ASHA stopped included (`countnet.importances`);
- `curves.png`: train_loss, train_loss_eval and val_loss per epoch of the top trials, with ASHA's
  rungs and the best epoch marked;
- `rungs.png`: per ASHA rung, each trial's value there against its best value, with the
  Spearman rank correlation (`countnet.rung_audit`, `countnet.rung_report`);
- `error_by_count.png`: the winner's error by true count, when an evaluation with per-count
  figures is found (`countnet.by_count`: the experiment's or the exported bundle's `suite.json`,
  `evaluation.json` or `metrics.json`);
- `trials.csv`: one row per trial (outcome, epochs run, stopped early or not, best epoch and its
  metrics, config) and `report.md`, which links all of them.

For a run directory (`countnet train`) it writes `curves.png` (and `error_by_count.png`) and
`report.md`.

This module is the driver: what to draw, the CSV and the Markdown. The files are read without Ray
by `countnet.experiment` (a trial's best epoch is the one `countnet export` takes: for the overfit
target its last epoch, and the report says "last" where it would say "best"), and drawn by
`countnet.report_plots` on matplotlib's Agg canvas: no display, no browser.
"""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path
from typing import Any

from countnet.by_count import BY_COUNT_KEY, EVALUATION_FILES, find_by_count
from countnet.experiment import (
    RUN_BEST_METRIC,
    RUN_BEST_MODE,
    STEP,
    Experiment,
    Trial,
    best_epoch,
    load_experiment,
    load_run,
)
from countnet.formatting import format_params, is_finite
from countnet.importances import param_importances
from countnet.overfit_curve import scope_word
from countnet.overfit_report import is_overfit, overfit_section
from countnet.report_plots import plot_curves, plot_errors, plot_history, plot_importances
from countnet.rundir import EXPERIMENT, RUN, expect_kind
from countnet.rung_report import PNG_RUNGS, write_rung_audit

REPORT_DIR = "report"  # default output, inside the experiment or run directory
CSV_METRICS = ("train_loss", "train_loss_eval", "val_loss", "val_mae", "val_acc",
               "val_off_by_one", "gap", "lr_now")
TOP_CURVES = 4  # trials drawn in curves.png
WRAP = 70  # characters per line of a parameter list under a panel title
PNG_HISTORY, PNG_IMPORTANCES = "history.png", "importances.png"
PNG_CURVES, PNG_ERRORS = "curves.png", "error_by_count.png"
TRIALS_CSV, REPORT_MD = "trials.csv", "report.md"


def write_report(directory: str | Path, out_dir: str | Path | None = None, *,
                 bundle: str | Path | None = None, top: int = TOP_CURVES) -> Path:
    """The report of an experiment or run directory; returns the path of report.md.

    Args:
        directory: a `countnet search` experiment or a `countnet train` run directory.
        out_dir: where the files go (default directory/report).
        bundle: an exported bundle whose evaluation (per-count figures) to plot as the winner's.
        top: trials drawn in curves.png (>= 1; `countnet report --top` checks it).

    Raises:
        ConfigError: neither kind of directory (`countnet.rundir.expect_kind`), or an
            experiment without trials.
        DataError: unreadable files, or a run without epochs.
    """
    src = Path(directory)
    kind = expect_kind(src, (RUN, EXPERIMENT))
    out = Path(out_dir) if out_dir is not None else src / REPORT_DIR
    if kind == RUN:
        history, config = load_run(src)
        out.mkdir(parents=True, exist_ok=True)
        return _run_report(src, history, config, out)
    exp = load_experiment(src)
    out.mkdir(parents=True, exist_ok=True)
    return _experiment_report(exp, out, Path(bundle) if bundle else None, top)


def _experiment_report(exp: Experiment, out: Path, bundle: Path | None, top: int) -> Path:
    written: dict[str, Path] = {}
    notes: list[str] = []
    ranked = exp.ranked()
    word = scope_word(exp.scope)  # each trial stands by its "best" or its "last" epoch
    written["history"] = plot_history(exp, out / PNG_HISTORY)
    points = [(exp.effective_params(t), float(t.best[exp.metric])) for t in ranked]
    importances = param_importances(points, exp.mode, exp.search) if points else {}
    if importances:
        written["importances"] = plot_importances(
            importances, len(points), sum(t.stopped_early for t in ranked), exp.metric,
            out / PNG_IMPORTANCES, word=word)
    else:
        notes.append(f"no parameter importances: they need two trials with a finite "
                     f"{exp.metric} and a parameter that varies ({len(points)} trials)")
    if ranked:
        panels = [(f"#{i} {t.trial_id} ({t.outcome}): {word} {exp.metric} "
                   f"{t.best[exp.metric]:.4g} at epoch {int(t.best[STEP])}",
                   textwrap.fill(format_params(exp.effective_params(t)), WRAP), t.history,
                   int(t.best[STEP]))
                  for i, t in enumerate(ranked[:top], 1)]
        written["curves"] = plot_curves(panels, exp.rungs(), out / PNG_CURVES,
                                        exp.scheduler.get("max_epochs"),
                                        marker_label=f"{word} epoch")
    _, rung_lines = write_rung_audit({t.trial_id: t.history for t in exp.trials}, exp.rungs(),
                                     exp.metric, exp.mode, out, exp.scope)
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
    text = _experiment_md(exp, ranked, importances, written, notes, md.parent, rung_lines)
    if is_overfit(exp):  # the target `overfit`: its curves and the capacity ladder
        text += "\n" + "\n".join(overfit_section(exp, ranked, top, out)).rstrip() + "\n"
    md.write_text(text)
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


def _experiment_md(exp: Experiment, ranked: list[Trial], importances: dict[str, float],
                   written: dict[str, Path], notes: list[str], base: Path,
                   rung_lines: list[str]) -> str:
    def link(key: str, alt: str) -> list[str]:
        return [f"![{alt}]({written[key].relative_to(base)})", ""] if key in written else []

    word = scope_word(exp.scope)
    counts: dict[str, int] = {}
    for t in exp.trials:
        kind = "stopped early" if t.stopped_early else t.outcome
        counts[kind] = counts.get(kind, 0) + 1
    lines = [f"# Search report: {exp.path.name}", "",
             f"- experiment: `{exp.path}`",
             f"- target: {exp.target or '?'} ({exp.mode} `{exp.metric}`), each trial at its "
             f"{word} epoch (the one `countnet export` takes)",
             f"- trials: {len(exp.trials)} ("
             + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) + ")",
             f"- one row per trial: [{TRIALS_CSV}]({TRIALS_CSV})", ""]
    if ranked:
        lines += ["## Top trials", "",
                  f"| # | trial | outcome | {word} epoch | {exp.metric} | val_acc | parameters |",
                  "| ---: | --- | --- | ---: | ---: | ---: | --- |"]
        for i, t in enumerate(ranked[:10], 1):
            b = t.best
            acc = f"{b['val_acc']:.3f}" if is_finite(b.get("val_acc")) else "-"
            lines.append(f"| {i} | {t.trial_id} | {t.outcome} | {int(b[STEP])} | "
                         f"{b[exp.metric]:.4g} | {acc} | "
                         f"{format_params(exp.effective_params(t))} |")
        lines.append("")
    lines += ["## Optimisation history", "", *link("history", "optimisation history")]
    lines += ["## Parameter importances", ""]
    if importances:
        lines += [f"Over the {word}-epoch {exp.metric} of all {len(ranked)} ranked trials, the "
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
    subtitle = textwrap.fill(format_params({k: config[k] for k in keys if k in config}), WRAP)
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


def _csv_value(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, (list, dict)) else v
