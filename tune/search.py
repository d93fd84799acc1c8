"""`countnet search`: a Ray Tune search of the counting CNN, with Optuna TPE and ASHA.

This module builds and runs a new search from Ray Tune's and Optuna's public APIs: `Tuner` +
`PruningAwareOptunaSearch` (Ray's OptunaSearch with TPE, seeded, study in SQLite in the
experiment directory; `tune.optuna_search`) + ASHA over epochs (`start_from` trials exempt:
`tune.scheduler`) + `with_resources` + `CheckpointConfig` ranked by the target metric +
`FailureConfig`. Resuming a search (`Tuner.restore`) is `tune.resume`, which does set private
Ray attributes, each named and explained there. Joining Ray and quieting its logs is
`tune.cluster.ray_session`. This module prints nothing itself (the live status lines are
`tune.progress`'s): `tune.cli` prints the header line (through `announce`) and the summary.

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

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import yaml
from ray import tune as ray_tune  # Ray Tune; `tune` is this package

from countnet.config import ConfigError
from countnet.experiment import ERROR, SEARCH_INFO_FILE, STUDY_FILE, TERMINATED, Trial, rank
from countnet.overfit_curve import SCOPE_ALL, rank_scope
from countnet.rung_audit import rung_milestones
from tune.cluster import check_resources, ray_session
from tune.optuna_search import PruningAwareOptunaSearch
from tune.optuna_space import DefineByRun
from tune.progress import SearchProgress
from tune.results import load_trials
from tune.sampler import tpe_sampler
from tune.scheduler import StartFromASHA
from tune.space import SearchSpace
from tune.storage import experiment_location, is_uri, upload, write_text
from tune.tensorboard import CountnetTBXLogger
from tune.trainable import train_countnet, train_countnet_overfit

# Ray keeps the best `NUM_TO_KEEP` checkpoints by the target metric, plus always the latest (to
# resume from): the best epoch's checkpoint survives for `countnet export`, and so does the last
# epoch's, which is the one exported for the overfit target (`rank_scope`).
NUM_TO_KEEP = 1
# Ray also forces a snapshot of the whole experiment (every trial's state and the searcher's)
# whenever a trial has written num_to_keep checkpoints since the last snapshot: with 1, after
# every epoch of every trial, and a snapshot's cost grows with the trials, so a large search was
# quadratic (bench/scale.py, 1,000 trials x 1 epoch: 1,009 snapshots, a quarter of the driver's
# time). From LARGE_SEARCH trials on Ray keeps one checkpoint more per trial (its second best),
# and snapshots come about once per epoch of a trial, or every TUNE_GLOBAL_CHECKPOINT_S.
LARGE_SEARCH = 100
MAX_FAILURES = 2  # Ray restarts a crashed trial from its latest checkpoint this many times
SPACE_COPY = "space.yaml"  # the validated space, saved with the experiment
SQLITE = "sqlite:///"  # prefix of the study's URL; the rest is the absolute path of the file
# SQLite waits for the disk (fsync) at every commit, and Optuna commits every sampled value and
# every epoch's value: about 16 ms each on bench/scale.py's machine, 0.35 s of the driver per
# 4-epoch trial, more than a 10,000-trial search's whole budget. Without the wait a commit is
# handed to the OS: a crashed driver loses nothing; only an OS crash or power cut in the middle
# of a write can damage the study (Ray's own experiment files are not synced either). The file
# stays an ordinary SQLite database (no WAL files, which NFS does not support).
SQLITE_SYNC = "PRAGMA synchronous=OFF"
# Called with the space and the experiment directory just before the trials start (the CLI
# prints its header line then).
Announce = Callable[[SearchSpace, str], None]
# A Ray Tune function trainable: called with a trial's config, reports through ray.tune.report.
Train = Callable[[dict[str, Any]], None]


@dataclass
class SearchOutcome:
    """What a finished search found."""

    exp_dir: str
    metric: str
    mode: str
    trials: list[Trial]
    num_samples: int
    study: str = ""  # Optuna storage URL
    rungs: list[float] = field(default_factory=list)  # ASHA's rung milestones, in epochs
    # Which epoch stands for each trial (`rank_scope` of the target): its best ("all") or its
    # last ("last"); the trials' `best` rows were made under it.
    scope: str = SCOPE_ALL

    @property
    def finished(self) -> bool:
        """False after an interruption (Ctrl+C): `--resume` continues it."""
        done = [t for t in self.trials if t.status in (TERMINATED, ERROR)]
        return len(done) >= self.num_samples

    @property
    def best(self) -> Trial | None:
        ranked = rank(self.trials, self.metric, self.mode)
        return ranked[0] if ranked else None


def trial_dirname(trial: Any) -> str:
    """Short trial directory names (Ray's default embeds every parameter)."""
    return f"trial_{trial.trial_id}"


def build_tuner(space: SearchSpace, storage_path: str, local_dir: Path, name: str,
                seed: int, max_failures: int = MAX_FAILURES, verbose: int = 0,
                progress: bool = False, sampler: Any = None,
                train: Train | None = None) -> ray_tune.Tuner:
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
        train: another trainable function instead of countnet's (`trainable`).
    """
    local_dir.mkdir(parents=True, exist_ok=True)
    storage = study_storage(local_dir / STUDY_FILE)
    searcher = make_searcher(space, seed, storage=storage, study_name=name, sampler=sampler)
    # ASHA; the `start_from` trials (the baseline to beat) always run all max_epochs.
    scheduler = StartFromASHA(time_attr="epoch", max_t=space.max_epochs,
                              grace_period=space.grace_period,
                              reduction_factor=space.reduction_factor,
                              starts=space.start_points())
    return ray_tune.Tuner(
        trainable(space.cpu, space.gpu, keep_best_val=space.target == "overfit", train=train),
        param_space=space.base_config(),
        tune_config=ray_tune.TuneConfig(
            metric=space.metric, mode=space.mode, search_alg=searcher, scheduler=scheduler,
            num_samples=space.num_samples, max_concurrent_trials=space.max_concurrent,
            reuse_actors=True, trial_dirname_creator=trial_dirname),
        run_config=ray_tune.RunConfig(
            name=name, storage_path=storage_path, verbose=verbose,
            checkpoint_config=ray_tune.CheckpointConfig(
                num_to_keep=num_to_keep(space.num_samples),
                checkpoint_score_attribute=space.metric, checkpoint_score_order=space.mode),
            failure_config=ray_tune.FailureConfig(max_failures=max_failures),
            callbacks=callbacks(space, progress)))


def num_to_keep(num_samples: int) -> int:
    """The best checkpoints Ray keeps per trial: NUM_TO_KEEP, one more from LARGE_SEARCH trials.

    Args:
        num_samples: the trials of the search.
    """
    return NUM_TO_KEEP if num_samples < LARGE_SEARCH else NUM_TO_KEEP + 1


class UnsyncedConnection(sqlite3.Connection):
    """A SQLite connection whose commits do not wait for the disk (SQLITE_SYNC)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute(SQLITE_SYNC)


def study_storage(path: Path) -> optuna.storages.RDBStorage:
    """The Optuna study's SQLite storage at `path`, its commits unsynced (SQLITE_SYNC).

    The connection class goes through the engine's arguments, which Optuna keeps when Ray
    pickles the searcher, so a resumed search's storage is unsynced too.

    Args:
        path: the SQLite file.
    """
    return optuna.storages.RDBStorage(
        f"{SQLITE}{path}", engine_kwargs={"connect_args": {"factory": UnsyncedConnection}})


def callbacks(space: SearchSpace, progress: bool) -> list[ray_tune.Callback]:
    """countnet's TensorBoard logger, and the status lines when `progress`; both take each
    trial's best epoch as the target's scope says (`rank_scope`)."""
    scope = rank_scope(space.target)
    out: list[ray_tune.Callback] = [CountnetTBXLogger(space.metric, space.mode, scope)]
    if progress:
        out.append(SearchProgress(space.metric, space.mode, space.max_epochs, space.num_samples,
                                  scope=scope))
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


def trainable(cpu: float, gpu: float, keep_best_val: bool = False,
              train: Train | None = None) -> Any:
    """The trainable with its per-trial resources (an explicit "cpu" key, fractional gpu ok).

    Args:
        cpu: CPUs per trial.
        gpu: GPUs per trial.
        keep_best_val: the target `overfit`: each checkpoint also holds the trial's
            min-val_loss epoch (`train_countnet_overfit`).
        train: another trainable function (None: countnet's, `tune.trainable`); it gets the
            same resources. bench/scale.py passes one that replays recorded learning curves.
    """
    if train is None:
        train = train_countnet_overfit if keep_best_val else train_countnet
    return ray_tune.with_resources(train, {"cpu": cpu, "gpu": gpu})


def run_search(space: SearchSpace, *, storage: str, name: str, seed: int,
               address: str | None = None, max_failures: int = MAX_FAILURES,
               verbose: int = 0, progress: bool = False, sampler: Any = None,
               announce: Announce | None = None, train: Train | None = None) -> SearchOutcome:
    """Run a whole search and return its trials. Ray is started here unless already running.

    Args:
        space: the validated search space.
        storage: where experiments go (a directory or URI).
        name: the experiment's name (a new one).
        seed: the TPE sampler's seed.
        address: a Ray cluster to join; None starts an embedded local Ray.
        max_failures: Ray's restarts of a crashed trial (>= 0).
        verbose: Ray's own output: 0 none, 1 its default, 2 everything.
        progress: countnet's status line per trial event, on stderr.
        sampler: an Optuna sampler instead of the seeded TPE (None: TPE).
        announce: called with the space and the experiment directory once Ray runs and the
            search is set up, just before the first trial.
        train: another trainable function instead of countnet's (None: `tune.trainable`'s);
            it must report and checkpoint as that one does (bench/scale.py's replay).
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
                            verbose, progress, sampler, train)
        _write_record(local_dir, space, seed, exp_dir)
        if announce is not None:
            announce(space, exp_dir)
        tuner.fit()
        upload_study(f"{SQLITE}{local_dir / STUDY_FILE}", exp_dir)
    scope = rank_scope(space.target)
    return SearchOutcome(exp_dir, space.metric, space.mode,
                         load_trials(exp_dir, space.metric, space.mode, scope), space.num_samples,
                         f"{SQLITE}{local_dir / STUDY_FILE}", rungs(space), scope)


def rungs(space: SearchSpace) -> list[float]:
    """The rungs of the space's ASHA (StartFromASHA places them as Ray's ASHAScheduler)."""
    return rung_milestones(space.grace_period, space.reduction_factor, space.max_epochs)


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
