"""Trial resources: requests no node can satisfy (alive, or launchable by the autoscaler) fail
fast (exit 2) instead of staying PENDING forever; `--resources` gives each trial a GPU share on a
real Ray that has GPUs, and countnet still trains on the CPU when torch sees no CUDA."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from ray.tune import ExperimentAnalysis

from countnet.cli import main
from countnet.experiment import SEARCH_INFO_FILE
from tests.tune.conftest import MAIN_SPACE, TINY, write_space


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


# --- `--resources gpu=...` on a local Ray with fake GPUs -----------------------------------------

GPU_SPACE: dict = {
    "target": "generalise",
    "fixed": TINY,
    "search": {"lr": {"type": "loguniform", "low": 1.0e-3, "high": 1.0e-2}},
    "scheduler": {"max_epochs": 2, "grace_period": 2, "reduction_factor": 2},
    "num_samples": 2,
    "max_concurrent": 1,  # --max-concurrent 2 raises it
    "resources_per_trial": {"cpu": 1, "gpu": 0},  # --resources gpu=0.5 adds the GPU share
}
SEARCH_TIMEOUT_S = 300  # a hang guard, not a timing: the search takes seconds
# A driver process of its own: Ray with 2 GPUs it only counts (`num_gpus=2` needs no GPU), which
# the session's 2-CPU Ray (ray_local) cannot become. Two pieces of instrumentation, both passing
# through to the real thing: Ray's own `_get_max_pending_trials` is wrapped to keep its answer
# (the pending-trial limit it gives the search's searcher), and countnet's trainable is wrapped
# to record, inside each trial, the GPUs Ray gave it and the device countnet trains on. The
# wrapper is defined in __main__, so Ray pickles it by value to its workers.
GPU_DRIVER = """
import json, os, sys
from pathlib import Path

import ray
from ray import tune as ray_tune
from ray.tune.execution import tune_controller

import tune.search
from tune.trainable import train_countnet as real_train

OUT = Path(sys.argv[1])
ray_pending = tune_controller._get_max_pending_trials


def max_pending_trials(search_alg):
    limit = ray_pending(search_alg)
    (OUT / "max_pending_trials.json").write_text(json.dumps(limit))
    return limit


def train_countnet(config):
    import torch

    from countnet.config import TrainConfig
    from countnet.train import pick_device

    seen = {"gpu_ids": [str(i) for i in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cuda_available": torch.cuda.is_available(),
            "device": str(pick_device(TrainConfig()))}
    trial = ray_tune.get_context().get_trial_id()
    (OUT / f"trial_{trial}.json").write_text(json.dumps(seen))
    real_train(config)


tune_controller._get_max_pending_trials = max_pending_trials
tune.search.train_countnet = train_countnet
ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False,
         logging_level="WARNING")
from countnet.cli import main

sys.exit(main(sys.argv[2:]))
"""


def test_resources_flag_gives_each_trial_a_gpu_share(tmp_path) -> None:
    """`countnet search --resources gpu=0.5 --max-concurrent 2` on a real local Ray with 2 fake
    GPUs: every trial holds 1 CPU (the space's) + 0.5 GPU, Ray sets CUDA_VISIBLE_DEVICES in it,
    and countnet still trains on the CPU (torch sees no CUDA). Ray keeps as many trials pending
    as run at once (its limit for a custom searcher is 1 unless a ConcurrencyLimiter wraps it)."""
    space = write_space(tmp_path / "space.yaml", GPU_SPACE)
    seen = tmp_path / "seen"
    seen.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "TUNE_MAX_PENDING_TRIALS_PG")}
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", GPU_DRIVER, str(seen), "search", "--space", str(space),
         "--storage", str(tmp_path / "exp"), "--name", "gpu", "--resources", "gpu=0.5",
         "--max-concurrent", "2", "--no-report"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SEARCH_TIMEOUT_S)
    wall_s = time.monotonic() - started
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 at a time (1 CPU + 0.5 GPU each)" in out.stderr  # the header line says so

    exp = tmp_path / "exp" / "gpu"
    record = json.loads((exp / SEARCH_INFO_FILE).read_text())["space"]
    assert record["resources_per_trial"] == {"cpu": 1.0, "gpu": 0.5}  # what --resume reuses
    assert record["max_concurrent"] == 2
    # Ray's pending-trial limit for this search: max_concurrent, not Ray's 1 for a searcher
    # that no ConcurrencyLimiter wraps (tune.search passes max_concurrent_trials).
    assert json.loads((seen / "max_pending_trials.json").read_text()) == 2

    trials = ExperimentAnalysis(str(exp)).trials  # Ray's record of each trial
    assert len(trials) == 2
    for trial in trials:
        assert trial.status == "TERMINATED"
        assert trial.placement_group_factory.required_resources == {"CPU": 1.0, "GPU": 0.5}
        rows = [json.loads(line) for line in (exp / f"trial_{trial.trial_id}" / "result.json")
                .read_text().splitlines()]
        assert [r["epoch"] for r in rows] == [1, 2]  # it trained, on the CPU (below)
        inside = json.loads((seen / f"trial_{trial.trial_id}.json").read_text())
        assert len(inside["gpu_ids"]) == 1 and inside["gpu_ids"][0] in ("0", "1"), inside
        assert inside["cuda_visible_devices"] == inside["gpu_ids"][0], inside
        assert inside["cuda_available"] is False and inside["device"] == "cpu", inside
    print(f"\nFIGURES fake-gpu search: wall_s={wall_s:.1f}")  # pytest -s; never asserted
