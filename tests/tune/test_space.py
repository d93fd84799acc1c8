"""Search-space files: shipped spaces, validation errors (exit 2), define-by-run conditions.

No Ray here: validation happens before Ray starts.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import optuna
import pytest
import yaml

from countnet.cli import main
from countnet.config import TrainConfig, field_names
from tests.tune.conftest import MAIN_SPACE, write_space
from tune.optuna_space import DefineByRun, trial_config
from tune.space import SearchSpace, load_space, parse_space

SHIPPED = sorted(p.name for p in files("search_spaces").iterdir() if p.name.endswith(".yaml"))


def test_shipped_spaces_exist() -> None:
    assert {"generalise.yaml", "overfit.yaml", "overfit-gpu.yaml", "forum.yaml",
            "smoke.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_key_of_every_shipped_space_is_a_trainconfig_field(name: str) -> None:
    raw = yaml.safe_load((files("search_spaces") / name).read_text())
    fields = set(field_names())
    keys = set(raw.get("fixed", {})) | set(raw.get("search", {}))
    conditions = {f for spec in raw.get("search", {}).values() for f in spec.get("when", {})}
    assert keys and keys <= fields
    assert conditions <= fields
    space = load_space(files("search_spaces") / name)  # and it validates
    assert parse_space(space.to_dict(), name) == space.replace(path=name)


def test_shipped_targets() -> None:
    spaces = {n: load_space(files("search_spaces") / n) for n in SHIPPED}
    assert (spaces["generalise.yaml"].metric, spaces["generalise.yaml"].mode) == ("val_loss", "min")
    for name in ("overfit.yaml", "overfit-gpu.yaml"):
        over = spaces[name]
        assert (over.metric, over.mode) == ("gap", "max")
        assert over.fixed["dropout"] == 0 and over.fixed["weight_decay"] == 0
        assert over.fixed["augment"] == "none"
    # The CPU space stops at ResNet-34 with the cheap stem; the GPU one climbs to ResNet-101.
    cpu, gpu = spaces["overfit.yaml"], spaces["overfit-gpu.yaml"]
    assert set(next(p for p in cpu.params if p.name == "model").values) <= {
        "simple", "resnet18", "resnet34"}
    assert cpu.fixed["small_stem"] is False and cpu.gpu == 0
    assert {"resnet50", "resnet101"} <= set(next(p for p in gpu.params if p.name == "model").values)
    forum = spaces["forum.yaml"]
    assert forum.fixed["model"] == "resnet34" and forum.fixed["freeze_body"] is True
    lr = next(p for p in forum.params if p.name == "lr")
    assert lr.low < 5e-2 < lr.high


def _broken(mutate) -> dict:
    raw = copy.deepcopy(MAIN_SPACE)
    mutate(raw)
    return raw


def _model_searched(raw: dict) -> None:
    """Search `model` (simple or resnet18) first; width and batchnorm are simple's alone."""
    del raw["fixed"]["model"]
    raw["search"] = {"model": {"type": "choice", "values": ["simple", "resnet18"]},
                     **raw["search"]}


INVALID = [
    ("unknown field", lambda r: r["search"].update(learning_rate={"type": "uniform", "low": 0,
                                                                  "high": 1}),
     "search.learning_rate", "not a TrainConfig field"),
    ("unknown fixed field", lambda r: r["fixed"].update(colour="red"),
     "fixed.colour", "not a TrainConfig field"),
    ("low >= high", lambda r: r["search"]["lr"].update(low=0.1, high=0.01),
     "search.lr.low", "must be < high"),
    ("wrong type", lambda r: r["search"].update(depth={"type": "uniform", "low": 2, "high": 5}),
     "search.depth.type", "needs a float field"),
    ("wrong fixed type", lambda r: r["fixed"].update(train_size="many"),
     "train_size", "expected int"),
    ("empty choice", lambda r: r["search"]["width"].update(values=[]),
     "search.width.values", "non-empty list"),
    ("bad target", lambda r: r.update(target="overfitting"),
     "target", "must be one of generalise, overfit"),
    ("bad choice value", lambda r: r["search"].update(pool={"type": "choice",
                                                             "values": ["sum", "max"]}),
     "search.pool", "must be one of avg, sum"),
    ("epochs searched", lambda r: r["search"].update(epochs={"type": "int", "low": 1, "high": 3}),
     "search.epochs", "scheduler.max_epochs"),
    ("condition on a later field", lambda r: r["search"]["lr"].update(when={"width": 16}),
     "search.lr.when.width", "searched before"),
    ("start_from unknown field", lambda r: r.update(start_from=[{"learning_rate": 0.01}]),
     "start_from[0].learning_rate", "not a TrainConfig field"),
    ("start_from value out of range", lambda r: r.update(start_from=[
        {"lr": 0.01, "width": 8, "batch_size": 16}, {"lr": 0.5, "width": 8, "batch_size": 16}]),
     "start_from[1]", "outside search.lr's range"),
    ("start_from value not a choice",
     lambda r: r.update(start_from=[{"width": 32, "batch_size": 16}]),
     "start_from[0]", "not one of search.width's values"),
    ("start_from invalid value", lambda r: r.update(start_from=[{"lr": -1.0, "width": 8}]),
     "start_from[0]", "lr: must be > 0"),
    ("start_from field not searched", lambda r: r.update(start_from=[{"depth": 4}]),
     "start_from[0].depth", "not searched by this space"),
    ("start_from condition off", lambda r: r.update(start_from=[{"batchnorm": True, "width": 8}]),
     "start_from[0]", "searched only when width in [16]"),
    ("start_from not a list", lambda r: r.update(start_from="defaults"),
     "start_from", "must be a list"),
    ("field the model ignores", _model_searched,
     "search.width", "model resnet18 ignores it; add `when: {model: [simple]}`"),
    ("field the fixed model ignores", lambda r: r["search"].update(
        small_stem={"type": "choice", "values": [False, True]}),
     "search.small_stem", "model simple ignores it; no model of this space uses it"),
]


