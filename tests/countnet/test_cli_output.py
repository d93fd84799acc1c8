"""What the commands print: tables within 100 columns, no progress bar frames in pipes, data on
stdout, no paths that are gone after a --smoke-test, `countnet --version`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import countnet
from countnet.cli import train as train_cli

MAX_COLUMNS = 100
# An absolute path in a message, e.g. "run dir: /tmp/x" or "(checkpoint: /tmp/x/best)".
PATH = re.compile(r"(?<![\w.])(/[\w.+\-]+(?:/[\w.+\-]*)+)")


def _countnet(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "countnet", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def test_version() -> None:
    out = _countnet("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"countnet {countnet.__version__}"


def test_train_table_fits_100_columns_and_no_bar_in_a_pipe(tmp_path) -> None:
    run = tmp_path / "run"
    out = _countnet("train", "--smoke-test", "--out", str(run))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = next(line for line in lines if line.split()[:2] == ["epoch", "lr_now"])
    table = lines[lines.index(header):lines.index(header) + 3]  # header + 2 epochs
    assert all(len(line) <= MAX_COLUMNS for line in table), table
    assert [line.split()[0] for line in table[1:]] == ["1", "2"]
    # stderr is a pipe here: no tqdm frames (carriage returns, "batch/s").
    assert "\r" not in out.stderr and "batch" not in out.stderr
    assert f"run dir: {run}" in out.stderr  # a message: stderr
    assert f"tensorboard --logdir {run}" in out.stdout


def test_train_verbose_shows_every_metric(tmp_path) -> None:
    out = _countnet("train", "--smoke-test", "--out", str(tmp_path / "run"), "-v")
    assert out.returncode == 0, out.stderr
    assert any("images_per_s" in line and "baseline_mse" in line
               for line in out.stdout.splitlines())


@pytest.mark.parametrize("command", ["train", "predict", "diagnose"])
def test_smoke_test_names_no_deleted_path(tmp_path, command: str) -> None:
    out = _countnet(command, "--smoke-test", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    paths = PATH.findall(out.stdout + out.stderr)
    assert [p for p in paths if not Path(p).exists()] == []
    if command != "diagnose":
        assert "temporary" in out.stderr


def test_progress_bar_only_on_a_terminal(monkeypatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

        def write(self, s: str) -> int:
            return len(s)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stderr", Tty())
    assert train_cli._progress_bar(True) is not None
    assert train_cli._progress_bar(False) is None
    with open(Path(__file__), encoding="utf-8") as not_a_tty:
        monkeypatch.setattr(sys, "stderr", not_a_tty)
        assert train_cli._progress_bar(True) is None
