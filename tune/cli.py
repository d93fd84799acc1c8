"""`countnet search` and `countnet export`, plugged into the `countnet` command by entry points.

This module must not import Ray at import time (`countnet --help` runs without it): the command
modules are imported inside `run_*`. Bad input raises ConfigError, which `countnet` turns into one
line on stderr and exit code 2. The search and export functions return values; this module prints
them (the header line, the summary table, the export's lines).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import sysconfig
import tempfile
import time
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from countnet.config import ConfigError
from countnet.formatting import format_params
from countnet.overfit_curve import overfit_curve, overfit_lines
from tune.overrides import parse_resources_flag, resolve_data_dir, set_fixed
from tune.space import TARGETS, SearchSpace, load_space

if TYPE_CHECKING:  # tune.search imports Ray
    from tune.search import SearchOutcome

DEFAULT_STORAGE = "experiments"
EXIT_INTERRUPTED = 130  # as for Ctrl+C: the search stopped before num_samples trials finished
MAX_RAY_VERBOSE = 2  # Ray's most verbose output (-vv)
SMOKE_SPACE = "smoke.yaml"
DASHBOARD_EXTRA = "dashboard"  # pyproject.toml's extra that installs optuna-dashboard
OVERFIT_METRIC = TARGETS["overfit"]  # (metric, mode) of the target `overfit`
# The smallest value of each numeric flag (argparse dest -> minimum), checked by `check_flags`.
FLAG_MINIMUMS = {"num_samples": 1, "max_epochs": 1, "max_failures": 0, "confirm_seeds": 0,
                 "max_concurrent": 1}


def register_search(sub: argparse._SubParsersAction) -> None:
    """Add `countnet search`."""
    p = sub.add_parser(
        "search", help="hyperparameter search (Ray Tune + Optuna TPE + ASHA)",
        description="Search a space of TrainConfig values with Ray Tune, Optuna's TPE sampler and "
        "ASHA early stopping. Prints a status line per trial event while it runs (stderr), then "
        "the top trials, an audit of ASHA's rungs (Spearman rank correlation of each rung's "
        "value with the trial's best), the best checkpoint and the tensorboard command "
        "(stdout), and writes "
        "`countnet report`'s plots into EXPERIMENT_DIR/report. The Optuna study is stored in "
        "SQLite in the experiment directory.")
    p.add_argument("--space", type=Path, help="search-space YAML (see search_spaces/)")
    # str, not Path: Path("s3://b/x") drops a slash of the URI.
    p.add_argument("--resume", metavar="EXPERIMENT_DIR",
                   help="continue an interrupted search in EXPERIMENT_DIR (a path or URI). "
                   "Trusted input only: Ray unpickles the experiment state, which can run "
                   "code; resume only experiments you or your cluster wrote")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="set one of the space's fixed TrainConfig fields (repeatable), as "
                   "`countnet train --set` does, e.g. --set data=folder --set data_dir=my_photos; "
                   "a field the space searches is refused")
    p.add_argument("--num-samples", type=int,
                   help="trials (overrides the space; with --resume: the resumed search's new "
                   "total, at least the trials it has)")
    p.add_argument("--max-epochs", type=int,
                   help="epochs of a full trial (overrides the space; a resumed search keeps "
                   "its own)")
    p.add_argument("--max-concurrent", type=int, metavar="N",
                   help="trials at once (overrides the space's max_concurrent; also the trials "
                   "Ray keeps pending, which is what an autoscaler scales up for)")
    p.add_argument("--resources", metavar="cpu=N,gpu=G",
                   help="per-trial resources (overrides the keys given of the space's "
                   "resources_per_trial), e.g. cpu=2,gpu=0.5: two trials per GPU; gpu=1: one")
    p.add_argument("--address", help="join a Ray cluster: auto or HOST:PORT (default: start an "
                   "embedded local Ray)")
    p.add_argument("--storage", default=DEFAULT_STORAGE,
                   help="where experiments go (default %(default)s): a directory, which on a "
                   "multi-node cluster every node must see (NFS), or an s3:// URI")
    p.add_argument("--name", help="experiment name (default: <space>-<date>-<time>)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the TPE sampler (default 0). It fixes the configs sampled "
                   "from the same results; with several trials at a time, which result "
                   "arrives first still changes ASHA's stops and TPE's later picks")
    p.add_argument("--deterministic", action="store_true",
                   help="one trial at a time (max_concurrent 1): the same seed gives the same "
                   "trials, stops and winner on the CPU, at the cost of parallelism")
    p.add_argument("--max-failures", type=int, default=2,
                   help="times Ray restarts a crashed trial from its last checkpoint (default 2)")
    p.add_argument("--export", type=Path, metavar="BUNDLE_DIR",
                   help="after the search, export the best checkpoint as a bundle (a non-empty "
                   "BUNDLE_DIR is refused before the search starts, unless --force)")
    p.add_argument("--force", action="store_true",
                   help="with --export: replace an earlier bundle in BUNDLE_DIR (never merged)")
    p.add_argument("--confirm-seeds", type=int, default=0, metavar="N",
                   help="with --export: retrain the winner with N other seeds and print the "
                   "mean +- std of its val_loss and val_acc (also in metrics.json)")
    p.add_argument("--smoke-test", action="store_true",
                   help="4 trials x 3 epochs of tiny data on the embedded Ray (about a minute)")
    p.add_argument("--no-report", action="store_true",
                   help="do not write EXPERIMENT_DIR/report (plots, trials.csv, report.md)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("-v", "--verbose", action="count", default=0,
                     help="Ray's own output instead of countnet's status lines (-vv: all of it)")
    out.add_argument("-q", "--quiet", action="store_true",
                     help="print only the final table")
    p.set_defaults(func=run_search)


def register_export(sub: argparse._SubParsersAction) -> None:
    """Add `countnet export`."""
    p = sub.add_parser(
        "export", help="export the best checkpoint of a search as a bundle",
        description="Pick the best trial by the target metric over all its epochs, take the "
        "checkpoint of that epoch (not the last one), and write a bundle (model.pt, "
        "config.json, metrics.json) that `countnet predict` loads without Ray. "
        "EXPERIMENT_DIR is trusted input: Ray unpickles its experiment state, which can run "
        "code, so export only experiments you or your cluster wrote. The bundle is safe to "
        "share: tensors and JSON only.")
    p.add_argument("experiment", nargs="?", metavar="EXPERIMENT_DIR",
                   help="the search's experiment: a directory or a URI (s3://...)")
    p.add_argument("--out", type=Path, metavar="BUNDLE_DIR",
                   help="bundle directory to write (must be empty or absent, unless --force)")
    p.add_argument("--force", action="store_true",
                   help="replace an earlier bundle in BUNDLE_DIR: the new one is written aside "
                   "and renamed into place, never merged")
    p.add_argument("--metric", help="rank by this metric (default: the search's target)")
    p.add_argument("--mode", choices=("min", "max"),
                   help="with --metric: whether lower or higher is better")
    p.add_argument("--confirm-seeds", type=int, default=0, metavar="N",
                   help="retrain the winner with N other seeds; mean and std of val_loss and "
                   "val_acc go into metrics.json")
    p.add_argument("--epoch", choices=("best", "best-val"), default="best",
                   help="best (default): the best epoch by the metric (for an overfit search: "
                   "the most overfit trial's last epoch, the memorised net); best-val: the "
                   "picked trial's epoch of minimum val_loss, the early-stopped twin of an "
                   "overfit baseline (an overfit search keeps its checkpoint)")
    p.add_argument("--smoke-test", action="store_true",
                   help="run a smoke search in a temporary directory, export it and predict")
    p.set_defaults(func=run_export)


def run_search(args: argparse.Namespace) -> int:
    from tune.export import export_best
    from tune.resume import resume_search
    from tune.search import run_search as search

    check_flags(args)
    resources = parse_resources_flag(args.resources) if args.resources is not None else {}
    if args.deterministic and args.max_concurrent not in (None, 1):
        raise ConfigError(f"--deterministic: runs one trial at a time; not with --max-concurrent "
                          f"{args.max_concurrent}")
    if args.resume is not None:
        if args.space is not None or args.smoke_test:
            raise ConfigError("--resume takes no --space or --smoke-test: the experiment "
                              "directory holds its space")
        if args.overrides:
            raise ConfigError("--set: not with --resume: a resumed search keeps the fixed "
                              "values it started with")
        for flag, value in (("--resources", args.resources),
                            ("--max-concurrent", args.max_concurrent)):
            if value is not None:  # Ray restores the trials' resources and limiter as saved
                raise ConfigError(f"{flag}: not with --resume: a resumed search keeps its own")
    else:
        if args.smoke_test == (args.space is not None):
            raise ConfigError("give --space FILE, --resume EXPERIMENT_DIR or --smoke-test")
        path = files("search_spaces") / SMOKE_SPACE if args.smoke_test else args.space
        space = resolve_data_dir(set_fixed(load_space(path), args.overrides))
        space = apply_overrides(space, args.num_samples, args.max_epochs, resources,
                                args.max_concurrent)
        if args.deterministic:
            space = space.replace(max_concurrent=1)
        name = args.name or f"{Path(str(path)).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.resume is not None and args.deterministic:
        raise ConfigError("--deterministic: a resumed search keeps its own concurrency")
    if args.confirm_seeds and args.export is None:
        raise ConfigError("--confirm-seeds: needs --export BUNDLE_DIR (it retrains the winner)")
    if args.export is not None:  # refused now, not after an hour of search
        from countnet.bundle import BUNDLE_OUTPUT
        from countnet.outdir import check_out_dir

        check_out_dir(args.export, force=args.force, kind=BUNDLE_OUTPUT, flag="--export")
    # -v: Ray's output (its verbose 1 or 2); default: countnet's status lines; -q: neither.
    output = {"verbose": min(args.verbose, MAX_RAY_VERBOSE),
              "progress": not args.quiet and not args.verbose}
    header = output["progress"] or output["verbose"]  # a header line on stderr, unless -q
    if args.resume is not None:
        outcome = resume_search(args.resume, address=args.address, num_samples=args.num_samples,
                                max_epochs=args.max_epochs,
                                announce=_resume_header if header else None, **output)
    else:
        outcome = search(space, storage=args.storage, name=name, seed=args.seed,
                         address=args.address, max_failures=args.max_failures,
                         announce=_search_header if header else None, **output)
    print_summary(outcome, quiet=args.quiet)
    if not outcome.finished:
        return EXIT_INTERRUPTED
    status = 0
    if args.export is not None:
        if outcome.best is None:
            print("nothing to export", file=sys.stderr)
            status = 1
        else:  # "exported ... to BUNDLE_DIR" is a message: stderr, and none when quiet
            exported = export_best(outcome.exp_dir, args.export, force=args.force,
                                   flag="--export", confirm_seeds=args.confirm_seeds,
                                   log=None if args.quiet else _message)
            if not args.quiet:
                for line in exported.lines:
                    _message(line)
    if not args.no_report:
        write_search_report(outcome.exp_dir, args.export if status == 0 else None, args.quiet)
    return status


def write_search_report(exp_dir: str, bundle: Path | None, quiet: bool) -> None:
    """EXPERIMENT_DIR/report after a search; a failure there is a note, not a failed search.

    Args:
        exp_dir: the experiment directory (a URI gets no report: it reads local files).
        bundle: the exported bundle, whose evaluation (if any) the report shows.
        quiet: print nothing unless it fails.
    """
    from countnet.report import REPORT_DIR, write_report
    from tune.storage import is_uri

    if is_uri(exp_dir):
        if not quiet:
            print(f"report: not written for {exp_dir} (cloud storage); run `countnet report` "
                  f"on a local copy", file=sys.stderr)
        return
    try:
        md = write_report(exp_dir, Path(exp_dir) / REPORT_DIR, bundle=bundle)
    except Exception as exc:  # the search itself succeeded: say why, keep its exit status
        print(f"report: not written ({type(exc).__name__}: {exc})", file=sys.stderr)
        return
    if not quiet:
        print(f"report: {md}", flush=True)


def check_flags(args: argparse.Namespace) -> None:
    """The numeric flags of `countnet search` and `countnet export`, each checked here only,
    before any work (the functions they reach trust them)."""
    for dest, low in FLAG_MINIMUMS.items():
        value = getattr(args, dest, None)
        if value is not None and value < low:
            raise ConfigError(f"--{dest.replace('_', '-')}: must be >= {low}, got {value}")


def print_summary(outcome: SearchOutcome, out: Any = None, quiet: bool = False) -> None:
    """The top-trials table, the audit of ASHA's rungs, the best trial and checkpoint, and where
    to look next.

    Args:
        outcome: the search's trials.
        out: the stream; None = sys.stdout at the time of printing (this is the command's
            result), not the stdout of when this module was imported.
        quiet: the table only (no rung audit, no noise warning, no next steps).
    """
    from countnet.rung_audit import audit_lines, audit_rungs, noise_warning
    from tune.results import format_table

    out = sys.stdout if out is None else out
    print(format_table(outcome.trials, outcome.metric, outcome.mode, scope=outcome.scope),
          file=out)
    if not quiet:
        audits = audit_rungs({t.trial_id: t.history for t in outcome.trials}, outcome.rungs,
                             outcome.metric, outcome.mode, outcome.scope)
        print("\n".join(audit_lines(audits, outcome.metric)), file=out)
        for warning in filter(None, map(noise_warning, audits)):  # a message: stderr
            print(warning, file=sys.stderr, flush=True)
        _where_next(outcome, out)
    out.flush()
    if not outcome.finished:  # also when quiet: the search is not done
        print(f"interrupted: continue with `countnet search --resume {outcome.exp_dir}`",
              file=sys.stderr, flush=True)


def _where_next(outcome: SearchOutcome, out: Any) -> None:
    """The best trial and checkpoint, and the commands that show more."""
    best = outcome.best
    if best is None:
        print("no trial finished with a finite target value (all diverged or failed)", file=out)
    else:
        epoch = int(best.best["epoch"])
        ckpt = best.checkpoints.get(epoch)
        print(f"best trial: {best.trial_id} epoch {epoch}: {outcome.metric}="
              f"{best.best[outcome.metric]:.4g} val_acc={best.best['val_acc']:.3f} "
              f"{format_params(best.params)}", file=out)
        print(f"best checkpoint: {ckpt.path if ckpt else '(not kept)'}", file=out)
        if (outcome.metric, outcome.mode) == OVERFIT_METRIC:  # the target `overfit`
            curve = overfit_curve(best.history)
            if curve is not None:
                print("\n".join(overfit_lines(best.trial_id, curve)), file=out)
    print(f"experiment: {outcome.exp_dir}", file=out)
    print(f"{installed_command('tensorboard')} --logdir {outcome.exp_dir}", file=out)
    if outcome.study:
        if not dashboard_installed():  # an optional extra: say how to get it, as a command
            print(f"to run optuna-dashboard, install it first: {dashboard_install()}", file=out)
        print(f"{installed_command('optuna-dashboard')} {outcome.study}", file=out)


def dashboard_installed() -> bool:
    """Whether optuna-dashboard is installed in this Python environment."""
    from importlib.util import find_spec

    return find_spec("optuna_dashboard") is not None


def dashboard_install() -> str:
    """The command that installs optuna-dashboard into this environment: the `dashboard` extra
    of countnet's checkout when countnet runs from one (`make search`'s editable install; the
    absolute path makes it work from any directory), else the package itself."""
    root = Path(__file__).resolve().parent.parent
    pip = installed_command("pip")
    if (root / "pyproject.toml").is_file():
        return f"{pip} install -e {shlex.quote(f'{root}[{DASHBOARD_EXTRA}]')}"
    return f"{pip} install optuna-dashboard"


def installed_command(name: str) -> str:
    """`name`, a command installed with countnet, as a fresh shell can run it.

    `make search` runs `.venv/bin/countnet` without activating `.venv`, so a bare `tensorboard`
    printed at the end would be "command not found" when pasted into a new shell. The bare name
    is enough when this Python's scripts directory is on PATH (an activated virtualenv, a system
    or user install); otherwise it is the command's full path in that directory.
    """
    scripts = sysconfig.get_path("scripts")
    if any(_same_dir(entry, scripts) for entry in os.environ.get("PATH", "").split(os.pathsep)
           if entry):
        return name
    return shlex.quote(str(Path(scripts) / name))


def _same_dir(a: str, b: str) -> bool:
    """Whether two directory names are one directory (symlinks and case as the OS sees them)."""
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def _search_header(space: SearchSpace, exp_dir: str) -> None:
    """The line on stderr as a new search's trials start."""
    starts = f", {len(space.start_from)} from start_from" if space.start_from else ""
    # A CPU search's line is as it always was; a GPU one says what each trial holds.
    each = f" ({space.cpu:g} CPU + {space.gpu:g} GPU each)" if space.gpu else ""
    _message(f"search: {space.num_samples} trials{starts} x <= {space.max_epochs} epochs, "
             f"{space.max_concurrent} at a time{each}, target {space.target} ({space.mode} "
             f"{space.metric}); experiment {exp_dir}")


