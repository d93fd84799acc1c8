"""TPE's random start follows num_samples: read back from the searcher the search builds (a real
Optuna study) and from the study of the real search of conftest `main_search`."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from countnet.experiment import STUDY_FILE
from tests.tune.conftest import MAIN_SPACE
from tune.sampler import startup_trials
from tune.search import make_searcher
from tune.space import parse_space

# Optuna's TPE stores the parameters it sampled from its model (not at random) in this system
# attribute of the trial when constant_liar is on (optuna/samplers/_tpe/sampler.py).
TPE_PARAMS_ATTR = "tpe:relative_params:0"


@pytest.mark.parametrize(("num_samples", "startup"), [(1, 3), (6, 3), (8, 3), (12, 4),
                                                      (30, 10)])
def test_startup_trials_is_a_third_at_least_3(num_samples: int, startup: int) -> None:
    assert startup_trials(num_samples) == startup


def test_the_built_sampler_starts_tpe_after_a_third_of_the_trials() -> None:
    space = parse_space({**MAIN_SPACE, "num_samples": 12})
    searcher = make_searcher(space, seed=0)
    sampler = searcher._ot_study.sampler  # the sampler of the study the searcher asks
    assert isinstance(sampler, optuna.samplers.TPESampler)
    assert sampler._n_startup_trials == 4 and sampler._constant_liar
    for i in range(6):  # trial i is asked after i trials completed
        searcher.suggest(f"t{i}")
        searcher.on_trial_complete(f"t{i}", {"val_loss": 1.0 + i, "epoch": space.max_epochs})
    trials = searcher._ot_study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 6
    assert [TPE_PARAMS_ATTR in t.system_attrs for t in trials] == [False] * 4 + [True] * 2


def test_the_main_search_used_tpe_after_its_random_start(main_search) -> None:
    space, outcome = main_search
    study = optuna.load_study(study_name="main",
                              storage=f"sqlite:///{Path(outcome.exp_dir) / STUDY_FILE}")
    by_tpe = [t.number for t in study.trials if TPE_PARAMS_ATTR in t.system_attrs]
    start = startup_trials(space.num_samples)
    assert by_tpe, "TPE sampled no trial of the search"
    # Never before `start` trials had finished; the last trial is asked when all but (at most)
    # one other have.
    assert min(by_tpe) >= start
    assert space.num_samples - 1 in by_tpe
