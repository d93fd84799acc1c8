"""`countnet search`: a Ray Tune search of the counting CNN, with Optuna TPE and ASHA.

Every piece is Ray Tune's or Optuna's own: `Tuner` + `PruningAwareOptunaSearch` (TPE, seeded,
study in SQLite in the experiment directory) + `ASHAScheduler` over epochs (`start_from`
trials exempt: tune.scheduler) + `with_resources` +
`CheckpointConfig` ranked by the target metric + `FailureConfig`. `Tuner.restore` resumes.

The experiment directory holds Ray's files (one `trial_<id>/` per trial: result.json,
progress.csv, TensorBoard events, kept checkpoints), `countnet_search.json` (target, seed, space)
and the Optuna study `optuna.db`, which Optuna's own tools read during or after the search (with
an s3:// storage the study is ~/countnet/studies/NAME/optuna.db on the driver's machine, named in
countnet_search.json, and a copy goes to the experiment when the search ends):

    optuna-dashboard sqlite:///EXPERIMENT_DIR/optuna.db        # pip install optuna-dashboard

    import optuna
    study = optuna.load_study(study_name="NAME", storage="sqlite:///EXPERIMENT_DIR/optuna.db")
    print(optuna.importance.get_param_importances(study))

(NAME is the experiment's name; with a conditional space, pass `params=[...]` naming fields that
every COMPLETE trial has. `countnet report EXPERIMENT_DIR` computes importances over every trial's
best epoch, the trials ASHA stopped included.)

Output: with `verbose=0` Ray prints nothing of its own (no trial boxes, no trial table, no
tensorboard hint into its session directory), Optuna only warnings, and the workers' output
stays in Ray's log files (no "Checkpoint successfully created" line per epoch);
`progress=True` adds one status line per trial event on stderr (`tune.progress`). `verbose=1`
or 2 is Ray's own output, as Ray prints it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from ray import tune as ray_tune  # Ray Tune; `tune` is this package
from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator

from countnet.config import ConfigError
from countnet.rung_audit import audit_lines, audit_rungs, noise_warning, rung_milestones
from tune.cluster import check_resources, connect
from tune.optuna_search import PruningAwareOptunaSearch
from tune.progress import SearchProgress
from tune.results import (
    SEARCH_INFO_FILE,
    STUDY_FILE,
    TrialSummary,
    format_params,
    format_table,
    load_trials,
    rank,
    read_search_info,
)
from tune.sampler import tpe_sampler
from tune.scheduler import StartFromASHA
from tune.space import DefineByRun, SearchSpace, parse_space
from tune.storage import experiment_location, is_uri, normalise, upload, write_text
from tune.tensorboard import CountnetTBXLogger
from tune.trainable import train_countnet

# Ray keeps the best `NUM_TO_KEEP` checkpoints by the target metric, plus always the latest (to
# resume from): the best epoch's checkpoint survives for `countnet export`.
NUM_TO_KEEP = 1
MAX_FAILURES = 2  # Ray restarts a crashed trial from its latest checkpoint this many times
SPACE_COPY = "space.yaml"  # the validated space, saved with the experiment
SQLITE = "sqlite:///"  # prefix of the study's URL; the rest is the absolute path of the file
# Ray's own output engine prints its experiment box and a tensorboard hint into its session
# directory even at verbose=0; its legacy engine prints nothing at verbose=0. Set while a quiet
# search runs (Ray reads it when the run starts).
LEGACY_OUTPUT_ENV = {"RAY_AIR_NEW_OUTPUT": "0"}
# On Ctrl+C Ray's tune.run logs a "Resume experiment with: Tuner.restore(...)" warning; countnet
# prints its own `--resume` command. Raised to ERROR while a quiet search runs.
RAY_TUNE_RUN_LOGGER = "ray.tune.tune"


@dataclass
class SearchOutcome:
    """What a finished search found."""

    exp_dir: str
    metric: str
    mode: str
    trials: list[TrialSummary]
    num_samples: int
    study: str = ""  # Optuna storage URL
    rungs: list[float] = field(default_factory=list)  # ASHA's rung milestones, in epochs

    @property
    def finished(self) -> bool:
        """False after an interruption (Ctrl+C): `--resume` continues it."""
        done = [t for t in self.trials if t.status in ("TERMINATED", "ERROR")]
        return len(done) >= self.num_samples

    @property
    def best(self) -> TrialSummary | None:
        ranked = rank(self.trials, self.metric, self.mode)
        return ranked[0] if ranked else None


def trial_dirname(trial: Any) -> str:
    """Short trial directory names (Ray's default embeds every parameter)."""
    return f"trial_{trial.trial_id}"


def build_tuner(space: SearchSpace, storage_path: str, local_dir: Path, name: str,
                seed: int, max_failures: int = MAX_FAILURES, verbose: int = 0,
                progress: bool = False, sampler: Any = None) -> ray_tune.Tuner:
    """The Tuner of one search (experiment storage_path/name); the study is local_dir/optuna.db.

    Args:
        space: the validated search space.
        storage_path: where Ray keeps experiments (a directory or URI).
        local_dir: the driver-side directory of the Optuna study.
        name: the experiment's name.
        seed: the TPE sampler's seed.
        max_failures: Ray's restarts of a crashed trial.
        verbose: Ray's own output: 0 none, 1 its default, 2 everything.
        progress: countnet's status line per trial event on stderr.
        sampler: an Optuna sampler instead of the seeded TPE (bench/search_efficiency.py's
            random-search arm).
    """
    local_dir.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"{SQLITE}{local_dir / STUDY_FILE}")
    searcher = make_searcher(space, seed, storage=storage, study_name=name, sampler=sampler)
    # ASHA; the `start_from` trials (the baseline to beat) always run all max_epochs.
    scheduler = StartFromASHA(time_attr="epoch", max_t=space.max_epochs,
                              grace_period=space.grace_period,
                              reduction_factor=space.reduction_factor,
                              starts=space.start_points())
    return ray_tune.Tuner(
        trainable(space.cpu, space.gpu),
        param_space=space.base_config(),
        tune_config=ray_tune.TuneConfig(
            metric=space.metric, mode=space.mode, search_alg=searcher, scheduler=scheduler,
            num_samples=space.num_samples, max_concurrent_trials=space.max_concurrent,
            reuse_actors=True, trial_dirname_creator=trial_dirname),
        run_config=ray_tune.RunConfig(
            name=name, storage_path=storage_path, verbose=verbose,
            checkpoint_config=ray_tune.CheckpointConfig(
                num_to_keep=NUM_TO_KEEP, checkpoint_score_attribute=space.metric,
                checkpoint_score_order=space.mode),
            failure_config=ray_tune.FailureConfig(max_failures=max_failures),
            callbacks=callbacks(space, progress)))


