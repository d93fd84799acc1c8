"""`countnet export`: the best epoch of the best trial of a search, as a bundle.

"Best" is over every epoch of every trial: a trial whose val_loss bottomed out at epoch 5 of 8 is
exported with its epoch-5 weights, from the checkpoint Ray kept because it ranked best by the
target metric. Diverged trials are never candidates. The bundle loads without Ray.

Nothing here prints: `export_best` returns the lines to show and `confirm` reports each seed
through a callback; `countnet export` and `countnet search --export` print them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from countnet import suite
from countnet.bundle import BUNDLE_OUTPUT, write_bundle
from countnet.checkpoint import load_checkpoint
from countnet.config import ConfigError, TrainConfig
from countnet.formatting import nan_to_null
from countnet.outdir import check_out_dir
from countnet.train import METRIC_KEYS, Diverged, fit
from tune.results import TrialSummary, best_result, load_trials, read_search_info
from tune.storage import normalise


@dataclass(frozen=True)
class Exported:
    """What `export_best` wrote, and what to tell the user about it."""

    metrics: dict[str, Any]  # the bundle's metrics.json content
    lines: list[str]  # the report, in order: a note on the choice, the bundle, the held-out
    # figures, the confirm seeds' summary


def export_best(exp_dir: str | Path, out_dir: str | Path, *, metric: str | None = None,
                mode: str | None = None, confirm_seeds: int = 0, force: bool = False,
                flag: str = "--out", log: Callable[[str], None] | None = None) -> Exported:
    """Write the bundle of the best (trial, epoch); return its metrics.json content and the
    lines that report it.

    A non-empty `out_dir` is refused before any work unless `force` (then an earlier bundle is
    replaced whole). The bundle is staged and renamed into place (`write_bundle`). `log`, when
    given, gets a line per confirm seed as each finishes (retraining takes a while).
    """
    check_out_dir(out_dir, force=force, kind=BUNDLE_OUTPUT, flag=flag)
    info = read_search_info(exp_dir)
    metric, mode = _metric_and_mode(info, metric, mode)
    trials = load_trials(exp_dir, metric, mode)
    trial, row, checkpoint = pick_best(exp_dir, trials, metric, mode)
    note = unkept_best_note(trials, row, metric, mode)
    lines = [] if note is None else [note]
    epoch = int(row["epoch"])
    with checkpoint.as_directory() as local:  # downloads when the experiment is remote
        state = load_checkpoint(local)
    if int(state["epoch"]) != epoch:  # Ray's bookkeeping and the file must agree
        raise ConfigError(f"{checkpoint.path}: holds epoch {state['epoch']}, expected {epoch}")
    cfg = TrainConfig.from_dict(state["config"])
    metrics: dict[str, Any] = {
        "trial_id": trial.trial_id, "epoch": epoch, "metrics": row,
        "target": info.get("target"), "metric": metric, "mode": mode,
        "experiment": normalise(exp_dir), "checkpoint": checkpoint.path, "searched": trial.params,
        # Per-epoch metrics up to this epoch: `countnet diagnose BUNDLE` needs the printed losses.
        "history": [dict(h) for h in state["history"]],
    }
    if confirm_seeds:
        metrics["confirm_seeds"] = confirm(cfg, epoch, confirm_seeds, log=log)
    if suite.applies(cfg):  # the shift suite's figures, so that a search can rank by them
        metrics["suite"] = nan_to_null(suite.record_suite(state["model"], cfg))
    write_bundle(out_dir, state["model"], cfg, metrics)
    lines.append(f"exported trial {trial.trial_id} epoch {epoch} ({metric}={row[metric]:.4g}, "
                 f"val_acc={row['val_acc']:.3f}) to {out_dir}")
    if "suite" in metrics:  # data the search never saw: the held-out test split and the shifts
        lines.append(f"the winner on held-out data, {metrics['suite']['n_per_set']} images per "
                     f"set (metrics.json \"suite\"):")
        lines += suite.suite_table(metrics["suite"]["sets"])
    if confirm_seeds:
        lines.append(confirm_line(metrics["confirm_seeds"], row))
    return Exported(metrics, lines)


def confirm_line(confirmed: dict[str, Any], row: dict[str, Any]) -> str:
    """`confirm`'s mean +- std over seeds, next to the search's own run of the winner."""
    loss, acc = confirmed["val_loss"], confirmed["val_acc"]
    seeds = ",".join(map(str, confirmed["seeds"]))
    return (f"the winner retrained with seeds {seeds}, epoch {confirmed['epoch']}: val_loss "
            f"{loss['mean']:.4g} +- {loss['std']:.2g}, val_acc {acc['mean']:.3f} +- "
            f"{acc['std']:.3f} (the search's run: val_loss {row['val_loss']:.4g}, val_acc "
            f"{row['val_acc']:.3f})")


def pick_best(exp_dir: str | Path, trials: list[TrialSummary], metric: str,
              mode: str) -> tuple[TrialSummary, dict[str, Any], Any]:
    """The best (trial, epoch row, checkpoint): Ray's choice (`best_result`). It may not be the
    best epoch by `metric` overall (`unkept_best_note` says when)."""
    return best_result(exp_dir, trials, metric, mode)


def unkept_best_note(trials: list[TrialSummary], row: dict[str, Any], metric: str,
                     mode: str) -> str | None:
    """A note when the best epoch by `metric` is not the picked `row`: its checkpoint was not
    kept (ranking by another metric than Ray kept them by). None when it is."""
    pick = min if mode == "min" else max
    overall = [t.best[metric] for t in trials if t.best is not None and not t.diverged]
    if overall and pick(overall) != row[metric]:
        return (f"note: the best {metric} ({pick(overall):.4g}) was at an epoch whose checkpoint "
                f"was not kept; exporting the best kept one ({row[metric]:.4g})")
    return None


def confirm(cfg: TrainConfig, epoch: int, n: int,
            log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Retrain `cfg` with n other seeds; mean and std of val_loss and val_acc at `epoch`.

    `log`, when given, gets one line per seed as it finishes."""
    seeds = [cfg.seed + 1 + i for i in range(n)]
    rows = []
    for seed in seeds:
        try:
            # threads=0: all of this machine's cores, not the trial's share.
            history = fit(cfg.replace(seed=seed, threads=0))
        except Diverged:
            history = [{"val_loss": float("nan"), "val_acc": 0.0}]
        rows.append(history[min(epoch, len(history)) - 1])
        if log is not None:
            log(f"confirm seed {seed}: val_loss={rows[-1]['val_loss']:.4g} "
                f"val_acc={rows[-1]['val_acc']:.3f}")
    out: dict[str, Any] = {"seeds": seeds, "epoch": epoch}
    for key in ("val_loss", "val_acc"):
        values = [r[key] for r in rows]
        out[key] = {"mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "values": values}
    return out


def _metric_and_mode(info: dict[str, Any], metric: str | None,
                     mode: str | None) -> tuple[str, str]:
    if metric is not None and metric not in METRIC_KEYS:
        raise ConfigError(f"--metric: must be one of {', '.join(METRIC_KEYS)}; got {metric!r}")
    if metric is None:
        if not info:
            raise ConfigError("--metric and --mode are required: no countnet_search.json in "
                              "the experiment directory")
        return info["metric"], mode or info["mode"]
    if mode is None:
        if metric != info.get("metric"):
            raise ConfigError(f"--mode: required with --metric {metric} (min or max)")
        mode = info["mode"]
    return metric, mode
