"""Quiet live progress of `countnet search`, and `--resume` with a new `--num-samples`.

The status lines come from `tune.progress.SearchProgress` (a Ray Tune Callback); Ray's own
output is off unless -v. The CLI tests run `countnet search` as a user would, in a subprocess.
"""

from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from countnet.cli import main as cli_main
from countnet.overfit_curve import SCOPE_LAST
from tests.tune.conftest import TINY, write_space
from tune.progress import SearchProgress, elapsed

ROOT = Path(__file__).parents[2]
MAX_LINES = 30  # the budget for a smoke search, stdout and stderr together
SPACE = {
    "target": "generalise",
    "fixed": TINY,
    "search": {"lr": {"type": "loguniform", "low": 1.0e-3, "high": 1.0e-2}},
    "scheduler": {"max_epochs": 2, "grace_period": 1, "reduction_factor": 2},
    "num_samples": 2,
    "max_concurrent": 2,
}
RAY_NOISE = ("Checkpoint successfully created", "╭", "│", "Trial status", "/tmp/ray/session",
             "To visualize your results", "A new study created", "Tuner.restore")
TOKEN_NOTICE = "Token authentication is enabled"  # Ray's security notice; auth stays on


def _trial(tid: str, epochs: int, planned: int = 3, **last) -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid, evaluated_params={"lr": 0.00123, "batch_size": 16},
                           config={"epochs": planned}, status="RUNNING", path=f"/x/trial_{tid}",
                           local_path=None,
                           last_result={"epoch": epochs, "val_loss": 2.0, "val_acc": 0.5,
                                        **last})


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_status_lines_per_trial_event() -> None:
    out = io.StringIO()
    p = SearchProgress("val_loss", "min", max_epochs=3, num_samples=3, stream=out)
    p.setup(total_num_samples=3)
    a, b, c = _trial("aaaa", 3), _trial("bbbb", 1, val_loss=5.0, val_acc=0.1), _trial("cccc", 1)
    p.on_step_begin(0, [a, b, c])
    for t in (a, b):
        p.on_trial_start(0, [a, b], t)
    for e, v in ((1, 4.0), (2, 1.5), (3, 1.8)):  # best epoch 2, not the last
        p.on_trial_result(0, [a, b], a, {"epoch": e, "val_loss": v, "val_acc": 0.2 * e})
    p.on_trial_complete(0, [a, b], a)
    p.on_trial_complete(0, [a, b], b)  # ASHA stopped it after one epoch
    c.last_result = {"epoch": 1, "val_loss": float("nan"), "diverged": True}
    p.on_trial_complete(0, [a, b, c], c)
    lines = _lines(out)
    assert len(lines) == 5
    assert lines[0].startswith("[0:00] aaaa started") and "lr=0.00123 batch_size=16" in lines[0]
    assert "aaaa finished 3/3 epochs: val_loss 1.5 (epoch 2)" in lines[2]
    assert "best aaaa val_loss 1.5 val_acc 0.400" in lines[2] and lines[2].endswith("1/3 done")
    assert "bbbb stopped early at epoch 1/3" in lines[3] and "best aaaa" in lines[3]
    assert "cccc diverged at epoch 1" in lines[4] and lines[4].endswith("3/3 done")


def test_overfit_progress_shows_each_trials_latest_gap() -> None:
    """Scope "last" (the overfit target): "best" is the largest gap now, not the spike of an
    untrained net's first epoch; a re-reported earlier epoch (a restart) does not replace it."""
    out = io.StringIO()
    p = SearchProgress("gap", "max", max_epochs=3, num_samples=2, stream=out,
                       scope=SCOPE_LAST)
    a, b = _trial("aaaa", 3), _trial("bbbb", 3)
    for e, g in ((1, 386.0), (2, 3.0), (3, 2.0)):
        p.on_trial_result(0, [a, b], a, {"epoch": e, "gap": g, "val_acc": 0.03})
    for e, g in ((1, 40.0), (2, 9.0), (3, 12.0), (2, 8.0)):
        p.on_trial_result(0, [a, b], b, {"epoch": e, "gap": g, "val_acc": 0.5})
    a.last_result = {"epoch": 3, "gap": 2.0, "val_acc": 0.03}
    p.on_trial_complete(0, [a, b], a)
    line = _lines(out)[-1]
    assert "aaaa finished 3/3 epochs: gap 2 (epoch 3)" in line
    assert "best bbbb gap 12 val_acc 0.500" in line


def test_errors_and_restarts_name_the_error_file() -> None:
    out = io.StringIO()
    p = SearchProgress("gap", "max", max_epochs=3, num_samples=2, stream=out)
    t = _trial("dddd", 1)
    p.on_trial_recover(0, [t], t)
    p.on_trial_error(0, [t], t)
    lines = _lines(out)
    assert "restarting from its last checkpoint (/x/trial_dddd/error.txt)" in lines[0]
    assert "failed: see /x/trial_dddd/error.txt" in lines[1] and lines[1].endswith("1/2 done")


