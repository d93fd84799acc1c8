"""`countnet export`: the best epoch of the best trial of a search, as a bundle.

"Best" is over every epoch of every trial: a trial whose val_loss bottomed out at epoch 5 of 8 is
exported with its epoch-5 weights, from the checkpoint Ray kept because it ranked best by the
target metric. For the overfit target each trial is its last epoch instead (`rank_scope`: the
baseline is the net that memorised its training set, at the end of training): the most overfit
trial by its final gap, exported from its latest checkpoint, which Ray always keeps; `--epoch
best-val` exports its min-val_loss epoch (the early-stopped twin). Diverged trials are never
candidates. The bundle loads without Ray.

Nothing here prints: `export_best` returns the lines to show and `confirm` reports each seed
through a callback; `countnet export` and `countnet search --export` print them.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from countnet import suite
from countnet.bundle import BUNDLE_OUTPUT, write_bundle
from countnet.checkpoint import load_checkpoint
from countnet.config import ConfigError, TrainConfig
from countnet.experiment import Trial
from countnet.formatting import format_params, nan_to_null
from countnet.outdir import check_out_dir
from countnet.overfit_curve import (
    OVERFIT_TARGET,
    SCOPE_ALL,
    OverfitCurve,
    overfit_curve,
    overfit_lines,
    rank_scope,
)
from countnet.rundir import CHECKPOINT, kind_of
from countnet.train import METRIC_KEYS, Diverged, fit
from tune.results import best_result, load_trials, read_search_info
from tune.storage import normalise
from tune.trainable import BEST_VAL_DIR

BEST_EPOCH, BEST_VAL = "best", "best-val"  # `countnet export --epoch`


@dataclass(frozen=True)
class Exported:
    """What `export_best` wrote, and what to tell the user about it."""

    metrics: dict[str, Any]  # the bundle's metrics.json content
    lines: list[str]  # the report, in order: a note on the choice, the bundle, the held-out
    # figures, the confirm seeds' summary


def export_best(exp_dir: str | Path, out_dir: str | Path, *, metric: str | None = None,
                mode: str | None = None, confirm_seeds: int = 0, force: bool = False,
                flag: str = "--out", log: Callable[[str], None] | None = None,
                epoch_choice: str = BEST_EPOCH) -> Exported:
    """Write the bundle of the best (trial, epoch); return its metrics.json content and the
    lines that report it.

    A non-empty `out_dir` is refused before any work unless `force` (then an earlier bundle is
    replaced whole). The bundle is staged and renamed into place (`write_bundle`). `log`, when
    given, gets a line per confirm seed as each finishes (retraining takes a while).

    Args:
        epoch_choice: BEST_EPOCH, the best epoch by the metric (for the overfit target: the
            picked trial's last epoch, `rank_scope`); or BEST_VAL ("best-val"), the picked
            trial's min-val_loss epoch (an overfit search keeps its checkpoint; when none was
            kept, ConfigError).
    """
    check_out_dir(out_dir, force=force, kind=BUNDLE_OUTPUT, flag=flag)
    info = read_search_info(exp_dir)
    metric, mode = _metric_and_mode(info, metric, mode)
    # The search's target decides which epoch stands for a trial, whatever --metric ranks by.
    scope = rank_scope(info.get("target"))
    trials = load_trials(exp_dir, metric, mode, scope)
    trial, row, checkpoint = pick_best(exp_dir, trials, metric, mode, scope)
    note = unkept_best_note(trials, row, metric, mode)
    lines = [] if note is None else [note]
    curve = overfit_curve(trial.history)
    ckpt_path = checkpoint.path
    if epoch_choice == BEST_VAL:
        row, state, ckpt_path = best_val_state(trial, checkpoint, curve)
    else:
        with checkpoint.as_directory() as local:  # downloads when the experiment is remote
            state = load_checkpoint(local)
    epoch = int(row["epoch"])
    if int(state["epoch"]) != epoch:  # Ray's bookkeeping and the file must agree
        raise ConfigError(f"{checkpoint.path}: holds epoch {state['epoch']}, expected {epoch}")
    cfg = TrainConfig.from_dict(state["config"])
    metrics: dict[str, Any] = {
        "trial_id": trial.trial_id, "epoch": epoch, "metrics": row,
        "target": info.get("target"), "metric": metric, "mode": mode,
        "experiment": normalise(exp_dir), "checkpoint": ckpt_path, "searched": trial.params,
        # Per-epoch metrics up to this epoch: `countnet diagnose BUNDLE` needs the printed losses.
        "history": [dict(h) for h in state["history"]],
    }
    if info.get("target") == OVERFIT_TARGET and curve is not None:  # both epochs
        metrics.update(exported_epoch=epoch, min_val_epoch=curve.min_val_epoch,
                       epoch_choice=epoch_choice, overfit_curve=nan_to_null(asdict(curve)))
    if confirm_seeds:
        metrics["confirm_seeds"] = confirm(cfg, epoch, confirm_seeds, log=log)
    if suite.applies(cfg):  # the shift suite's figures, so that a search can rank by them
        metrics["suite"] = nan_to_null(suite.record_suite(state["model"], cfg))
    write_bundle(out_dir, state["model"], cfg, metrics)
    lines.append(f"exported trial {trial.trial_id} epoch {epoch} ({metric}={row[metric]:.4g}, "
                 f"val_acc={row['val_acc']:.3f}) to {out_dir}")
    if info.get("target") == OVERFIT_TARGET and curve is not None:
        lines += overfit_export_lines(trial, epoch, curve)
    if "suite" in metrics:  # data the search never saw: the held-out test split and the shifts
        lines.append(f"the winner on held-out data, {metrics['suite']['n_per_set']} images per "
                     f"set (metrics.json \"suite\"):")
        lines += suite.suite_table(metrics["suite"]["sets"])
    if confirm_seeds:
        lines.append(confirm_line(metrics["confirm_seeds"], row))
    return Exported(metrics, lines)


def overfit_export_lines(trial: Trial, epoch: int, curve: OverfitCurve) -> list[str]:
    """What an overfit export holds: the most overfit trial, its config, both epochs.

    Args:
        trial: the exported trial.
        epoch: the exported epoch.
        curve: the trial's overfit figures.
    """
    twin = ("this is that epoch (the early-stopped twin)" if epoch == curve.min_val_epoch
            else f"export it with --epoch {BEST_VAL} (the early-stopped twin)")
    return [f"the most overfit trial: {trial.trial_id}, config {format_params(trial.params)}",
            *overfit_lines(trial.trial_id, curve),
            f"its min val_loss epoch: {curve.min_val_epoch}; {twin}"]


def best_val_state(trial: Trial, checkpoint: Any,
                   curve: OverfitCurve | None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The row, checkpoint state and checkpoint path of `trial`'s min-val_loss epoch.

    It is the checkpoint Ray kept for that epoch, or the copy an overfit search keeps inside
    every checkpoint (`best_val/`, see `tune.trainable.train_countnet_overfit`): Ray keeps the
    trial's latest checkpoint besides the best-by-target ones, and its copy is the newest.

    Args:
        trial: the picked trial.
        checkpoint: its picked (best by the target) checkpoint.
        curve: its overfit figures (None: no finite epoch).

    Raises:
        ConfigError: that epoch's checkpoint was not kept.
    """
    if curve is None:
        raise ConfigError(f"--epoch {BEST_VAL}: trial {trial.trial_id} has no finite val_loss")
    want = curve.min_val_epoch
    row = next(r for r in trial.history if int(r["epoch"]) == want)
    candidates = [(trial.checkpoints[want], None)] if want in trial.checkpoints else []
    # The copy inside a checkpoint holds the min as of that epoch: try Ray's latest checkpoint
    # (it holds the trial's overall min), the picked one, then the others Ray kept, newest first.
    kept = [checkpoint, *(trial.checkpoints[e] for e in sorted(trial.checkpoints, reverse=True))]
    if trial.latest_checkpoint is not None:
        kept.insert(0, trial.latest_checkpoint)
    candidates += [(c, BEST_VAL_DIR) for c in kept]
    for ckpt, sub in candidates:
        with ckpt.as_directory() as local:
            path = Path(local) / sub if sub else Path(local)
            if kind_of(path) != CHECKPOINT:
                continue
            state = load_checkpoint(path)
        if int(state["epoch"]) == want:
            return row, state, f"{ckpt.path}/{sub}" if sub else ckpt.path
    raise ConfigError(f"--epoch {BEST_VAL}: the checkpoint of trial {trial.trial_id}'s min "
                      f"val_loss epoch {want} was not kept (only an overfit search made with "
                      f"this version keeps it)")


