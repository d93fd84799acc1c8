"""`countnet train`: one training run with a progress bar, a per-epoch table and a run dir."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from countnet import suite
from countnet.cli import check_device
from countnet.config import ConfigError, TrainConfig, parse_overrides
from countnet.datasets import load_splits
from countnet.diagnose_report import short_verdict
from countnet.formatting import fmt_number
from countnet.outdir import check_out_dir, clear_out_dir
from countnet.rundir import (
    CHECKPOINTS_DIR,
    LAST,
    RUN_CONFIG_FILE,
    RUN_OUTPUT,
    SUITE_FILE,
    RunLogger,
    checkpoint_dir,
)
from countnet.train import METRIC_KEYS, Diverged, ProgressFn, fit, pick_device

# Tiny data, the `simple` model, 2 epochs: the whole pipeline in seconds.
SMOKE_OVERRIDES = {"model": "simple", "width": 8, "depth": 3, "train_size": 256, "val_size": 64,
                   "epochs": 2, "batch_size": 32}
# The per-epoch table fits 100 columns; `-v` shows every metric. All of them are in
# RUN/metrics.jsonl and TensorBoard either way.
TABLE_KEYS = ("epoch", "lr_now", "train_loss", "train_loss_eval", "val_loss", "val_mae", "val_acc",
              "gap", "epoch_time_s")
MIN_COL = 10  # characters per column (a `.4g` number fits), or the key's length when longer
EPOCH_COL = 5


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one model; writes a run directory",
                       description="Train one model. Writes RUN/config.yaml, RUN/metrics.jsonl, "
                       "TensorBoard events and RUN/checkpoints/{last,best}.")
    p.add_argument("--config", type=Path, help="YAML file of TrainConfig fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one TrainConfig field (repeatable), e.g. --set lr=1e-3")
    p.add_argument("--out", type=Path, help="run directory (default runs/train-<time>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="continue an interrupted run from RUN_DIR/checkpoints/last")
    p.add_argument("--force", action="store_true",
                   help="replace a non-empty --out run dir (deleted first, never merged)")
    p.add_argument("--val-equals-train", action="store_true",
                   help="control: validate on the training samples themselves")
    p.add_argument("--no-progress", action="store_true",
                   help="no per-batch progress bar (there is none when stderr is not a terminal)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="every metric in the per-epoch table (wider than 100 columns)")
    p.add_argument("--smoke-test", action="store_true",
                   help="tiny data, simple model, 2 epochs, in a temporary run dir")
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < config file < --smoke-test sizes < --set < flags.

    A resumed run takes the config saved in its run dir.
    """
    if args.resume is not None:
        saved = args.resume / RUN_CONFIG_FILE
        if not saved.is_file():
            raise ConfigError(f"--resume {args.resume}: no {RUN_CONFIG_FILE} there")
        return TrainConfig.from_yaml(saved, args.overrides)
    cfg = TrainConfig.from_yaml(args.config or "", args.overrides)
    if args.smoke_test:  # tiny sizes, except where --set names a field explicitly
        explicit = parse_overrides(args.overrides)
        cfg = cfg.replace(**{k: v for k, v in SMOKE_OVERRIDES.items() if k not in explicit})
    if args.val_equals_train:
        cfg = cfg.replace(val_equals_train=True)
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = resolve_config(args)
    check_device(cfg.device, f"device={cfg.device}")
    if args.force and args.resume is not None:
        raise ConfigError("--force: not with --resume (a resumed run continues in its own dir)")
    if args.smoke_test and args.out is None:
        with tempfile.TemporaryDirectory() as tmp:
            return train_into(cfg, Path(tmp), None, progress=not args.no_progress,
                              verbose=args.verbose, keep=False)
    out = args.resume or args.out or Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
    resume = checkpoint_dir(out, LAST) if args.resume else None
    if resume is not None and not resume.is_dir():
        raise ConfigError(f"--resume {out}: no {CHECKPOINTS_DIR}/{LAST} to continue from")
    if resume is None:  # a used run dir is never appended to: refused, or replaced with --force
        check_out_dir(out, force=args.force, kind=RUN_OUTPUT)
    return train_into(cfg, out, resume, progress=not args.no_progress, verbose=args.verbose,
                      replace=args.force)