def _resume_header(space: SearchSpace, exp_dir: str) -> None:
    """The line on stderr as a resumed search's trials continue."""
    _message(f"resume: {exp_dir}, {space.num_samples} trials x <= {space.max_epochs} epochs, "
             f"target {space.target}")


def apply_overrides(space: SearchSpace, num_samples: int | None, max_epochs: int | None,
                    resources: dict[str, float] | None = None,
                    max_concurrent: int | None = None) -> SearchSpace:
    """The run-level flags on a loaded space (grace_period shrinks with max_epochs).

    Args:
        space: a validated search space.
        num_samples: --num-samples (checked by `check_flags`), or None to keep the space's.
        max_epochs: --max-epochs (checked by `check_flags`), or None.
        resources: --resources as `tune.overrides.parse_resources_flag` returns it: only the
            keys it names replace the space's.
        max_concurrent: --max-concurrent (checked by `check_flags`), or None.
    """
    if resources:
        space = space.replace(**resources)
    if max_concurrent is not None:
        space = space.replace(max_concurrent=max_concurrent)
    if num_samples is not None:
        space = space.replace(num_samples=num_samples)
    if max_epochs is not None:
        space = space.replace(max_epochs=max_epochs,
                              grace_period=min(space.grace_period, max_epochs))
    return space


