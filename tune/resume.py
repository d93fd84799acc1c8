"""`countnet search --resume`: continue an interrupted search, optionally towards more trials.

Ray's `Tuner.restore` brings the experiment back: finished trials stay, unfinished and errored
ones resume from their latest checkpoints, and the searcher (with its Optuna study) and the
scheduler continue from their saved state. It also brings back the RunConfig and TuneConfig
pickled when the search started (tuner.pkl), and Ray has no public way to change them on restore
(`Tuner.restore` takes no RunConfig or TuneConfig). Three of their settings must follow this run
instead, so `_retarget` sets them on Ray's private objects:

- the output settings and callbacks (`-v`, `-q`, a fresh `tune.progress` counting towards this
  run's total): `Tuner._local_tuner` (private: the TunerInternal that runs the experiment), whose
  `get_run_config()` returns the RunConfig it will use; its `verbose` and `callbacks` are set;
- the number of trials (`--num-samples`): `TunerInternal._tune_config` (private) gets a
  `search_alg` of our own, `RetargetedSearchGenerator`, a subclass of Ray's `SearchGenerator`
  that sets `SearchGenerator._total_samples` (private: the trial count Ray restores from the
  searcher state and stops at) after Ray's own `set_state`, never below `_counter` (private:
  the trials already created);
- concurrency: Ray wraps a plain Searcher in a `ConcurrencyLimiter` only when it gets a
  Searcher, and it now gets a SearchGenerator, so the limiter is applied here and
  `TuneConfig.max_concurrent_trials` is cleared (Ray would warn that it ignores it).

Ray itself updates the TunerInternal's RunConfig the same way
(`set_run_config_and_remote_string_queue`). These private names are Ray 2.60's (the version this
project is tested with); a Ray upgrade that renames them fails tests/tune/test_progress.py's
resume with a new `--num-samples`. Through Ray Client (ray://) the Tuner lives on the cluster
and there is nothing to set: refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from ray import tune as ray_tune  # Ray Tune; `tune` is this package
from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator

from countnet.config import ConfigError
from countnet.experiment import SEARCH_INFO_FILE
from countnet.overfit_curve import rank_scope
from tune.cluster import check_resources, ray_session
from tune.progress import SearchProgress
from tune.results import load_trials, read_search_info
from tune.search import Announce, SearchOutcome, callbacks, rungs, trainable, upload_study
from tune.space import SearchSpace, parse_space
from tune.storage import normalise, write_text
from tune.tensorboard import CountnetTBXLogger


def resume_search(exp_dir: str | Path, *, address: str | None = None, verbose: int = 0,
                  progress: bool = False, num_samples: int | None = None,
                  max_epochs: int | None = None,
                  announce: Announce | None = None) -> SearchOutcome:
    """Continue an interrupted search: finished trials stay, unfinished and errored ones resume
    from their latest checkpoints, and new trials are sampled until num_samples is reached.

    Args:
        exp_dir: the experiment directory (or URI).
        address: a Ray cluster to join; None starts an embedded local Ray.
        verbose: Ray's own output: 0 none, 1 its default, 2 everything.
        progress: countnet's status line per trial event, on stderr.
        num_samples: a new number of trials for the search (>= 1, checked by the CLI; at least
            the trials it has, ConfigError otherwise).
        max_epochs: must equal the search's own: ASHA's rungs and the finished trials' epochs
            are fixed when a search starts (ConfigError otherwise).
        announce: called with the (retargeted) space and the experiment directory just before
            the trials continue.
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
        tuner = ray_tune.Tuner.restore(exp, trainable(space.cpu, space.gpu,
                                                         space.target == "overfit"),
                                       resume_unfinished=True, resume_errored=True)
        _retarget(tuner, space, verbose, progress)
        if announce is not None:
            announce(space, exp)
        tuner.fit()
        upload_study(info.get("study", ""), exp)
    scope = rank_scope(space.target)
    return SearchOutcome(exp, space.metric, space.mode,
                         load_trials(exp, space.metric, space.mode, scope), space.num_samples,
                         info.get("study", ""), rungs(space), scope)


class RetargetedSearchGenerator(SearchGenerator):
    """Ray's SearchGenerator whose restored trial count is replaced by a new target.

    Ray restores `num_samples` from the experiment's search state and has no setting for a new
    one; this sets Ray's private `_total_samples` after Ray's own `set_state`, never below its
    private `_counter` (the trials already created).

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

    Sets private Ray state (this module's docstring says which and why): the RunConfig that
    `Tuner._local_tuner.get_run_config()` returns (verbose, callbacks), and
    `Tuner._local_tuner._tune_config` (search_alg, max_concurrent_trials).
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
