"""Requests no node can satisfy fail fast (exit 2) instead of staying PENDING forever."""

from __future__ import annotations

import pytest

from countnet.cli import main
from tests.tune.conftest import MAIN_SPACE, write_space


@pytest.mark.parametrize(("resources", "reason"), [
    ({"cpu": 64, "gpu": 0}, "no node has that much"),
    ({"cpu": 1, "gpu": 1}, "has no GPU"),
    ({"cpu": 1, "gpu": 0.25}, "has no GPU"),
])
def test_unsatisfiable_resources_exit_2(ray_local, tmp_path, capsys, resources, reason) -> None:
    space = write_space(tmp_path / "big.yaml", {**MAIN_SPACE, "resources_per_trial": resources})
    code = main(["search", "--space", str(space), "--storage", str(tmp_path / "exp")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "resources_per_trial" in err and reason in err, err
