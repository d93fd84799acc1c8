"""export -> predict on PNGs from `countnet generate`; the bundle holds the best epoch."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from countnet.checkpoint import load_checkpoint
from countnet.cli import main
from countnet.experiment import SEARCH_INFO_FILE, rank
from tune.export import export_best, unkept_best_note


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
    for name, count, raw in rows:  # the count is the raw output rounded, and never below 0
        assert Path(name).suffix == ".png"
        assert abs(int(count) - max(0.0, float(raw))) <= 0.5 + 1e-4  # raw printed to 4 places


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
        a, b = confirm[key]["values"]
        assert confirm[key]["mean"] == pytest.approx((a + b) / 2)
        # The sample standard deviation (n - 1 = 1): sqrt((a - m)^2 + (b - m)^2) = |a - b| / sqrt 2.
        assert confirm[key]["std"] == pytest.approx(abs(a - b) / math.sqrt(2))
    assert confirm["val_loss"]["values"][0] != confirm["val_loss"]["values"][1]  # other seeds


def test_export_best_returns_its_report_and_the_command_prints_it(main_search, tmp_path,
                                                                  capsys) -> None:
    """A library function returns what to say; only `countnet export` prints it."""
    _, outcome = main_search
    exported = export_best(outcome.exp_dir, tmp_path / "b")
    assert capsys.readouterr().out == ""
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert exported.metrics["trial_id"] == metrics["trial_id"]
    assert exported.metrics["epoch"] == metrics["epoch"]
    row = metrics["metrics"]
    assert exported.lines[0] == (f"exported trial {metrics['trial_id']} epoch {metrics['epoch']} "
                                 f"(val_loss={row['val_loss']:.4g}, val_acc="
                                 f"{row['val_acc']:.3f}) to {tmp_path / 'b'}")
    assert main(["export", outcome.exp_dir, "--out", str(tmp_path / "c")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == [line.replace(str(tmp_path / "b"), str(tmp_path / "c"))
                       for line in exported.lines]


def test_the_note_names_a_best_epoch_whose_checkpoint_was_not_kept() -> None:
    trials = [SimpleNamespace(best={"val_acc": 0.9}, diverged=False),
              SimpleNamespace(best={"val_acc": 0.99}, diverged=True),  # never a candidate
              SimpleNamespace(best=None, diverged=False)]
    assert unkept_best_note(trials, {"val_acc": 0.9}, "val_acc", "max") is None
    note = unkept_best_note(trials, {"val_acc": 0.8}, "val_acc", "max")
    assert note == ("note: the best val_acc (0.9) was at an epoch whose checkpoint was not kept; "
                    "exporting the best kept one (0.8)")


# --- never clobber, never mix; bad experiment records -----------------------------------------
def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_export_into_a_used_dir_is_refused_and_force_replaces_it(main_search, bundle, tmp_path,
                                                                capsys) -> None:
    _, outcome = main_search
    out = tmp_path / "bundle"
    shutil.copytree(bundle, out)
    (out / "stale.txt").write_text("from an older export\n")
    before = _files(out)
    assert main(["export", outcome.exp_dir, "--out", str(out)]) == 2
    assert f"--out {out}: not empty" in _one_error_line(capsys)
    assert _files(out) == before
    assert main(["export", outcome.exp_dir, "--out", str(out), "--force",
                 "--metric", "val_acc", "--mode", "max"]) == 0
    # Replaced whole: the older export's extra file is gone, the metrics are the new ranking.
    assert sorted(_files(out)) == ["config.json", "metrics.json", "model.pt"]
    assert json.loads((out / "metrics.json").read_text())["metric"] == "val_acc"
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no staging dir left


def test_an_export_killed_in_the_middle_leaves_the_old_bundle(main_search, bundle, tmp_path,
                                                             monkeypatch) -> None:
    _, outcome = main_search
    out = tmp_path / "bundle"
    shutil.copytree(bundle, out)
    before = _files(out)
    real_write_text = Path.write_text

    def die_on_metrics(self: Path, *args, **kwargs):
        if self.name == "metrics.json":  # model.pt and config.json are already written
            raise KeyboardInterrupt  # as a kill would: no cleanup code of the export runs
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", die_on_metrics)
    with pytest.raises(KeyboardInterrupt):
        export_best(outcome.exp_dir, out, metric="val_acc", mode="max", force=True)
    monkeypatch.undo()
    assert _files(out) == before  # the old bundle, not new weights beside an old config
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_export_to_a_file_is_refused(main_search, tmp_path, capsys) -> None:
    _, outcome = main_search
    (tmp_path / "afile").write_text("x")
    assert main(["export", outcome.exp_dir, "--out", str(tmp_path / "afile")]) == 2
    assert "is a file, not a directory" in _one_error_line(capsys)


@pytest.mark.parametrize("text,message", [
    ('{"target": "generalise", "metric": "val_lo', "not valid JSON (line 1"),
    ("[1, 2]", "must hold a JSON object, got list"),
    ('{"metric": "val_loss", "mode": "up", "space": {}}', "mode: must be min or max"),
    ('{"metric": "vall", "mode": "min", "space": {}}', "metric: must be one of"),
    ('{"metric": "val_loss", "mode": "min"}', "space: must be the search space"),
])
def test_a_corrupt_search_record_is_one_line(tmp_path, capsys, text, message) -> None:
    """No search needed: the record is read before Ray is started or asked anything."""
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / SEARCH_INFO_FILE).write_text(text)
    assert main(["export", str(exp), "--out", str(tmp_path / "b")]) == 2
    err = _one_error_line(capsys)
    assert f"{SEARCH_INFO_FILE}: {message}" in err
    assert main(["search", "--resume", str(exp)]) == 2
    assert message in _one_error_line(capsys)
    assert not (tmp_path / "b").exists()


def test_search_refuses_a_used_export_dir_before_it_starts(tmp_path, capsys) -> None:
    used = tmp_path / "bundle"
    used.mkdir()
    (used / "model.pt").write_bytes(b"")
    start = time.monotonic()
    assert main(["search", "--smoke-test", "--export", str(used)]) == 2
    assert f"--export {used}: not empty" in _one_error_line(capsys)
    assert time.monotonic() - start < 10  # refused up front, not after the search


def test_help_says_an_experiment_is_trusted_input() -> None:
    from countnet.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    export_help = " ".join(sub.choices["export"].format_help().split())
    search_help = " ".join(sub.choices["search"].format_help().split())
    assert "EXPERIMENT_DIR is trusted input: Ray unpickles" in export_help
    assert "bundle is safe to share: tensors and JSON only" in export_help
    assert "Trusted input only: Ray unpickles the experiment state" in search_help