def callbacks(space: SearchSpace, progress: bool) -> list[ray_tune.Callback]:
    """countnet's TensorBoard logger, and the status lines when `progress`."""
    out: list[ray_tune.Callback] = [CountnetTBXLogger(space.metric, space.mode)]
    if progress:
        out.append(SearchProgress(space.metric, space.mode, space.max_epochs, space.num_samples))
    return out


def make_searcher(space: SearchSpace, seed: int, storage: Any = None,
                  study_name: str | None = None, sampler: Any = None) -> PruningAwareOptunaSearch:
    """Optuna TPE (seeded) over the space's define-by-run function; storage None = in memory.

    Args:
        space: the validated search space.
        seed: the TPE sampler's seed.
        storage: an Optuna storage, or None for an in-memory study.
        study_name: the study's name in the storage.
        sampler: another Optuna sampler instead of TPE (None: TPE).
    """
    if sampler is None:  # TPE after a random start of a third of the trials (tune.sampler)
        sampler = tpe_sampler(seed, space.num_samples)
    # `start_from` trials are enqueued in the study (Optuna's enqueue_trial), so they run first.
    return PruningAwareOptunaSearch(space=DefineByRun(space), metric=space.metric,
                                    mode=space.mode, sampler=sampler, storage=storage,
                                    study_name=study_name, max_t=space.max_epochs,
                                    points_to_evaluate=space.start_points() or None)


