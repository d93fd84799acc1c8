"""`countnet diagnose RUN_OR_BUNDLE`: why is the printed train loss above the val loss?"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from countnet.cli.output import print_json
from countnet.config import ConfigError, TrainConfig
from countnet.diagnose import DEFAULT_SAMPLES, Diagnosis
from countnet.diagnose_io import diagnose_path
from countnet.diagnose_report import diagnosis_json, format_report

# Tiny data, the `simple` model with dropout (so a term is non-zero), 2 epochs.
SMOKE_CONFIG = {"model": "simple", "width": 8, "depth": 3, "image_size": 32, "max_count": 8,
                "train_size": 256, "val_size": 64, "epochs": 2, "batch_size": 32,
                "dropout": 0.3, "threads": 1}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose", help="attribute train loss > val loss to lag, dropout, BatchNorm, ...",
        description="With the weights fixed, measure on the same training samples: eval mode, "
        "augmentation only, dropout only, BatchNorm batch statistics only, full training mode; "
        "and the val loss. Prints a table that attributes the printed train - val difference to "
        "each mechanism (the rows add up exactly), the split checks (count histograms, bootstrap "
        "CI of the val loss, duplicates across splits) and a one-line verdict. For a run dir the "
        "figures also go to its TensorBoard (scalars diagnose/*, text diagnose/report).")
    p.add_argument("path", nargs="?", type=Path, metavar="RUN_OR_BUNDLE",
                   help="run dir (diagnoses checkpoints/last), exported bundle, or checkpoint.pt")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                   help=f"training samples to measure, rounded down to whole batches "
                   f"(default {DEFAULT_SAMPLES})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="override the run's device")
    p.add_argument("--json", action="store_true", help="print the figures as JSON only")
    p.add_argument("--no-tensorboard", action="store_true",
                   help="do not write the figures into the run's TensorBoard")
    p.add_argument("--smoke-test", action="store_true",
                   help="train a tiny model 2 epochs in a temporary run dir and diagnose it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.samples < 1:
        raise ConfigError(f"--samples: must be >= 1, got {args.samples}")
    if args.smoke_test:
        with tempfile.TemporaryDirectory(prefix="diagnose-smoke-") as tmp:
            _train_tiny(Path(tmp))
            diag = diagnose_path(tmp, samples=args.samples, device=args.device,
                                 tensorboard=not args.no_tensorboard)
        diag.source = "(smoke-test run, deleted)"  # name no path that is gone once this returns
        _print(diag, args.json)
        return 0
    if args.path is None:
        raise ConfigError("RUN_OR_BUNDLE: required (a run dir, bundle dir or checkpoint.pt)")
    diag = diagnose_path(args.path, samples=args.samples, device=args.device,
                         tensorboard=not args.no_tensorboard)
    _print(diag, args.json)
    return 0


def _print(diag: Diagnosis, as_json: bool) -> None:
    if as_json:
        print_json(diagnosis_json(diag))
    else:
        print(format_report(diag))



def _train_tiny(run_dir: Path) -> None:
    from countnet.rundir import RunLogger
    from countnet.train import fit

    cfg = TrainConfig.from_dict(SMOKE_CONFIG)
    with RunLogger(run_dir, cfg) as logger:
        fit(cfg, logger)
