"""The bench scripts that run Ray Tune, end to end at a tiny size (see test_bench_smoke.py).

Real Ray, real Tune trials, real Optuna studies; the scripts run in this process on one shared
local Ray, so Ray starts once for the file.
"""

from __future__ import annotations

import pytest

from countnet.config import TrainConfig
from countnet.experiment import load_experiment
from countnet.folder import read_labels_csv
from countnet.suite import SUITE_SETS
from tests.bench.scripts import run_tiny


@pytest.fixture(scope="module")
def local_ray():
    """One real local Ray for the Ray scripts (reused if the session already started one)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    if started:
        ray.shutdown()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["overhead", "trial_startup", "search_efficiency"])
def test_ray_script_tiny(name, local_ray, tmp_path) -> None:
    run_tiny(name, tmp_path)


@pytest.mark.slow
def test_search_vs_default_tiny(local_ray, tmp_path) -> None:
    work = tmp_path / "work"
    result = run_tiny("search_vs_default", tmp_path, "--keep", str(work))
    assert result["seeds"] == [0, 1]  # one search per sampler seed, each its own experiment
    sets = {"split", *SUITE_SETS}
    assert set(result["default"]["sets"]) == sets
    defaults = TrainConfig()
    for seed, fig in result["searches"].items():
        assert set(fig["winner"]["sets"]) == sets and fig["winner"]["sets"]["pil"]["n"] == 32
        # generalise.yaml starts from the defaults: the trial found as the starting one is it.
        exp = load_experiment(work / "exp" / f"seed{seed}")
        start = next(t for t in exp.trials if t.trial_id == fig["start_trial"])
        assert all(start.config[k] == getattr(defaults, k)
                   for k in ("lr", "width", "depth", "batch_size", "ema_epochs"))
        assert fig["n_sampled"] == fig["n_trials"] - 1 == 2
        assert fig["winner_is_start"] == (fig["winner_trial"] == fig["start_trial"])


@pytest.mark.slow
def test_search_adapts_tiny(local_ray, tmp_path) -> None:
    work = tmp_path / "work"
    result = run_tiny("search_adapts", tmp_path, "--keep", str(work))
    run = result["runs"]["0"]
    assert run["default"]["n"] == run["winner"]["n"] == 24  # the whole held-out folder
    assert run["reduction"] == pytest.approx(1 - run["winner"]["mae"] / run["default"]["mae"])
    # The search trained on the folder (`--set data=folder`), its start trial included.
    exp = load_experiment(work / "exp" / "seed0")
    assert all(t.config["data"] == "folder" for t in exp.trials) and run["start_trial"]
    assert [len(read_labels_csv(work / "shapes" / s / "labels.csv")) for s in ("train", "val")
            ] == [48, 16]


@pytest.mark.slow
def test_scale_tiny(local_ray, tmp_path) -> None:
    """Both shapes at a tiny size: countnet's search stack with replayed trials, then its
    report, export and TensorBoard load; every figure the issue asks for is there."""
    result = run_tiny("scale", tmp_path)
    assert set(result["shapes"]) == {"a", "b"}
    for fig in result["shapes"].values():
        shape = fig["shape"]
        assert fig["finished"] and fig["trials"] == shape["trials"]
        assert fig["minimum_s"] > 0 and fig["wall_s"] >= fig["minimum_s"]
        assert 0 < fig["mean_running"] <= shape["concurrent"]
        assert fig["suggestions"] == shape["trials"] and "10" in fig["suggest_ms_at"]
        assert fig["progress_lines"] >= shape["trials"]  # a start and an end line per trial
        assert fig["report_has_top_trials"] and "history.png" in fig["report_files"]
        assert fig["exported_epoch"] >= 1  # `countnet export` loaded a replayed checkpoint
        assert fig["tensorboard"]["runs"] == shape["trials"] and fig["tensorboard"]["tags"] > 0
        assert fig["driver_peak_rss_mb"] > 0 and fig["experiment_mb"] > 0