@pytest.mark.parametrize(("case", "mutate", "key", "reason"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_space_exits_2_with_one_line(case, mutate, key, reason, tmp_path, capsys) -> None:
    path = write_space(tmp_path / "bad.yaml", _broken(mutate))
    storage = tmp_path / "experiments"
    code = main(["search", "--space", str(path), "--storage", str(storage)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert str(path) in err and key in err and reason in err, err
    assert not storage.exists()  # refused before Ray or any experiment started


def test_a_field_limited_to_the_models_that_use_it_is_accepted() -> None:
    raw = _broken(_model_searched)
    raw["search"]["width"]["when"] = {"model": "simple"}
    raw["search"]["batchnorm"]["when"] = {"model": ["simple"], "width": 16}
    space = parse_space(raw)
    assert dict(next(p for p in space.params if p.name == "width").when) == {"model": ("simple",)}


def test_missing_space_file_exits_2(tmp_path, capsys) -> None:
    assert main(["search", "--space", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_start_points_are_what_define_by_run_would_suggest() -> None:
    raw = copy.deepcopy(MAIN_SPACE)
    raw["search"]["width"]["values"] = [16, 32]  # with the next line: hold the default width, batch
    raw["search"]["batch_size"]["values"] = [32, 64]
    raw["start_from"] = ["defaults", {"width": 16, "batchnorm": True, "dropout": 0.2,
                                      "lr": "3e-3"}]  # YAML 1.1 reads 3e-3 as a string
    space = parse_space(raw)
    defaults, chosen = space.start_points()
    # Default width 32 turns batchnorm's condition (width 16) off; dropout's switch is off.
    d = TrainConfig()
    assert defaults == {"lr": d.lr, "width": d.width, "use_dropout": False,
                        "batch_size": d.batch_size}
    assert chosen == {"lr": 3e-3, "width": 16, "batchnorm": True, "use_dropout": True,
                      "dropout": 0.2, "batch_size": d.batch_size}  # unnamed: the default
    # Enqueued in a study, the define-by-run function suggests exactly these parameters.
    study = optuna.create_study()
    for point in (defaults, chosen):
        study.enqueue_trial(point)
        trial = study.ask()
        DefineByRun(space)(trial)
        assert trial.params == point
        study.tell(trial, 0.0)
    assert parse_space(space.to_dict()).start_points() == [defaults, chosen]  # round trip


def _sample(space: SearchSpace, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        DefineByRun(space)(trial)
        out.append(dict(trial.params))
        study.tell(trial, 0.0)
    return out


def test_define_by_run_conditions() -> None:
    space = parse_space(MAIN_SPACE)
    samples = _sample(space, 40)
    for params in samples:
        # batchnorm is only searched for width 16; dropout only when its switch is on.
        assert ("batchnorm" in params) == (params["width"] == 16)
        assert ("dropout" in params) == params["use_dropout"]
        assert 1e-4 <= params["lr"] <= 3e-2
    assert any(p["use_dropout"] for p in samples) and not all(p["use_dropout"] for p in samples)


def test_trial_config_drops_switches_and_keeps_defaults() -> None:
    space = parse_space(MAIN_SPACE)
    params = {"lr": 1e-3, "width": 8, "use_dropout": False, "batch_size": 16}
    cfg = trial_config({**space.base_config(), **params})
    assert cfg.dropout == 0.0 and cfg.lr == 1e-3 and cfg.epochs == space.max_epochs


def test_tune_cli_imports_without_ray() -> None:
    code = ("import sys, tune.cli, tune.space; "
            "print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2])
    assert out.stdout.strip() == "False"