def confirm_line(confirmed: dict[str, Any], row: dict[str, Any]) -> str:
    """`confirm`'s mean +- std over seeds, next to the search's own run of the winner."""
    loss, acc = confirmed["val_loss"], confirmed["val_acc"]
    seeds = ",".join(map(str, confirmed["seeds"]))
    return (f"the winner retrained with seeds {seeds}, epoch {confirmed['epoch']}: val_loss "
            f"{loss['mean']:.4g} +- {loss['std']:.2g}, val_acc {acc['mean']:.3f} +- "
            f"{acc['std']:.3f} (the search's run: val_loss {row['val_loss']:.4g}, val_acc "
            f"{row['val_acc']:.3f})")


def pick_best(exp_dir: str | Path, trials: list[Trial], metric: str, mode: str,
              scope: str = SCOPE_ALL) -> tuple[Trial, dict[str, Any], Any]:
    """The best (trial, epoch row, checkpoint): Ray's choice (`best_result`). It may not be the
    best epoch by `metric` overall (`unkept_best_note` says when).

    Args:
        exp_dir: the experiment directory (or URI).
        trials: `load_trials(exp_dir, metric, mode, scope)`.
        metric: the metric to rank by.
        mode: "min" or "max".
        scope: SCOPE_ALL (each trial at its best epoch) or SCOPE_LAST (at its last epoch).
    """
    return best_result(exp_dir, trials, metric, mode, scope)


def unkept_best_note(trials: list[Trial], row: dict[str, Any], metric: str,
                     mode: str) -> str | None:
    """A note when the best epoch by `metric` is not the picked `row`: its checkpoint was not
    kept (ranking by another metric than Ray kept them by). None when it is.

    Args:
        trials: the trials, each with its best epoch (`Trial.best`, under the search's scope:
            under "last" that epoch's checkpoint is Ray's latest, always kept).
        row: the picked epoch row.
        metric: the metric ranked by.
        mode: "min" or "max".
    """
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
            history = fit(cfg.replace(seed=seed, threads=0)).history
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
