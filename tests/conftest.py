"""The one tiny config of the test suite, shared by every test that trains or builds a model.

`TINY` is the `simple` net (8 channels, 3 convolutions) on 256 training and 64 validation scenes:
an epoch takes a fraction of a second on one core. A test adds only what it is about (epochs,
batch size, image size, a regulariser), next to the reason; a search space uses `TINY` as its
`fixed` values (a space's epochs are its scheduler's `max_epochs`, so `TINY` sets none).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from countnet.config import TrainConfig  # imports no torch: the thread setting below still counts
from countnet.runtime import set_omp_env

# The test processes (and the Ray workers they start, which inherit the environment) run as the
# `countnet` command does: OpenMP threads sleep while they wait (countnet.runtime), before torch.
set_omp_env()

# `make test` runs two pytest-xdist workers, one per core of a 2-core machine (`-n 2 --dist
# loadfile`: a file's tests, and so its module fixtures, stay on one worker). Each test's torch
# gets one thread (set before torch is imported; subprocesses inherit it): the tiny models here
# gain about 5 % from a second thread, and two workers of two threads would fight for the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY: dict[str, Any] = {"model": "simple", "width": 8, "depth": 3, "train_size": 256,
                        "val_size": 64}


def tiny_values(*layers: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """`TINY`, then each of `layers`, then `overrides`, each on top of the one before."""
    out = dict(TINY)
    for layer in (*layers, overrides):
        out.update(layer)
    return out


def tiny_config(*layers: dict[str, Any], **overrides: Any) -> TrainConfig:
    """`tiny_values` as a TrainConfig: `tiny_config(RUN, epochs=1)`."""
    return TrainConfig.from_dict(tiny_values(*layers, **overrides))


def tiny_flags(*layers: dict[str, Any], **overrides: Any) -> list[str]:
    """`tiny_values` as a command's `--set key=value` flags."""
    return [arg for k, v in tiny_values(*layers, **overrides).items()
            for arg in ("--set", f"{k}={v}")]


@pytest.fixture(scope="session")
def tiny() -> Callable[..., TrainConfig]:
    """`tiny(RUN, epochs=3)`: `TINY` with a test's own values on top, as a TrainConfig."""
    return tiny_config
