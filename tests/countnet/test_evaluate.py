"""`countnet evaluate` on real PNG folders with a real (tiny) trained model; no mocks."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from countnet.bundle import load_model, write_bundle
from countnet.cli import main
from countnet.evaluate import WORST_N, score
from countnet.pil_render import PilScene, write_pil_set
from countnet.report import PNG_ERRORS, write_report
from countnet.rundir import SUITE_FILE, RunLogger
from countnet.suite import SUITE_SETS
from countnet.train import fit
from tests.countnet.test_report import _assert_png

FOLDER_N = 60  # images in the labelled test folder


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny) -> Path:
    """A tiny model trained 1 epoch, exported as a bundle."""
    # precision "auto": `countnet predict` and `countnet evaluate` share the fast path (bf16
    # where the CPU has it), so they must compute the very same numbers on any CPU.
    cfg = tiny(epochs=1, batch_size=32)
    root = tmp_path_factory.mktemp("model")
    with RunLogger(root / "run", cfg) as logger:
        fit(cfg, logger)
    model, cfg = load_model(root / "run")
    return write_bundle(root / "bundle", model.state_dict(), cfg, {"note": "test"})


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A labelled folder of PNG files, like a user's photos."""
    out = tmp_path_factory.mktemp("images")
    write_pil_set(out, PilScene(max_count=12, noise_max=0.05), FOLDER_N, seed=4)
    return out


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_figures_equal_those_computed_from_predict_output(capsys, bundle, folder) -> None:
    code, out, _ = run_cli(capsys, "predict", str(bundle), str(folder))
    assert code == 0
    predicted = {Path(r["filename"]).name: (int(r["count"]), float(r["raw"]))
                 for r in csv.DictReader(out.splitlines())}
    with (folder / "labels.csv").open(newline="") as f:
        truth = {r["filename"]: float(r["count"]) for r in csv.DictReader(f)}
    assert predicted.keys() == truth.keys() and len(truth) == FOLDER_N
    names = sorted(truth)
    y = np.array([truth[n] for n in names])
    count = np.array([predicted[n][0] for n in names])
    raw = np.array([predicted[n][1] for n in names])  # printed with 4 decimals

    code, out, err = run_cli(capsys, "evaluate", str(bundle), str(folder), "--json")
    assert code == 0 and err == ""
    fig = json.loads(out)
    tol = 1e-4  # predict prints raw counts to 4 decimals
    assert fig["n"] == FOLDER_N and fig["non_finite"] == 0
    assert fig["acc"] == pytest.approx(np.mean(count == y), abs=1e-12)
    assert fig["off_by_one"] == pytest.approx(np.mean(np.abs(count - y) <= 1), abs=1e-12)
    assert fig["mae"] == pytest.approx(np.mean(np.abs(raw - y)), abs=tol)
    assert fig["rmse"] == pytest.approx(np.sqrt(np.mean((raw - y) ** 2)), abs=tol)
    assert fig["bias"] == pytest.approx(np.mean(raw - y), abs=tol)
    assert [r["count"] for r in fig["by_count"]] == sorted(set(y.astype(int)))
    for row in fig["by_count"]:
        sel = y == row["count"]
        assert row["n"] == sel.sum()
        assert row["acc"] == pytest.approx(np.mean(count[sel] == y[sel]), abs=1e-12)
        assert row["mae"] == pytest.approx(np.mean(np.abs(raw[sel] - y[sel])), abs=tol)
        assert row["bias"] == pytest.approx(np.mean(raw[sel] - y[sel]), abs=tol)
    errors = sorted(np.abs(raw - y), reverse=True)[:WORST_N]
    assert len(fig["worst"]) == WORST_N
    for row, e in zip(fig["worst"], errors):
        assert row["pred"] == pytest.approx(predicted[row["name"]][1], abs=tol)
        assert row["true"] == truth[row["name"]]
        assert abs(row["pred"] - row["true"]) == pytest.approx(e, abs=2 * tol)

    code, text, _ = run_cli(capsys, "evaluate", str(bundle), str(folder))
    assert code == 0
    assert f"acc         {fig['acc']:.4f}" in text and f"mae         {fig['mae']:.4f}" in text
    assert "by true count:" in text and f"{WORST_N} worst:" in text
    assert fig["worst"][0]["name"] in text


def _break(folder: Path, how: str) -> None:
    labels = folder / "labels.csv"
    if how == "no labels.csv":
        labels.unlink()
    elif how == "bad row":
        labels.write_text("filename,count\nimage_000000.png,three\n")
    elif how == "missing image":
        labels.write_text("filename,count\nimage_000000.png,1\nnot_there.png,2\n")
    elif how == "not an image":
        (folder / "image_000001.png").write_text("not a png")