def test_a_large_search_switches_to_a_summary_line_a_minute(monkeypatch) -> None:
    """Past `event_lines` per-trial lines: one summary line a minute (running, done and how they
    ended, the best so far) and one at the end; failures keep their own line."""
    clock = [100.0]
    monkeypatch.setattr("tune.progress.time.monotonic", lambda: clock[0])
    out = io.StringIO()
    p = SearchProgress("val_loss", "min", max_epochs=3, num_samples=1000, stream=out,
                       event_lines=4)
    p.setup(total_num_samples=1000)
    trials = [_trial(f"t{i:03d}", 3) for i in range(8)]
    for t in trials[:3]:
        p.on_trial_start(0, trials, t)
    p.on_trial_complete(0, trials, trials[0])  # the 4th event line: summaries take over
    assert len(_lines(out)) == 5 and "from now on a summary every 1:00" in _lines(out)[-1]
    for t in trials[3:6]:
        p.on_trial_start(0, trials, t)
    trials[1].last_result = {"epoch": 1, "val_loss": 0.5, "val_acc": 0.9}  # stopped early
    p.on_trial_complete(0, trials, trials[1])
    trials[1].status = trials[0].status = "TERMINATED"
    p.on_step_end(0, trials)
    assert len(_lines(out)) == 5  # nothing new within the minute
    p.on_trial_error(0, trials, trials[2])
    assert "t002 failed: see" in _lines(out)[-1]
    clock[0] += 61
    p.on_step_end(0, trials)
    p.on_step_end(0, trials)  # the next one is a minute later
    lines = _lines(out)
    assert len(lines) == 7
    assert lines[-1] == ("[1:01] summary: 5 running, 3/1000 done (1 stopped early, 0 diverged, "
                         "1 failed) | best t001 val_loss 0.5 val_acc 0.900")
    p.on_experiment_end(trials)
    assert len(_lines(out)) == 8 and _lines(out)[-1].startswith("[1:01] summary: 5 running")


def test_a_small_search_prints_every_event_and_no_summary() -> None:
    """`make search`'s 8 trials: 16 event lines, as before; no summary line at the end."""
    out = io.StringIO()
    p = SearchProgress("val_loss", "min", max_epochs=3, num_samples=8, stream=out)
    trials = [_trial(f"t{i}", 3) for i in range(8)]
    for t in trials:
        p.on_trial_start(0, trials, t)
        p.on_trial_complete(0, trials, t)
        p.on_step_end(0, trials)
    p.on_experiment_end(trials)
    lines = _lines(out)
    assert len(lines) == 16 and not any("summary" in line for line in lines)


def test_progress_callback_pickles_without_its_stream() -> None:
    """Ray saves the callbacks with the Tuner (tuner.pkl): sys.stderr must not be in it."""
    p = SearchProgress("val_loss", "min", 3, 4, stream=sys.stderr)
    restored = pickle.loads(pickle.dumps(p))
    assert restored.stream is None and restored.num_samples == 4


def test_elapsed() -> None:
    assert elapsed(5) == "0:05" and elapsed(125) == "2:05" and elapsed(3725) == "1:02:05"


def _countnet(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "countnet", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_search_is_quiet_and_resume_raises_the_target(tmp_path, capsys) -> None:
    space = write_space(tmp_path / "space.yaml", SPACE)
    storage, exp = tmp_path / "experiments", tmp_path / "experiments" / "q"
    run = _countnet("search", "--space", str(space), "--storage", str(storage), "--name", "q")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines() + run.stderr.splitlines()
    assert len(lines) <= MAX_LINES, "\n".join(lines)
    text = run.stdout + run.stderr
    for noise in RAY_NOISE:
        assert noise not in text, noise
    assert sum(" started " in line for line in run.stderr.splitlines()) == 2
    assert "2/2 done" in run.stderr and "best " in run.stderr
    assert run.stdout.startswith("top 2 of 2 ranked trials")  # data on stdout
    report = [line for line in run.stdout.splitlines() if line.startswith("report: ")]
    assert report and Path(report[0].removeprefix("report: ")).is_file()

    # --max-epochs cannot change for a resumed search: one line, exit 2, nothing run. (In this
    # process, through the command's own `main`: the refusal comes before Ray starts.)
    assert cli_main(["search", "--resume", str(exp), "--max-epochs", "5"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--max-epochs" in err
    assert cli_main(["search", "--resume", str(exp), "--num-samples", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err

    # --num-samples 3 raises the target: one more trial; -q prints only the final table.
    more = _countnet("search", "--resume", str(exp), "--num-samples", "3", "-q")
    assert more.returncode == 0, more.stderr
    assert more.stdout.splitlines()[0].startswith("top 3 of 3 ranked trials")
    assert len(more.stdout.splitlines()) == 2 + 3  # heading, columns, one row per trial
    assert [line for line in more.stderr.splitlines() if TOKEN_NOTICE not in line] == []
    assert len(list(exp.glob("trial_*/result.json"))) == 3
    info = json.loads((exp / "countnet_search.json").read_text())
    assert info["space"]["num_samples"] == 3  # a later --resume resumes towards 3
