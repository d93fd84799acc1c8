"""The `countnet` console script, run as a user would: real processes, real PNG files."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

COUNTNET = shutil.which("countnet") or str(Path(sys.executable).parent / "countnet")
CORE_COMMANDS = ("generate", "train", "predict", "diagnose", "overfit-check")


def countnet(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([COUNTNET, *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_help_lists_every_command() -> None:
    out = countnet("--help")
    assert out.returncode == 0
    for name in (*CORE_COMMANDS, "search", "export"):
        assert name in out.stdout


@pytest.mark.parametrize("command", CORE_COMMANDS)
def test_every_core_command_has_help(command) -> None:
    out = countnet(command, "--help")
    assert out.returncode == 0 and "--smoke-test" in out.stdout


def test_generate_train_predict_round_trip(tmp_path) -> None:
    images = tmp_path / "images"
    gen = countnet("generate", "--out", str(images), "--n", "6", "--seed", "4")
    assert gen.returncode == 0, gen.stderr
    labels = (images / "labels.csv").read_text().splitlines()
    assert labels[0] == "filename,count" and len(labels) == 7
    run = tmp_path / "run"
    train = countnet("train", "--smoke-test", "--out", str(run), "--no-progress",
                     "--set", "epochs=3")
    assert train.returncode == 0, train.stderr
    assert "best epoch" in train.stdout and f"tensorboard --logdir {run}" in train.stdout
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    pred = countnet("predict", str(run), str(images))
    assert pred.returncode == 0, pred.stderr
    rows = pred.stdout.strip().splitlines()
    assert rows[0] == "filename,count,raw" and len(rows) == 7
    for row, label in zip(rows[1:], labels[1:]):
        path, count, raw = row.split(",")
        assert Path(path).name == label.split(",")[0]
        assert int(count) == max(0, round(float(raw)))


def test_train_killed_mid_run_resumes_from_its_last_checkpoint(tmp_path) -> None:
    run = tmp_path / "run"
    metrics = run / "metrics.jsonl"
    args = ["train", "--out", str(run), "--no-progress", "--set", "train_size=3000",
            "--set", "val_size=64", "--set", "width=8", "--set", "depth=3", "--set", "epochs=3"]
    proc = subprocess.Popen([COUNTNET, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and metrics.read_text().count("\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before the kill"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # a crash: no cleanup runs
    proc.wait()
    done = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert done in ([1], [1, 2])
    again = countnet("train", "--resume", str(run), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2, 3]


@pytest.mark.parametrize("command", ["generate", "train", "predict"])
def test_smoke_tests_run(command) -> None:
    out = countnet(command, "--smoke-test")
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("args,message", [
    (["train", "--set", "learning_rate=1"], "unknown config key(s): learning_rate"),
    (["train", "--set", "epochs=many"], "epochs: expected int"),
    (["train", "--config", "/nonexistent.yaml"], "/nonexistent.yaml: cannot read"),
    (["generate", "--out", "x", "--max-count", "40"], "raise image_size"),
    (["predict", "/nonexistent-bundle", "a.png"], "/nonexistent-bundle"),
])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path) -> None:
    out = countnet(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_bad_labels_row_exits_2_naming_file_and_row(tmp_path) -> None:
    data = tmp_path / "data"
    assert countnet("generate", "--out", str(data), "--n", "10").returncode == 0
    with (data / "labels.csv").open("a") as f:
        f.write("scene_000003.png,three\n")
    out = countnet("train", "--set", "data=folder", "--set", f"data_dir={data}", "--smoke-test")
    assert out.returncode == 2
    assert "labels.csv:12: count 'three' is not a number" in out.stderr
