"""Shared fixtures of the search tests: one real local Ray (2 CPUs) and one real search.

Several test files assert different things about the same search, so it runs once per session.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import TINY  # the searches' fixed values; their test files import it here

MAIN_SEED = 3
MAIN_SPACE: dict[str, Any] = {
    "target": "generalise",
    "fixed": {k: v for k, v in TINY.items() if k != "width"},
    "search": {
        "lr": {"type": "loguniform", "low": 1.0e-4, "high": 3.0e-2},
        "width": {"type": "choice", "values": [8, 16]},
        "batchnorm": {"type": "choice", "values": [False, True], "when": {"width": 16}},
        "dropout": {"type": "uniform", "low": 0.1, "high": 0.3, "optional": True},
        "batch_size": {"type": "choice", "values": [16, 32]},
    },
    "scheduler": {"max_epochs": 4, "grace_period": 1, "reduction_factor": 2},
    "num_samples": 8,
    "max_concurrent": 2,
    "resources_per_trial": {"cpu": 1, "gpu": 0},
}


def write_space(path: Path, space: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with 2 CPUs for the whole session; searches reuse it."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def main_search(ray_local, tmp_path_factory):
    """8 trials x 4 epochs of tiny data with ASHA (grace 1, factor 2): the search under test."""
    from tune.search import run_search
    from tune.space import load_space

    root = tmp_path_factory.mktemp("main_search")
    space = load_space(write_space(root / "space.yaml", MAIN_SPACE))
    outcome = run_search(space, storage=str(root / "experiments"), name="main", seed=MAIN_SEED,
                         verbose=0)
    return space, outcome
