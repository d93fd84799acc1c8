"""Interrupt a search (SIGINT, as Ctrl+C) and finish it with `countnet search --resume`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from countnet.cli import main
from tests.tune.conftest import TINY, write_space
from tune.results import load_trials

EPOCHS = 3
SPACE = {
    "target": "generalise",
    "fixed": {**TINY, "train_size": 1024},  # slow enough to be caught mid-trial
    "search": {"lr": {"type": "loguniform", "low": 1.0e-3, "high": 1.0e-2}},
    "scheduler": {"max_epochs": EPOCHS, "grace_period": EPOCHS, "reduction_factor": 2},
    "num_samples": 4,
    "max_concurrent": 1,
}
WAIT_S = 300  # generous upper bound for slow machines; not a timing assertion


def _epochs(exp: Path) -> dict[str, list[int]]:
    out = {}
    for result in exp.glob("trial_*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        out[result.parent.name] = [r["epoch"] for r in rows]
    return out


def _wait(proc: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + WAIT_S
    while not ready():
        assert proc.poll() is None, "search ended before it could be interrupted"
        assert time.monotonic() < deadline, "search made no progress"
        time.sleep(0.05)


def test_resume_finishes_without_rerunning_finished_trials(ray_local, tmp_path) -> None:
    space = write_space(tmp_path / "resume.yaml", SPACE)
    storage = tmp_path / "experiments"
    exp = storage / "r"
    proc = subprocess.Popen(
        [sys.executable, "-m", "countnet", "search", "--space", str(space), "--storage",
         str(storage), "--name", "r"], cwd=Path(__file__).parents[2],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Interrupt once one trial has finished and the next has run at least one epoch.
        _wait(proc, lambda: sum(len(e) == EPOCHS for e in _epochs(exp).values()) >= 1
              and any(0 < len(e) < EPOCHS for e in _epochs(exp).values()))
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    before = _epochs(exp)
    finished = {name for name, e in before.items() if len(e) == EPOCHS}
    snapshot = {name: (exp / name / "result.json").read_text() for name in finished}
    assert len(before) < SPACE["num_samples"] or len(finished) < len(before)

    assert main(["search", "--resume", str(exp)]) == 0

    trials = load_trials(exp, "val_loss", "min")
    assert len(trials) == SPACE["num_samples"]
    assert all(t.status == "TERMINATED" and t.epochs_run == EPOCHS for t in trials)
    for name in finished:  # not rerun: their results are untouched
        assert (exp / name / "result.json").read_text() == snapshot[name]
    after = _epochs(exp)
    for name in before:
        if name not in finished:  # continued from its checkpoint, not restarted
            assert after[name] == list(range(1, EPOCHS + 1))
            last = json.loads((exp / name / "result.json").read_text().splitlines()[-1])
            assert last["iterations_since_restore"] < last["training_iteration"]
