"""cluster.yaml, checked offline the way `ray up` checks it: Ray's own prepare_config (defaults of
the provider merged in) + validate_config (Ray's JSON schema). Nothing here talks to AWS."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
GPU_SPACES = sorted(p.name for p in (ROOT / "search_spaces").glob("*-gpu.yaml"))
ONPREM_BEGIN, ONPREM_END = "# ON-PREM-EXAMPLE-BEGIN\n", "# ON-PREM-EXAMPLE-END"
# Things that must never be in a committed cluster file.
SECRET_PATTERNS = (
    r"AKIA[0-9A-Z]{16}",  # AWS access key id
    r"aws_secret_access_key|aws_session_token",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    r"RAY_AUTH_TOKEN\s*=",  # the token itself; the token *file* is copied by file_mounts
)


def load() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def onprem_example() -> dict[str, Any]:
    """The commented on-prem example, uncommented as the file tells the user to."""
    block = CLUSTER_YAML.read_text().split(ONPREM_BEGIN)[1].split(ONPREM_END)[0]
    return yaml.safe_load("\n".join(line.removeprefix("# ") for line in block.splitlines()))


def check(config: dict[str, Any]) -> dict[str, Any]:
    """What `ray up` does before it launches anything."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def start_commands(config: dict[str, Any]) -> list[str]:
    cmds = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    return [c for c in cmds if "ray start" in c]


def test_cluster_yaml_passes_rays_validation() -> None:
    prepared = check(load())
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] == "head"


def test_gpu_workers_autoscale_from_zero() -> None:
    prepared = check(load())
    head = prepared["available_node_types"]["head"]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0
    gpu_types = [t for name, t in prepared["available_node_types"].items()
                 if name != "head" and t["resources"].get("GPU") == 1]
    assert gpu_types, "a worker type with one GPU per node"
    assert all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu_types)
    assert prepared["max_workers"] >= max(t["max_workers"] for t in gpu_types)


@pytest.mark.parametrize("mistake", ["top-level", "node type", "node type resources"])
def test_misspelled_key_is_rejected(mistake: str) -> None:
    config = load()
    if mistake == "top-level":
        config["setup_comands"] = config.pop("setup_commands")
        bad = "setup_comands"
    elif mistake == "node type":
        worker = config["available_node_types"]["gpu_worker"]
        worker["max_worker"] = worker.pop("max_workers")
        bad = "max_worker"
    else:
        config["available_node_types"]["gpu_worker"]["resource"] = {"GPU": 1}
        bad = "resource"
    with pytest.raises(jsonschema.ValidationError, match=f"'{bad}' was unexpected"):
        check(config)


def test_onprem_example_passes_rays_validation() -> None:
    prepared = check(onprem_example())
    assert prepared["provider"]["type"] == "local"
    assert prepared["provider"]["head_ip"] and len(prepared["provider"]["worker_ips"]) >= 1


@pytest.mark.parametrize("example", ["aws", "onprem"])
def test_token_auth_on_and_dashboard_private(example: str) -> None:
    config = check(load() if example == "aws" else onprem_example())
    for cmd in start_commands(config):
        assert "RAY_AUTH_MODE=token" in cmd, cmd
    head = " ".join(start_commands({**config, "worker_start_ray_commands": []}))
    # Ray's AWS defaults bind the dashboard (and its job API) to 0.0.0.0; ours must not.
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in yaml.safe_dump(config)
    # Every node gets the user's token file; the token itself is not in the config.
    assert config["file_mounts"] == {"~/.ray/auth_token": "~/.ray/auth_token"}


def test_no_secrets_in_file() -> None:
    text = CLUSTER_YAML.read_text()
    for pattern in SECRET_PATTERNS:
        assert not re.search(pattern, text), pattern


def test_project_installed_at_a_pinned_revision() -> None:
    config = load()
    installs = [c for c in config["setup_commands"] if "git+" in c]
    assert len(installs) == 1
    ref = re.search(r"git\+\S+?\.git@([^\"'\s]+)", installs[0])
    assert ref, "the git URL must name a revision (...git@REV)"
    assert ref.group(1) not in ("main", "master", "HEAD")
    # The release tag of this version (pyproject.toml), and the same in the on-premise example.
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)
    tags = set(re.findall(r"countnet\.git@([^\"'\s]+)", CLUSTER_YAML.read_text()))
    assert tags == {f"v{version.group(1)}"}


def test_cluster_runs_the_local_ray_version() -> None:
    """`ray job submit` and the cluster must speak the same Ray version."""
    docker = load()["docker"]
    for image in (docker["image"], docker["head_image"]):
        assert image.split(":")[1].startswith(f"{ray.__version__}-"), image


def test_head_may_pass_the_worker_role() -> None:
    """A worker type with its own instance profile is launched by the head, whose role then needs
    iam:PassRole on that profile's role; Ray's default head role does not have it, so the file
    and docs/cluster.md must say so (nothing here can ask AWS)."""
    workers = [t for name, t in load()["available_node_types"].items() if name != "head"]
    if any("IamInstanceProfile" in t["node_config"] for t in workers):
        assert "iam:PassRole" in CLUSTER_YAML.read_text()
        assert "iam:PassRole" in (ROOT / "docs" / "cluster.md").read_text()


def test_every_target_has_a_gpu_space() -> None:
    from tune.space import TARGETS, load_space

    assert {load_space(ROOT / "search_spaces" / n).target for n in GPU_SPACES} == set(TARGETS)


@pytest.mark.parametrize("name", GPU_SPACES)
def test_gpu_spaces_fill_the_gpu_workers(name: str) -> None:
    """Each shipped GPU space asks for a real GPU share that one gpu_worker can hold, and its
    max_concurrent is what cluster.yaml's GPU workers hold at once (its comments say so)."""
    from tune.space import load_space

    space = load_space(ROOT / "search_spaces" / name)
    worker = load()["available_node_types"]["gpu_worker"]
    per_node = min(worker["resources"]["CPU"] // space.cpu, worker["resources"]["GPU"] // space.gpu)
    assert space.gpu > 0 and per_node >= 1, (space.cpu, space.gpu)
    assert space.max_concurrent == per_node * worker["max_workers"]
