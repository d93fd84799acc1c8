"""`countnet train`: one training run with a progress bar, a per-epoch table and a run dir."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from countnet.config import ConfigError, TrainConfig, parse_overrides
from countnet.diagnose import short_verdict
from countnet.rundir import RunLogger
from countnet.train import METRIC_KEYS, Diverged, ProgressFn, fit

# Tiny data, the `simple` model, 2 epochs: the whole pipeline in seconds.
SMOKE_OVERRIDES = {"model": "simple", "width": 8, "depth": 3, "train_size": 256, "val_size": 64,
                   "epochs": 2, "batch_size": 32}
TABLE_KEYS = METRIC_KEYS  # every metric, one column each


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
    p.add_argument("--val-equals-train", action="store_true",
                   help="control: validate on the training samples themselves")
    p.add_argument("--no-progress", action="store_true", help="no per-batch progress bar")
    p.add_argument("--smoke-test", action="store_true",
                   help="tiny data, simple model, 2 epochs, in a temporary run dir")
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Defaults < config file < --smoke-test sizes < --set < flags.

    A resumed run takes the config saved in its run dir.
    """
    if args.resume is not None:
        saved = args.resume / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"--resume {args.resume}: no config.yaml there")
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
    if args.smoke_test and args.out is None:
        with tempfile.TemporaryDirectory() as tmp:
            return train_into(cfg, Path(tmp), None, progress=not args.no_progress)
    out = args.resume or args.out or Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
    resume = out / "checkpoints" / "last" if args.resume else None
    if resume is not None and not resume.is_dir():
        raise ConfigError(f"--resume {out}: no checkpoints/last to continue from")
    return train_into(cfg, out, resume, progress=not args.no_progress)


def train_into(cfg: TrainConfig, out: Path, resume: Path | None, progress: bool) -> int:
    logger = RunLogger(out, cfg)
    print(f"run dir: {out}")
    print(" ".join(f"{k:>15}" for k in TABLE_KEYS))

    def on_epoch_end(metrics: dict[str, float], save) -> None:
        logger(metrics, save)
        print(" ".join(f"{_fmt(metrics[k]):>15}" for k in TABLE_KEYS), flush=True)

    try:
        history = fit(cfg, on_epoch_end, resume_from=resume, progress=_progress_bar(progress))
    except Diverged as e:
        print(f"countnet train: {e}; lower lr. Checkpoints up to the last epoch are in {out}",
              file=sys.stderr)
        return 1
    finally:
        logger.close()
    best = logger.best
    if best is not None:
        print(f"best epoch {int(best['epoch'])}: val_loss {best['val_loss']:.4f}  "
              f"val_acc {best['val_acc']:.3f}  val_mae {best['val_mae']:.3f}  "
              f"(checkpoint: {logger.best_dir})")
    verdict = short_verdict(history)
    if verdict:  # train_loss > val_loss: say which part is measurement, which is data
        print(f"note: {verdict.replace('RUN', str(out))}")
    print(f"tensorboard --logdir {out}")
    return 0


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e6 else f"{v:.5g}"


def _progress_bar(enabled: bool) -> ProgressFn | None:
    """A tqdm bar per epoch when tqdm is installed and stderr is a terminal or enabled."""
    if not enabled:
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
