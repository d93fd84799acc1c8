"""`countnet evaluate`: score a model on a labelled folder, or on the shift suite.

Figures go to stdout (a table, or JSON with --json); progress and warnings go to stderr.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from countnet.cli.output import print_json
from countnet.cli.predict import add_sizing_flags
from countnet.config import ConfigError, TrainConfig
from countnet.evaluate import WORST_N, evaluate_folder
from countnet.suite import SUITE_N, SUITE_SEED, SUITE_SETS, hardest, run_suite, suite_table

SMOKE_N = 16  # images per suite set in --smoke-test


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="score a model on a labelled folder or on the shift suite",
        description="Score a bundle, run dir or checkpoint. With DIR (a folder holding "
        "labels.csv = filename,count rows and the images it names, e.g. your own photos, or a "
        "CARPK root, whose test split is scored): "
        "print MAE, RMSE, exact-count accuracy, off-by-one, bias (mean predicted - true), a "
        f"table of error by true count and the {WORST_N} worst images. With --suite: write the "
        f"shift suite ({', '.join(SUITE_SETS)}) as PNG files, read them back like photos, and "
        "print one row per set and the hardest set. A count is max(0, round(raw)), as "
        "`countnet predict` prints it; MAE, RMSE and bias use the raw output.")
    p.add_argument("model", nargs="?", type=Path, metavar="RUN_OR_BUNDLE",
                   help="exported bundle dir, run dir, or checkpoint")
    p.add_argument("folder", nargs="?", type=Path, metavar="DIR",
                   help="folder with labels.csv and the images it names, or a CARPK root")
    p.add_argument("--suite", action="store_true",
                   help="score the shift suite instead of a folder")
    p.add_argument("--n", type=int, default=SUITE_N, metavar="N",
                   help=f"--suite: images per set (default {SUITE_N})")
    p.add_argument("--seed", type=int, default=SUITE_SEED,
                   help=f"--suite: seed of the PIL-drawn sets (default {SUITE_SEED})")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="--suite: write the sets into DIR/<set>/ and keep them "
                   "(default: a temporary folder, deleted afterwards)")
    add_sizing_flags(p)
    p.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    p.add_argument("--smoke-test", action="store_true",
                   help=f"train a tiny model 1 epoch, score it on a {SMOKE_N}-image suite")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.smoke_test:
        return smoke_test()
    if args.model is None:
        raise ConfigError("usage: countnet evaluate RUN_OR_BUNDLE DIR | RUN_OR_BUNDLE --suite")
    if args.suite:
        if args.folder is not None:
            raise ConfigError(f"give DIR ({args.folder}) or --suite, not both "
                              f"(--keep DIR keeps the suite's files)")
        if args.n < 1:
            raise ConfigError(f"--n: must be >= 1, got {args.n}")
        if args.native or args.scale is not None:
            raise ConfigError("--native and --scale: only with DIR; the suite sets their own "
                              "sizes (its `large` set counts at native resolution)")
        return evaluate_suite(args.model, args.n, args.seed, args.keep, args.json)
    if args.folder is None:
        raise ConfigError("usage: countnet evaluate RUN_OR_BUNDLE DIR (or --suite)")
    if args.keep is not None:
        raise ConfigError("--keep: only with --suite")
    figures = evaluate_folder(args.model, args.folder, native=args.native, scale=args.scale)
    _warn_non_finite(figures, str(args.folder))
    if args.json:
        print_json(figures)
    else:
        print("\n".join(folder_report(figures)))
    return 0


def evaluate_suite(model: Path, n: int, seed: int, keep: Path | None, as_json: bool) -> int:
    """Write, read back and score the suite; print one row per set (or JSON)."""
    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = run_suite(model, n_per_set=n, seed=seed, keep=keep, log=log)
    for name, fig in results.items():
        _warn_non_finite(fig, f"set {name}")
    if keep is not None:
        log(f"suite kept in {keep}")
    if as_json:
        print_json({"n_per_set": n, "seed": seed, "hardest": hardest(results), "sets": results})
    else:
        print("\n".join(suite_table(results)))
    return 0


def folder_report(fig: dict[str, Any]) -> list[str]:
    """The summary, the table by true count and the worst images, as lines."""
    lines = [f"images      {fig['n']}",
             f"acc         {fig['acc']:.4f}  (exact count)",
             f"off_by_one  {fig['off_by_one']:.4f}  (|count - true| <= 1)",
             f"mae         {fig['mae']:.4f}",
             f"rmse        {fig['rmse']:.4f}",
             f"bias        {fig['bias']:+.4f}  (mean predicted - true)",
             "",
             "by true count:",
             f"{'count':>6} {'n':>6} {'mae':>7} {'acc':>6} {'bias':>8}"]
    for row in fig["by_count"]:
        lines.append(f"{row['count']:>6} {row['n']:>6} {row['mae']:>7.3f} {row['acc']:>6.3f} "
                     f"{row['bias']:>+8.3f}")
    lines += ["", f"{len(fig['worst'])} worst:", f"{'true':>6} {'pred':>8}  name"]
    for row in fig["worst"]:
        lines.append(f"{row['true']:>6} {row['pred']:>8.3f}  {row['name']}")
    return lines


def _warn_non_finite(fig: dict[str, Any], where: str) -> None:
    if fig["non_finite"]:
        print(f"warning: {where}: {fig['non_finite']} of {fig['n']} predictions are not finite; "
              f"counted as wrong in acc and off_by_one, left out of mae, rmse and bias",
              file=sys.stderr)


def smoke_test() -> int:
    from countnet.cli.train import SMOKE_OVERRIDES
    from countnet.rundir import RunLogger
    from countnet.train import fit

    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig.from_dict({**SMOKE_OVERRIDES, "epochs": 1})
        with RunLogger(Path(tmp) / "run", cfg) as logger:
            fit(cfg, logger)
        return evaluate_suite(Path(tmp) / "run", SMOKE_N, SUITE_SEED, None, as_json=False)