def trainable(cpu: float, gpu: float) -> Any:
    """The trainable with its per-trial resources (an explicit "cpu" key, fractional gpu ok)."""
    return ray_tune.with_resources(train_countnet, {"cpu": cpu, "gpu": gpu})


def run_search(space: SearchSpace, *, storage: str, name: str, seed: int,
               address: str | None = None, max_failures: int = MAX_FAILURES,
               verbose: int = 0, progress: bool = False, sampler: Any = None) -> SearchOutcome:
    """Run a whole search and return its trials. Ray is started here unless already running.

    Args:
        space: the validated search space.
        storage: where experiments go (a directory or URI).
        name: the experiment's name (a new one).
        seed: the TPE sampler's seed.
        address: a Ray cluster to join; None starts an embedded local Ray.
        max_failures: Ray's restarts of a crashed trial.
        verbose: Ray's own output: 0 none, 1 its default, 2 everything.
        progress: a header and countnet's status line per trial event, on stderr.
        sampler: an Optuna sampler instead of the seeded TPE (None: TPE).
    """
    storage_path, exp_dir, local_dir = experiment_location(storage, name)
    if ray_tune.Tuner.can_restore(exp_dir):
        raise ConfigError(f"--name: experiment {exp_dir} exists; resume it with --resume or "
                          f"choose another name")
    if (local_dir / STUDY_FILE).exists():  # Optuna would add this search's trials to it
        raise ConfigError(f"--name: an Optuna study {local_dir / STUDY_FILE} exists already; "
                          f"choose another name")
    with ray_session(address, verbose):
        check_resources(space.cpu, space.gpu)
        tuner = build_tuner(space, storage_path, local_dir, name, seed, max_failures,
                            verbose, progress, sampler)
        _write_record(local_dir, space, seed, exp_dir)
        if progress or verbose:
            starts = f", {len(space.start_from)} from start_from" if space.start_from else ""
            print(f"search: {space.num_samples} trials{starts} x <= {space.max_epochs} epochs, "
                  f"{space.max_concurrent} at a time, target {space.target} ({space.mode} "
                  f"{space.metric}); experiment {exp_dir}", file=sys.stderr, flush=True)
        tuner.fit()
        upload_study(f"{SQLITE}{local_dir / STUDY_FILE}", exp_dir)
    return SearchOutcome(exp_dir, space.metric, space.mode,
                         load_trials(exp_dir, space.metric, space.mode), space.num_samples,
                         f"{SQLITE}{local_dir / STUDY_FILE}", _rungs(space))


