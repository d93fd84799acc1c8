"""export -> predict on PNGs from `countnet generate`; the bundle holds the best epoch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from countnet.checkpoint import load_checkpoint
from countnet.cli import main
from tune.results import rank


@pytest.fixture(scope="module")
def bundle(main_search, tmp_path_factory) -> Path:
    _, outcome = main_search
    out = tmp_path_factory.mktemp("export") / "bundle"
    assert main(["export", outcome.exp_dir, "--out", str(out)]) == 0
    return out


def test_bundle_is_the_best_epoch_of_the_best_trial(main_search, bundle) -> None:
    _, outcome = main_search
    metrics = json.loads((bundle / "metrics.json").read_text())
    best = rank(outcome.trials, "val_loss", "min")[0]
    best_epoch = min(best.history, key=lambda r: r["val_loss"])["epoch"]
    assert metrics["trial_id"] == best.trial_id
    assert metrics["epoch"] == best_epoch
    assert metrics["metrics"]["val_loss"] == min(
        r["val_loss"] for t in outcome.trials for r in t.history)
    assert metrics["target"] == "generalise" and metrics["experiment"] == outcome.exp_dir
    # The printed losses up to that epoch travel along, for `countnet diagnose BUNDLE`.
    assert [r["epoch"] for r in metrics["history"]] == list(range(1, best_epoch + 1))
    # The weights are that epoch's checkpoint, not the trial's last one.
    ckpt = load_checkpoint(best.checkpoints[best_epoch].path)
    assert ckpt["epoch"] == best_epoch
    weights = torch.load(bundle / "model.pt", weights_only=True)
    assert weights.keys() == ckpt["model"].keys()
    assert all(torch.equal(weights[k], ckpt["model"][k]) for k in weights)
    config = json.loads((bundle / "config.json").read_text())
    assert config["train_config"]["lr"] == best.params["lr"]


def test_predict_on_generated_pngs_without_ray(bundle, tmp_path) -> None:
    images = tmp_path / "images"
    assert main(["generate", "--out", str(images), "--n", "5", "--seed", "11"]) == 0
    code = ("import sys; from countnet.cli import main; rc = main(sys.argv[1:]); "
            "assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules); "
            "sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, "predict", str(bundle), str(images)],
                         capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "filename,count,raw"
    rows = [line.split(",") for line in lines[1:]]
    assert len(rows) == 5
    assert all(Path(name).suffix == ".png" and int(count) >= 0 for name, count, _ in rows)


def test_export_rejects_unknown_metric(main_search, tmp_path, capsys) -> None:
    _, outcome = main_search
    code = main(["export", outcome.exp_dir, "--out", str(tmp_path / "b"), "--metric", "vall"])
    assert code == 2
    assert "--metric" in capsys.readouterr().err


def test_confirm_seeds_writes_mean_and_std(main_search, tmp_path) -> None:
    _, outcome = main_search
    out = tmp_path / "confirmed"
    assert main(["export", outcome.exp_dir, "--out", str(out), "--confirm-seeds", "2"]) == 0
    confirm = json.loads((out / "metrics.json").read_text())["confirm_seeds"]
    assert len(confirm["seeds"]) == 2
    for key in ("val_loss", "val_acc"):
        values = confirm[key]["values"]
        assert len(values) == 2
        assert confirm[key]["mean"] == pytest.approx(sum(values) / 2)
        assert confirm[key]["std"] >= 0
