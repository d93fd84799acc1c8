"""`countnet search --set key=value`: the space's fixed fields, checked before Ray starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from countnet.cli import main
from countnet.config import TrainConfig
from countnet.generate import write_dataset
from tests.tune.conftest import MAIN_SPACE, TINY, write_space

ROOT = Path(__file__).parents[2]
NO_RAY_HERE = "127.0.0.1:1"  # nothing listens there: joining it would fail with its own error
SPACE = {
    "target": "generalise",
    "fixed": TINY,
    "search": {"lr": {"type": "loguniform", "low": 1.0e-3, "high": 1.0e-2}},
    "scheduler": {"max_epochs": 1, "grace_period": 1, "reduction_factor": 2},
    "num_samples": 2,
    "max_concurrent": 2,
}
PHOTOS_N = 48  # images of the labelled folder the search trains on


@pytest.mark.parametrize(("items", "says"), [
    (["learning_rate=1e-3"], "--set learning_rate: not a TrainConfig field"),
    (["lr=1e-3"], "--set lr: "),  # searched by MAIN_SPACE
    (["train_size=lots"], "train_size"),  # a value TrainConfig rejects
    (["depth=-1"], "depth"),
    (["data=folder"], "data_dir: required"),  # valid alone, not with the space's data_dir
    (["data_dir=no/such/folder"], "no such directory"),
    (["epochs=3"], "--max-epochs"),
    (["lr"], "expected key=value"),
])
def test_bad_set_exits_2_with_one_line(tmp_path, capsys, items, says) -> None:
    space = write_space(tmp_path / "space.yaml", MAIN_SPACE)
    args = [a for item in items for a in ("--set", item)]
    code = main(["search", "--space", str(space), *args, "--storage", str(tmp_path / "exp")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and says in err, err
    assert not (tmp_path / "exp").exists()  # nothing started, nothing written


def test_a_missing_data_dir_in_the_space_file_exits_2_before_ray(tmp_path, capsys) -> None:
    """search_spaces/folder.yaml ships `data_dir: my_photos`: run without --set data_dir, the
    search must stop on the missing folder, not start trials that all fail on it."""
    space = write_space(tmp_path / "space.yaml", {
        **MAIN_SPACE, "fixed": {**MAIN_SPACE["fixed"], "data": "folder", "data_dir": "my_photos"}})
    code = main(["search", "--space", str(space), "--storage", str(tmp_path / "exp")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "data_dir=my_photos: no such directory" in err, err
    assert not (tmp_path / "exp").exists()


def test_set_is_refused_with_resume(tmp_path, capsys) -> None:
    code = main(["search", "--resume", str(tmp_path), "--set", "width=16"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--set: not with --resume" in err


def test_set_is_checked_before_ray_starts(tmp_path) -> None:
    """With an address where no Ray runs, a check made after joining would fail on the address;
    the --set check names the key first."""
    space = write_space(tmp_path / "space.yaml", MAIN_SPACE)
    run = subprocess.run(
        [sys.executable, "-m", "countnet", "search", "--space", str(space), "--set", "lr=0.01",
         "--address", NO_RAY_HERE, "--storage", str(tmp_path / "exp")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"countnet search: error: --set lr: {space} searches it; a field is fixed or searched, "
        f"so remove search.lr from a copy of the space"]


def test_set_reaches_every_trial(ray_local, tmp_path, capsys, monkeypatch) -> None:
    """A search on a labelled folder named by a relative path, as the README's how-to runs it:
    the trials (which Ray runs in their own directories) train on it, with the --set width."""
    write_dataset(tmp_path / "photos", TrainConfig(), PHOTOS_N, seed=11)
    space = write_space(tmp_path / "space.yaml", SPACE)
    monkeypatch.chdir(tmp_path)
    code = main(["search", "--space", str(space), "--set", "data=folder", "--set",
                 "data_dir=photos", "--set", "width=16", "--storage", str(tmp_path / "exp"),
                 "--name", "mine", "--no-report", "-q"])
    assert code == 0, capsys.readouterr().err
    exp = tmp_path / "exp" / "mine"
    fixed = {"data": "folder", "data_dir": str((tmp_path / "photos").resolve()), "width": 16}
    trials = sorted(exp.glob("trial_*"))
    assert len(trials) == SPACE["num_samples"]
    for trial in trials:
        config = json.loads((trial / "params.json").read_text())
        assert {k: config[k] for k in fixed} == fixed
        rows = [json.loads(line) for line in (trial / "result.json").read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1]  # trained on the folder
    info = json.loads((exp / "countnet_search.json").read_text())
    assert {k: info["space"]["fixed"][k] for k in fixed} == fixed  # what --resume keeps
