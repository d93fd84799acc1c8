"""`start_from` and `--deterministic` in a real Ray Tune + Optuna search on the local Ray."""

from __future__ import annotations

import copy
import json

import optuna

from countnet.cli import main
from countnet.config import TrainConfig
from tests.tune.conftest import MAIN_SPACE, write_space
from tune.results import load_trials
from tune.search import run_search
from tune.space import load_space

# A small space that holds TrainConfig's defaults (width 32, batch_size 32, lr 2e-3).
SPACE = copy.deepcopy(MAIN_SPACE)
SPACE["search"]["width"]["values"] = [8, 32]
SPACE["search"]["batch_size"]["values"] = [32, 64]
SPACE["scheduler"] = {"max_epochs": 3, "grace_period": 1, "reduction_factor": 2}
SPACE["num_samples"] = 4
START = {"lr": 0.01, "width": 8, "batchnorm": True, "dropout": 0.15, "batch_size": 64}
DEFAULT = TrainConfig()


def _study(exp_dir: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{exp_dir}/optuna.db")


def _key(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def test_start_from_trials_run_first_with_the_given_values(ray_local, tmp_path) -> None:
    raw = copy.deepcopy(SPACE)
    raw["search"]["batchnorm"]["when"] = {"width": 8}  # so that START's batchnorm is searched
    raw["start_from"] = ["defaults", START]
    space = load_space(write_space(tmp_path / "space.yaml", raw))
    outcome = run_search(space, storage=str(tmp_path / "exp"), name="start", seed=0, verbose=0)
    trials = _study(outcome.exp_dir, "start").trials  # in the order Optuna handed them out
    assert len(trials) == space.num_samples  # the starting trials count towards num_samples
    expected = [{"lr": DEFAULT.lr, "width": DEFAULT.width, "use_dropout": False,
                 "batch_size": DEFAULT.batch_size},
                {"lr": 0.01, "width": 8, "batchnorm": True, "use_dropout": True,
                 "dropout": 0.15, "batch_size": 64}]
    assert [t.params for t in trials[:2]] == expected
    assert {_key(t.params) for t in trials[2:]}.isdisjoint(map(_key, expected))  # then TPE
    # Ray ran them with exactly these values: each trial's config is fixed + these parameters.
    configs = {_key(t.params): t.config for t in outcome.trials}
    first = configs[_key(expected[0])]
    assert ((first["lr"], first["width"], first["batch_size"])
            == (DEFAULT.lr, DEFAULT.width, DEFAULT.batch_size))
    assert "dropout" not in first and "batchnorm" not in first  # they keep their defaults
    second = configs[_key(expected[1])]
    assert {k: second[k] for k in START} == START
    # ASHA never stops a starting trial (the baseline to beat).
    epochs = {_key(t.params): t.epochs_run for t in outcome.trials}
    assert epochs[_key(expected[0])] == epochs[_key(expected[1])] == space.max_epochs


def _deterministic_search(tmp_path, name: str) -> list[tuple[str, int, float]]:
    """`countnet search --deterministic`: per trial, in Optuna's order, (params, epochs, best)."""
    path = write_space(tmp_path / "space.yaml", {**SPACE, "num_samples": 5})
    code = main(["search", "--space", str(path), "--storage", str(tmp_path / "exp"),
                 "--name", name, "--seed", "1", "--deterministic", "--no-report", "-q"])
    assert code == 0
    exp = str(tmp_path / "exp" / name)
    trials = {_key(t.params): t for t in load_trials(exp, "val_loss", "min")}
    return [(_key(o.params), trials[_key(o.params)].epochs_run,
             trials[_key(o.params)].best["val_loss"]) for o in _study(exp, name).trials]


def test_deterministic_mode_gives_the_same_trials_stops_and_winner(ray_local, tmp_path) -> None:
    first = _deterministic_search(tmp_path, "one")
    second = _deterministic_search(tmp_path, "two")
    assert [(p, e) for p, e, _ in first] == [(p, e) for p, e, _ in second]  # configs and stops
    assert any(e < SPACE["scheduler"]["max_epochs"] for _, e, _ in first)  # ASHA did stop some
    for (_, _, a), (_, _, b) in zip(first, second, strict=True):
        assert abs(a - b) <= 1e-6 * max(1.0, abs(a))  # the same training, on the CPU
    assert min(first, key=lambda r: r[2])[0] == min(second, key=lambda r: r[2])[0]  # winner