def run_export(args: argparse.Namespace) -> int:
    from tune.export import export_best

    if args.smoke_test:
        return export_smoke_test()
    if args.experiment is None or args.out is None:
        raise ConfigError("usage: countnet export EXPERIMENT_DIR --out BUNDLE_DIR")
    check_flags(args)
    exported = export_best(args.experiment, args.out, metric=args.metric, mode=args.mode,
                           confirm_seeds=args.confirm_seeds, force=args.force, log=_say,
                           epoch_choice=args.epoch)
    for line in exported.lines:
        _say(line)
    return 0


def _say(line: str) -> None:
    """A line on stdout now (a confirm seed can take minutes): `countnet export`'s report."""
    print(line, flush=True)


def _message(line: str) -> None:
    """A line on stderr now: a message, not the data of `countnet search`."""
    print(line, file=sys.stderr, flush=True)


def export_smoke_test() -> int:
    """Smoke search -> export -> predict, all in a temporary directory."""
    from countnet.cli.predict import format_count
    from countnet.config import TrainConfig
    from countnet.generate import write_dataset
    from countnet.predict import count_images
    from tune.export import export_best
    from tune.search import run_search as search

    with tempfile.TemporaryDirectory() as tmp:
        space = load_space(files("search_spaces") / SMOKE_SPACE)
        outcome = search(space, storage=tmp, name="smoke", seed=0, verbose=0)
        bundle = Path(tmp) / "bundle"
        # export_best's lines name the bundle's path, which is deleted on exit: say what
        # happened instead.
        metrics = export_best(outcome.exp_dir, bundle).metrics
        print(f"exported trial {metrics['trial_id']} epoch {metrics['epoch']} to a temporary "
              f"bundle (deleted at exit); counts of 4 new images:", file=sys.stderr)
        write_dataset(Path(tmp) / "images", TrainConfig(), 4, seed=7)
        for path, raw in count_images(bundle, [Path(tmp) / "images"]):
            print(f"{path.name},{format_count(raw)},{raw:.3f}")
    return 0