def resume_search(exp_dir: str | Path, *, address: str | None = None, verbose: int = 0,
                  progress: bool = False, num_samples: int | None = None,
                  max_epochs: int | None = None) -> SearchOutcome:
    """Continue an interrupted search: finished trials stay, unfinished and errored ones resume
    from their latest checkpoints, and new trials are sampled until num_samples is reached.

    Args:
        exp_dir: the experiment directory (or URI).
        address: a Ray cluster to join; None starts an embedded local Ray.
        verbose: Ray's own output: 0 none, 1 its default, 2 everything.
        progress: a header and countnet's status line per trial event, on stderr.
        num_samples: a new number of trials for the search (at least the trials it has).
        max_epochs: must equal the search's own: ASHA's rungs and the finished trials' epochs
            are fixed when a search starts (ConfigError otherwise).
    """
    exp = normalise(exp_dir)
    info = read_search_info(exp)
    if not info:
        raise ConfigError(f"{exp}: no {SEARCH_INFO_FILE}; not a `countnet search` experiment")
    if not ray_tune.Tuner.can_restore(exp):
        raise ConfigError(f"{exp}: Ray Tune finds no experiment state to resume")
    space = parse_space(info["space"], f"{exp}/{SEARCH_INFO_FILE}")
    if max_epochs is not None and max_epochs != space.max_epochs:
        raise ConfigError(f"--max-epochs: cannot change on --resume ({space.max_epochs} -> "
                          f"{max_epochs}): ASHA's rungs and the trials' epochs are fixed when a "
                          f"search starts; start a new search with --max-epochs {max_epochs}")
    if num_samples is not None and num_samples != space.num_samples:
        if num_samples < 1:
            raise ConfigError(f"--num-samples: must be >= 1, got {num_samples}")
        have = len(load_trials(exp, space.metric, space.mode))
        if num_samples < have:
            raise ConfigError(f"--num-samples {num_samples}: the experiment has {have} trials "
                              f"already; give at least {have}")
        space = space.replace(num_samples=num_samples)
        # Recorded first: an interrupted resume resumes towards the new target.
        info["space"] = space.to_dict()
        write_text(f"{exp}/{SEARCH_INFO_FILE}", json.dumps(info, indent=2))
    with ray_session(address, verbose):
        check_resources(space.cpu, space.gpu)
        tuner = ray_tune.Tuner.restore(exp, trainable(space.cpu, space.gpu),
                                       resume_unfinished=True, resume_errored=True)
        _retarget(tuner, space, verbose, progress)
        if progress or verbose:
            print(f"resume: {exp}, {space.num_samples} trials x <= {space.max_epochs} "
                  f"epochs, target {space.target}", file=sys.stderr, flush=True)
        tuner.fit()
        upload_study(info.get("study", ""), exp)
    return SearchOutcome(exp, space.metric, space.mode,
                         load_trials(exp, space.metric, space.mode), space.num_samples,
                         info.get("study", ""), _rungs(space))


def _rungs(space: SearchSpace) -> list[float]:
    """The rungs of the space's ASHA (StartFromASHA places them as Ray's ASHAScheduler)."""
    return rung_milestones(space.grace_period, space.reduction_factor, space.max_epochs)


class RetargetedSearchGenerator(SearchGenerator):
    """Ray's SearchGenerator whose restored trial count is replaced by a new target.

    Ray restores `num_samples` from the experiment's search state and has no setting for a new
    one; this sets it after Ray's own `set_state` (never below the trials already created).

    Args:
        searcher: the (concurrency-limited) searcher, as Ray would wrap it.
        num_samples: the new total number of trials.
    """

    def __init__(self, searcher: Searcher, num_samples: int) -> None:
        super().__init__(searcher)
        self._target = num_samples

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        self._total_samples = max(self._target, self._counter)


def _retarget(tuner: ray_tune.Tuner, space: SearchSpace, verbose: int, progress: bool) -> None:
    """Give a restored Tuner this run's output settings, callbacks and num_samples.

    `Tuner.restore` brings back the RunConfig and TuneConfig saved when the search started
    (verbosity, callbacks, num_samples); Ray has no public setter for them, so they are set on
    its TunerInternal, which Ray itself updates the same way (`set_run_config_...`).
    """
    internal = getattr(tuner, "_local_tuner", None)
    if internal is None:  # Ray Client: the Tuner lives on the cluster
        raise ConfigError("--resume: not supported through Ray Client (ray://); use --address "
                          "HOST:PORT or run on the head node")
    run_config = internal.get_run_config()
    run_config.verbose = verbose
    kept = [c for c in run_config.callbacks or []
            if not isinstance(c, (CountnetTBXLogger, SearchProgress))]
    run_config.callbacks = kept + callbacks(space, progress)
    tune_config = internal._tune_config
    searcher = tune_config.search_alg
    if isinstance(searcher, Searcher):  # as saved by build_tuner; wrapped as tune.run would
        if tune_config.max_concurrent_trials:
            searcher = ConcurrencyLimiter(searcher,
                                          max_concurrent=tune_config.max_concurrent_trials)
            tune_config.max_concurrent_trials = None  # applied here, not again by tune.run
        tune_config.search_alg = RetargetedSearchGenerator(searcher, space.num_samples)
    elif isinstance(searcher, RetargetedSearchGenerator):
        searcher._target = space.num_samples


