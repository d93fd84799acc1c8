"""`countnet search`: a Ray Tune search of the counting CNN, with Optuna TPE and ASHA.

Every piece is Ray Tune's or Optuna's own: `Tuner` + `PruningAwareOptunaSearch` (TPE, seeded,
study in SQLite in the experiment directory) + `ASHAScheduler` over epochs + `with_resources` +
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
every COMPLETE trial has.)
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from countnet.config import ConfigError
from tune.cluster import check_resources, connect
from tune.optuna_search import PruningAwareOptunaSearch
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


@dataclass
class SearchOutcome:
    """What a finished search found."""

    exp_dir: str
    metric: str
    mode: str
    trials: list[TrialSummary]
    num_samples: int
    study: str = ""  # Optuna storage URL

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
                seed: int, max_failures: int = MAX_FAILURES, verbose: int = 1) -> tune.Tuner:
    """The Tuner of one search (experiment storage_path/name); the study is local_dir/optuna.db."""
    local_dir.mkdir(parents=True, exist_ok=True)
    storage = optuna.storages.RDBStorage(f"{SQLITE}{local_dir / STUDY_FILE}")
    searcher = make_searcher(space, seed, storage=storage, study_name=name)
    scheduler = ASHAScheduler(time_attr="epoch", max_t=space.max_epochs,
                              grace_period=space.grace_period,
                              reduction_factor=space.reduction_factor)
    return tune.Tuner(
        trainable(space.cpu, space.gpu),
        param_space=space.base_config(),
        tune_config=tune.TuneConfig(
            metric=space.metric, mode=space.mode, search_alg=searcher, scheduler=scheduler,
            num_samples=space.num_samples, max_concurrent_trials=space.max_concurrent,
            reuse_actors=True, trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=name, storage_path=storage_path, verbose=verbose,
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=NUM_TO_KEEP, checkpoint_score_attribute=space.metric,
                checkpoint_score_order=space.mode),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            callbacks=[CountnetTBXLogger()]))


def make_searcher(space: SearchSpace, seed: int, storage: Any = None,
                  study_name: str | None = None) -> PruningAwareOptunaSearch:
    """Optuna TPE (seeded) over the space's define-by-run function; storage None = in memory."""
    # `group` and `constant_liar` are marked experimental in Optuna; they are what its docs
    # recommend for conditional spaces and for trials that run in parallel.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                         constant_liar=True)
    return PruningAwareOptunaSearch(space=DefineByRun(space), metric=space.metric,
                                    mode=space.mode, sampler=sampler, storage=storage,
                                    study_name=study_name, max_t=space.max_epochs)


def trainable(cpu: float, gpu: float) -> Any:
    """The trainable with its per-trial resources (an explicit "cpu" key, fractional gpu ok)."""
    return tune.with_resources(train_countnet, {"cpu": cpu, "gpu": gpu})


def run_search(space: SearchSpace, *, storage: str, name: str, seed: int,
               address: str | None = None, max_failures: int = MAX_FAILURES,
               verbose: int = 1) -> SearchOutcome:
    """Run a whole search and return its trials. Ray is started here unless already running."""
    storage_path, exp_dir, local_dir = experiment_location(storage, name)
    if tune.Tuner.can_restore(exp_dir):
        raise ConfigError(f"--name: experiment {exp_dir} exists; resume it with --resume or "
                          f"choose another name")
    if (local_dir / STUDY_FILE).exists():  # Optuna would add this search's trials to it
        raise ConfigError(f"--name: an Optuna study {local_dir / STUDY_FILE} exists already; "
                          f"choose another name")
    started = connect(address)
    try:
        check_resources(space.cpu, space.gpu)
        tuner = build_tuner(space, storage_path, local_dir, name, seed, max_failures, verbose)
        _write_record(local_dir, space, seed, exp_dir)
        print(f"search: {space.num_samples} trials x <= {space.max_epochs} epochs, target "
              f"{space.target} ({space.mode} {space.metric}), experiment {exp_dir}", flush=True)
        tuner.fit()
        upload_study(f"{SQLITE}{local_dir / STUDY_FILE}", exp_dir)
    finally:
        if started:
            import ray

            ray.shutdown()
    return SearchOutcome(exp_dir, space.metric, space.mode,
                         load_trials(exp_dir, space.metric, space.mode), space.num_samples,
                         f"{SQLITE}{local_dir / STUDY_FILE}")


def resume_search(exp_dir: str | Path, *, address: str | None = None,
                  verbose: int = 1) -> SearchOutcome:
    """Continue an interrupted search: finished trials stay, unfinished and errored ones resume
    from their latest checkpoints, and new trials are sampled until num_samples is reached."""
    exp = normalise(exp_dir)
    info = read_search_info(exp)
    if not info:
        raise ConfigError(f"{exp}: no {SEARCH_INFO_FILE}; not a `countnet search` experiment")
    if not tune.Tuner.can_restore(exp):
        raise ConfigError(f"{exp}: Ray Tune finds no experiment state to resume")
    space = parse_space(info["space"], f"{exp}/{SEARCH_INFO_FILE}")
    started = connect(address)
    try:
        check_resources(space.cpu, space.gpu)
        tuner = tune.Tuner.restore(exp, trainable(space.cpu, space.gpu),
                                   resume_unfinished=True, resume_errored=True)
        print(f"resume: {exp}", flush=True)
        tuner.fit()
        upload_study(info.get("study", ""), exp)
    finally:
        if started:
            import ray

            ray.shutdown()
    return SearchOutcome(exp, space.metric, space.mode,
                         load_trials(exp, space.metric, space.mode), space.num_samples,
                         info.get("study", ""))


def print_summary(outcome: SearchOutcome, out: Any = sys.stdout) -> None:
    """The top-trials table, the best trial and checkpoint, and where to look next."""
    print(format_table(outcome.trials, outcome.metric, outcome.mode), file=out)
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
    if not outcome.finished:
        print(f"interrupted: continue with `countnet search --resume {outcome.exp_dir}`",
              file=out)
    out.flush()


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
