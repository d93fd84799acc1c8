"""`countnet overfit-check`: can the model overfit one batch, 1 %, 10 %? Plus the label control."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from countnet.cli.output import print_json
from countnet.config import TrainConfig
from countnet.overfit_check import (
    CONTROL_STEPS,
    FIT_THRESHOLD,
    ONE_BATCH_STEPS,
    STAGE_STEPS,
    overfit_check,
)

# Tiny data, the `simple` model, few steps; one thread (tiny convs gain nothing from two).
# lr 5e-3, not 1e-2: at 1e-2 in bf16 on an Intel Xeon (AMX) seed 0's net died in the first
# steps and predicted the mean (one batch at 100 % of its baseline); 5e-3 fitted it to < 0.1 %
# on seeds 0-2 in bf16 and fp32.
SMOKE_CONFIG = {"model": "simple", "width": 32, "depth": 4, "image_size": 32, "max_count": 8,
                "train_size": 1600, "val_size": 128, "batch_size": 8, "lr": 5e-3,
                "threads": 1}
SMOKE_STEPS = {"one_batch_steps": ONE_BATCH_STEPS, "stage_steps": 60, "control_steps": 200}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "overfit-check", help="Karpathy's recipe: fit one batch, 1 %%, 10 %%; shuffled labels",
        description="With regularisation off (no dropout, weight decay or augmentation; MSE), "
        "fit one batch, then 1 % and 10 % of the training split with the config's model, "
        "optimiser and lr, and report the eval-mode train MSE against the baseline (the "
        "variance of the fitted counts). Then a shuffled-label control (Zhang et al. 2017): the "
        "network memorises permuted counts while validation stays at its baseline. Exits 1 when "
        f"the model cannot fit one batch below {100 * FIT_THRESHOLD:.0f} % of its baseline.")
    p.add_argument("--config", type=Path, help="YAML file of TrainConfig fields")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one TrainConfig field (repeatable)")
    p.add_argument("--one-batch-steps", type=int, default=ONE_BATCH_STEPS,
                   help=f"optimiser steps on one batch (default {ONE_BATCH_STEPS})")
    p.add_argument("--steps", type=int, default=STAGE_STEPS,
                   help=f"optimiser steps for the 1 %% and 10 %% stages (default {STAGE_STEPS})")
    p.add_argument("--control-steps", type=int, default=CONTROL_STEPS,
                   help=f"optimiser steps of the shuffled-label control (default {CONTROL_STEPS})")
    p.add_argument("--no-control", action="store_true", help="skip the shuffled-label control")
    p.add_argument("--json", action="store_true", help="print the report as JSON only")
    p.add_argument("--smoke-test", action="store_true",
                   help="tiny data, simple model, few steps")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = TrainConfig.from_yaml(args.config or "", args.overrides)
    steps = {"one_batch_steps": args.one_batch_steps, "stage_steps": args.steps,
             "control_steps": args.control_steps}
    if args.smoke_test:
        cfg = cfg.replace(**SMOKE_CONFIG)
        steps = SMOKE_STEPS
    report = overfit_check(cfg, control=not args.no_control, **steps)
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.table())
    if report.exit_code() != 0:
        print(f"countnet overfit-check: {report.message()}", file=sys.stderr)
    return report.exit_code()

