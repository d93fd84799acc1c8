"""Requests no node can satisfy (alive, or launchable by the autoscaler) fail fast (exit 2)
instead of staying PENDING forever."""

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



def bootstrap(gpu_max_workers: int) -> dict:
    """~/ray_bootstrap_config.yaml as the cluster launcher writes it (cluster.yaml's types)."""
    return {"cluster_name": "countnet", "available_node_types": {
        "head": {"resources": {"CPU": 0}, "min_workers": 0, "max_workers": 0},
        "gpu_worker": {"resources": {"CPU": 4, "GPU": 1}, "min_workers": 0,
                       "max_workers": gpu_max_workers}}}


def test_node_types_the_autoscaler_can_launch_count(ray_local, tmp_path, monkeypatch) -> None:
    from tune.cluster import ResourceError, check_resources

    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ResourceError, match="has no GPU"):  # not a launcher cluster
        check_resources(1, 1)
    write_space(tmp_path / "ray_bootstrap_config.yaml", bootstrap(gpu_max_workers=2))
    check_resources(4, 1)  # no GPU node is alive, but a gpu_worker can be launched
    check_resources(1, 0.5)
    with pytest.raises(ResourceError, match="no node has that much"):
        check_resources(8, 1)
    write_space(tmp_path / "ray_bootstrap_config.yaml", bootstrap(gpu_max_workers=0))
    with pytest.raises(ResourceError, match="has no GPU"):
        check_resources(1, 1)
