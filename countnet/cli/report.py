"""`countnet report DIR [--out OUT]`: plots, trials.csv and report.md of a search or a run.

Reads the files in DIR directly (no Ray). Prints the paths of the files it wrote, one a line, on
stdout. A directory that is neither a search experiment nor a run directory, an experiment
without trials, or a run without metrics: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from countnet.config import ConfigError
from countnet.report import REPORT_DIR, TOP_CURVES, report_files, write_report


def register(sub: argparse._SubParsersAction) -> None:
    """Add `countnet report`."""
    p = sub.add_parser(
        "report", help="PNG plots, trials.csv and report.md of a search or a training run",
        description="Write the report of a `countnet search` experiment (optimisation history, "
        "parameter importances over every trial's best epoch, ASHA-stopped trials included, "
        "learning curves of the top trials, the winner's error by true count when an "
        "evaluation exists, trials.csv, report.md) or of a `countnet train` run directory "
        "(learning curves). PNG files via matplotlib's Agg backend: no display needed.")
    p.add_argument("directory", type=Path, metavar="EXPERIMENT_OR_RUN_DIR",
                   help="a search's experiment directory or a run directory")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help=f"where the report goes (default: DIR/{REPORT_DIR})")
    p.add_argument("--bundle", type=Path, metavar="BUNDLE_DIR",
                   help="the exported winner, whose evaluation (per-count figures) to plot")
    p.add_argument("--top", type=int, default=TOP_CURVES,
                   help="trials whose learning curves are drawn (default %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise ConfigError(f"--top: must be >= 1, got {args.top}")
    md = write_report(args.directory, args.out, bundle=args.bundle, top=args.top)
    for path in report_files(md):
        print(path)
    sys.stdout.flush()
    return 0