def train_into(cfg: TrainConfig, out: Path, resume: Path | None, progress: bool, *,
               verbose: bool = False, keep: bool = True, replace: bool = False) -> int:
    """Train into run dir `out`: the per-epoch table on stdout, messages on stderr.

    Args:
        cfg: the resolved config.
        out: the run directory.
        resume: the checkpoint directory to continue from, or None.
        progress: a per-batch bar on stderr (only when stderr is a terminal).
        verbose: every metric in the table, not only TABLE_KEYS.
        keep: False for a temporary run dir (--smoke-test): no paths are printed that are
            deleted when the command ends.
        replace: delete `out` first (--force, after check_out_dir accepted it).
    """
    # The data is loaded (and checked) before anything is written or deleted: bad data leaves
    # no run dir behind, and --force keeps the old run.
    splits = load_splits(cfg, pick_device(cfg))
    if replace:
        clear_out_dir(out)
    with RunLogger(out, cfg, resume_from=resume) as logger:
        keys = METRIC_KEYS if verbose else TABLE_KEYS
        widths = [EPOCH_COL if k == "epoch" else max(MIN_COL, len(k)) for k in keys]
        print(f"run dir: {out}" if keep else "run dir: temporary (deleted at exit; --out DIR "
              "keeps it)", file=sys.stderr)
        print(" ".join(f"{k:>{w}}" for k, w in zip(keys, widths)), flush=True)

        def on_epoch_end(metrics: dict[str, float], save) -> None:
            logger(metrics, save)
            print(" ".join(f"{fmt_number(metrics[k]):>{w}}" for k, w in zip(keys, widths)),
                  flush=True)

        try:
            history = fit(cfg, on_epoch_end, resume_from=resume, splits=splits,
                          progress=_progress_bar(progress)).history
        except Diverged as e:
            # The logger never checkpoints a non-finite epoch: say which epoch the files hold.
            if logger.last_epoch is None:
                kept = "no epoch was finite, so nothing was checkpointed"
            else:
                kept = f"checkpoints/last holds epoch {logger.last_epoch}, the last finite one"
                if logger.best is not None:
                    kept += f", checkpoints/best epoch {int(logger.best['epoch'])}"
            where = f"; {kept} (in {out})" if keep else ""
            print(f"countnet train: {e}; lower lr{where}", file=sys.stderr)
            return 1
    best = logger.best
    if best is not None:
        print(f"best epoch {int(best['epoch'])}: val_loss {best['val_loss']:.4f}  "
              f"val_acc {best['val_acc']:.3f}  val_mae {best['val_mae']:.3f}"
              + (f"  (checkpoint: {logger.best_dir})" if keep else ""))
        if suite.applies(cfg):  # the best checkpoint on the shift suite -> RUN/suite.json
            record = suite.record_suite(out, out_file=out / SUITE_FILE)
            print(f"shift suite of the best checkpoint, {record['n_per_set']} images per set "
                  f"(run dir/{SUITE_FILE}):")
            print("\n".join(suite.suite_table(record["sets"])), flush=True)
    verdict = short_verdict(history)
    if verdict:  # train_loss > val_loss: say which part is measurement, which is data
        # A temporary run dir is gone when the command ends: keep the RUN placeholder.
        print(f"note: {verdict.replace('RUN', str(out)) if keep else verdict}")
    if keep:
        print(f"tensorboard --logdir {out}")
        print(f"countnet report {out}")
    return 0


def _progress_bar(enabled: bool) -> ProgressFn | None:
    """A tqdm bar per epoch when enabled, tqdm is installed and stderr is a terminal.

    A bar redrawn in a log file or pipe is only noise (hundreds of bytes of frames per epoch).
    """
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # torch-only machines: no bar
        return None
    state: dict[str, tqdm] = {}

    def update(step: int, steps: int, loss: float) -> None:
        if step == 1:
            state["bar"] = tqdm(total=steps, leave=False, unit="batch", file=sys.stderr)
        bar = state["bar"]
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
        if step == steps:
            bar.close()

    return update