@contextlib.contextmanager
def quiet_logs(verbose: int) -> Iterator[None]:
    """With verbose 0: Ray's legacy (silent) output engine, Optuna's INFO lines off, and Ray
    Tune's "Tuner.restore" hint after Ctrl+C off (countnet prints its own --resume command)."""
    if verbose:
        yield
        return
    optuna_level = optuna.logging.get_verbosity()
    tune_logger = logging.getLogger(RAY_TUNE_RUN_LOGGER)
    tune_level = tune_logger.level
    saved = {k: os.environ.get(k) for k in LEGACY_OUTPUT_ENV}
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in RDB ..."
    tune_logger.setLevel(logging.ERROR)
    os.environ.update(LEGACY_OUTPUT_ENV)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(optuna_level)
        tune_logger.setLevel(tune_level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def ray_session(address: str | None, verbose: int) -> Iterator[None]:
    """Ray for one search or resume: joined (address) or started here, and shut down after only
    when started here; with verbose 0 the logs are quiet (`quiet_logs`) and the workers' output
    stays in Ray's log files (they print Ray's "Checkpoint successfully created at: ..." for
    every epoch of every trial, and shutdown noise; a failed trial is still reported by
    tune.progress and the final table, with its error.txt).
    """
    with quiet_logs(verbose):
        started = connect(address, log_to_driver=verbose > 0)
        try:
            yield
        finally:
            if started:
                import ray

                ray.shutdown()


def print_summary(outcome: SearchOutcome, out: Any = sys.stdout, quiet: bool = False) -> None:
    """The top-trials table, the audit of ASHA's rungs, the best trial and checkpoint, and where
    to look next.

    Args:
        outcome: the search's trials.
        out: the stream (stdout: this is the command's result).
        quiet: the table only (no rung audit, no noise warning, no next steps).
    """
    print(format_table(outcome.trials, outcome.metric, outcome.mode), file=out)
    if not quiet:
        audits = audit_rungs({t.trial_id: t.history for t in outcome.trials}, outcome.rungs,
                             outcome.metric, outcome.mode)
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
    print(f"experiment: {outcome.exp_dir}", file=out)
    print(f"tensorboard --logdir {outcome.exp_dir}", file=out)
    if outcome.study:
        print(f"optuna-dashboard {outcome.study}", file=out)


def upload_study(study: str, exp_dir: str) -> None:
    """For cloud storage, a copy of the local SQLite study (URL `study`) into the experiment."""
    if is_uri(exp_dir) and study.startswith(SQLITE):
        upload(Path(study.removeprefix(SQLITE)), f"{exp_dir}/{STUDY_FILE}")


def _write_record(local_dir: Path, space: SearchSpace, seed: int, exp_dir: str) -> None:
    """What resume and export need to know, next to Ray's own files."""
    raw = space.to_dict()
    record = {"target": space.target, "metric": space.metric, "mode": space.mode,
              "seed": seed, "space_file": str(space.path), "space": raw,
              "study": f"{SQLITE}{local_dir / STUDY_FILE}", "study_name": Path(exp_dir).name,
              "experiment": exp_dir, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_text(f"{exp_dir}/{SEARCH_INFO_FILE}", json.dumps(record, indent=2))
    write_text(f"{exp_dir}/{SPACE_COPY}", yaml.safe_dump(raw, sort_keys=False))