@pytest.mark.parametrize("how", ["no labels.csv", "bad row", "missing image", "not an image"])
def test_a_bad_folder_is_one_line_and_exit_2(capsys, bundle, tmp_path, how) -> None:
    write_pil_set(tmp_path, PilScene(), 3, seed=0)
    _break(tmp_path, how)
    code, out, err = run_cli(capsys, "evaluate", str(bundle), str(tmp_path))
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("countnet evaluate: error: ")


def test_a_bad_folder_from_the_shell_has_no_traceback(bundle, tmp_path) -> None:
    code = "import sys; from countnet.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", code, "evaluate", str(bundle), str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        f"countnet evaluate: error: {tmp_path / 'labels.csv'}: missing "
        f"(expected filename,count rows)"]


def test_suite_writes_every_set_and_prints_one_row_per_set(capsys, bundle, tmp_path) -> None:
    keep = tmp_path / "suite"
    code, out, err = run_cli(capsys, "evaluate", str(bundle), "--suite", "--n", "8",
                             "--keep", str(keep))
    assert code == 0
    for name in SUITE_SETS:
        assert len(list((keep / name).glob("*.png"))) == 8
        assert len((keep / name / "labels.csv").read_text().splitlines()) == 9
    lines = out.splitlines()
    assert lines[0].split() == ["set", "n", "acc", "off_by_one", "mae", "bias"]
    assert [line.split()[0] for line in lines[1:-1]] == list(SUITE_SETS)
    assert all(line.split()[1] == "8" for line in lines[1:-1])
    assert lines[-1].startswith("hardest set: ") and lines[-1].split()[2] in SUITE_SETS
    assert "writing pil" in err  # progress goes to stderr, not into the table
    assert max(map(len, lines)) <= 100

    code, out, _ = run_cli(capsys, "evaluate", str(bundle), "--suite", "--n", "4", "--json")
    assert code == 0
    fig = json.loads(out)
    assert list(fig["sets"]) == list(SUITE_SETS) and fig["hardest"] in SUITE_SETS
    assert all(s["n"] == 4 for s in fig["sets"].values())


def test_non_finite_predictions_count_as_wrong(capsys, bundle, folder, tmp_path) -> None:
    figures = score([1.0, math.nan, math.inf, 2.6], [1, 1, 2, 3])
    assert figures["non_finite"] == 2 and figures["acc"] == 0.5  # 1.0 and 2.6 are right
    assert figures["mae"] == pytest.approx(0.2)  # over the finite ones: |0| and |-0.4|
    assert [w["name"] for w in figures["worst"][:2]] == ["1", "2"]  # non-finite rank worst
    # A real model whose output is NaN: the command still reports, and says why.
    model, cfg = load_model(bundle)
    state = {k: torch.full_like(v, math.nan) for k, v in model.state_dict().items()}
    broken = write_bundle(tmp_path / "nan", state, cfg, {})
    code, out, err = run_cli(capsys, "evaluate", str(broken), str(folder), "--json")
    assert code == 0 and json.loads(out)["acc"] == 0 and json.loads(out)["mae"] is None
    assert f"{FOLDER_N} of {FOLDER_N} predictions are not finite" in err


def test_train_records_the_suite_of_its_best_checkpoint(capsys, tmp_path) -> None:
    run = tmp_path / "run"
    code, out, _ = run_cli(capsys, "train", "--smoke-test", "--out", str(run), "--no-progress",
                           "--set", "epochs=1")
    assert code == 0
    record = json.loads((run / SUITE_FILE).read_text())
    assert list(record["sets"]) == list(SUITE_SETS)
    assert record["n_per_set"] == 64  # the smoke run's val_size: no more than it validated on
    assert record["min_acc"] == min(s["acc"] for s in record["sets"].values())
    assert record["hardest"] in SUITE_SETS
    # The test split keeps its per-count figures; they add up to the set's own.
    test = record["sets"]["test"]
    assert [name for name, s in record["sets"].items() if "by_count" in s] == ["test"]
    assert sum(r["n"] for r in test["by_count"]) == test["n"]
    assert sum(r["n"] * r["mae"] for r in test["by_count"]) / test["n"] == \
        pytest.approx(test["mae"])
    assert sum(r["n"] * r["acc"] for r in test["by_count"]) / test["n"] == \
        pytest.approx(test["acc"])
    md = write_report(run)  # the run's report draws its error by true count from suite.json
    _assert_png(md.parent / PNG_ERRORS)
    assert "no error-by-count plot" not in md.read_text()
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("shift suite"))
    table = lines[start + 1:start + 2 + len(SUITE_SETS) + 1]
    assert [line.split()[0] for line in table[1:-1]] == list(SUITE_SETS)
    assert table[-1] == f"hardest set: {record['hardest']} (acc " \
        f"{record['sets'][record['hardest']]['acc']:.3f}, " \
        f"mae {record['sets'][record['hardest']]['mae']:.3f})"
    assert max(map(len, lines[start:])) <= 100
