"""Live progress of `countnet search`: one compact line per change, on stderr.

A Ray Tune `Callback`, used with Ray's own output turned off (`RunConfig(verbose=0)`): Ray's
default reporter prints a config box and a result box per trial and its trial table every few
seconds. Instead this prints, as the search runs,

    [0:05] 87fb0bac started   lr=0.006466 batch_size=16
    [0:14] 22dad463 stopped early at epoch 1/3: val_loss 89.09 | best 87fb0bac val_loss 2.283
           val_acc 0.312 | 1/4 done

(on one line) for every trial that starts, finishes, is stopped early by ASHA, diverges, fails
or is restarted, up to EVENT_LINES lines (`make search`'s 8 trials print 16). A larger search
then prints one summary line a minute instead, and a last one when it ends:

    [12:03] summary: 64 running, 412/1000 done (298 stopped early, 0 diverged, 0 failed) |
            best 5e0c1a2f val_loss 2.01 val_acc 0.402

while a failure or a restart still gets its own line. "Best" is the best epoch by the target
metric over every epoch reported so far: the one `countnet export` would take. For the overfit
target (scope "last", `rank_scope`) each trial is its latest finite epoch instead, so "best" is
the trial with the largest gap now, not the largest gap of any epoch (an untrained net's first
epochs have the largest, by noise). Lines are written to stderr (messages); the final table of
`countnet search` goes to stdout.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from countnet.experiment import (
    DIVERGED_KEY,
    ERROR_FILE,
    RESULT_FILE,
    STEP,
    TERMINATED,
    make_trial,
)
from countnet.formatting import format_params, is_finite
from countnet.overfit_curve import SCOPE_ALL, SCOPE_LAST
from countnet.rundir import read_jsonl

STEP_KEY = STEP
# Per-trial event lines before the summary lines take over: 50 trials' start and end lines. A
# thousand-trial search would print two thousand lines, which nobody reads.
EVENT_LINES = 100
SUMMARY_PERIOD_S = 60.0  # seconds between summary lines, once they took over
RUNNING = "RUNNING"


class SearchProgress(Callback):
    """Prints a status line per trial event of a Ray Tune search.

    Picklable (Ray saves the callbacks with the Tuner): the stream is looked up when printing.

    Args:
        metric: the target metric (ranks epochs for "best").
        mode: "min" or "max".
        max_epochs: the epochs of a full trial (ASHA's max_t).
        num_samples: the trials the search will run (Ray's count replaces it at setup).
        stream: where lines go; None = sys.stderr at the time of printing.
        scope: which epoch stands for a trial (`rank_scope` of the target): SCOPE_ALL, its best
            so far; SCOPE_LAST, its latest finite one.
        event_lines: per-trial event lines before summary lines take over.
        summary_period_s: seconds between summary lines.
    """

    def __init__(self, metric: str, mode: str, max_epochs: int, num_samples: int,
                 stream: Any = None, scope: str = SCOPE_ALL, event_lines: int = EVENT_LINES,
                 summary_period_s: float = SUMMARY_PERIOD_S) -> None:
        self.metric, self.mode, self.scope = metric, mode, scope
        self.max_epochs, self.num_samples = max_epochs, num_samples
        self.stream = stream
        self.event_lines, self.summary_period_s = event_lines, summary_period_s
        self._start = time.monotonic()
        # trial_id -> the epoch that stands for it so far: its best, or its latest (scope)
        self._best: dict[str, dict[str, Any]] = {}
        self._done: set[str] = set()  # trial ids that ended (any way)
        self._seen_restored = False
        self._events = 0  # per-trial event lines printed
        self._last_summary: float | None = None  # when summary lines took over, or the last one
        # How the trials of this driver ended, for the summary line.
        self._ended = {"stopped": 0, "diverged": 0, "failed": 0}

    def setup(self, stop: Any = None, num_samples: int | None = None,
              total_num_samples: int | None = None, **info: Any) -> None:
        self._start = time.monotonic()
        if total_num_samples:
            self.num_samples = int(total_num_samples)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self._seen_restored:
            return
        # A resumed search: trials that finished before the restore count towards "best".
        self._seen_restored = True
        done = [t for t in trials if t.status in ("TERMINATED", "ERROR")]
        for trial in done:
            self._done.add(trial.trial_id)
            for row in _results(trial):
                self._update(trial.trial_id, row)
        if done:
            self._print(f"resumed with {len(done)}/{self.num_samples} trials done"
                        f"{self._best_str()}")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._summarising():  # formatting the params is work too: skip it
            return
        params = format_params(dict(trial.evaluated_params or {}))
        self._event(f"{trial.trial_id} started   {params}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        self._update(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any,
                          **info: Any) -> None:
        last = dict(trial.last_result or {})
        self._update(trial.trial_id, last)
        self._done.add(trial.trial_id)
        # The one trial model (countnet.experiment), from the last result: it ended cleanly.
        ended = make_trial(trial.trial_id, trial.path, TERMINATED, dict(trial.config), {}, [last],
                           self.metric, self.mode,
                           planned=int(trial.config.get("epochs", self.max_epochs)),
                           scope=self.scope)
        epochs, planned = ended.epochs_run, ended.planned
        self._ended["diverged"] += ended.diverged
        self._ended["stopped"] += ended.stopped_early and not ended.diverged
        if self._summarising():
            return
        if ended.diverged:
            what = f"diverged at epoch {epochs} (non-finite loss)"
        elif ended.stopped_early:
            what = f"stopped early at epoch {epochs}/{planned}{self._own_best(trial.trial_id)}"
        else:
            what = f"finished {epochs}/{planned} epochs{self._own_best(trial.trial_id)}"
        self._event(f"{trial.trial_id} {what}{self._best_str()} | {self._count()}")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        # Ray calls this every loop of its controller: only a clock is read, until a minute
        # since the last summary line has passed.
        if (self._last_summary is not None
                and time.monotonic() - self._last_summary >= self.summary_period_s):
            self._summary(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._summarising():  # the last state, whenever the last minute's line was
            self._summary(trials)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._print(f"{trial.trial_id} failed; restarting from its last checkpoint "
                    f"({Path(trial.path) / ERROR_FILE})")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._done.add(trial.trial_id)
        self._ended["failed"] += 1
        self._print(f"{trial.trial_id} failed: see {Path(trial.path) / ERROR_FILE} | "
                    f"{self._count()}")

    def _summarising(self) -> bool:
        """Whether the per-trial lines have run out and summary lines took over."""
        return self._last_summary is not None

    def _event(self, text: str) -> None:
        """A per-trial event line while EVENT_LINES last; then summary lines take over."""
        self._print(text)
        self._events += 1
        if self._events >= self.event_lines:
            self._last_summary = time.monotonic()
            every = elapsed(self.summary_period_s)
            self._print(f"{self._events} trial events shown; from now on a summary every "
                        f"{every} (a failed trial still gets its own line)")

    def _summary(self, trials: list) -> None:
        """One line: running, done (and how they ended), the best so far."""
        self._last_summary = time.monotonic()
        # Ray calls on_trial_complete while the trial is still RUNNING: not counted twice.
        running = sum(t.status == RUNNING and t.trial_id not in self._done for t in trials)
        ended = self._ended
        self._print(f"summary: {running} running, {self._count()} ({ended['stopped']} stopped "
                    f"early, {ended['diverged']} diverged, {ended['failed']} failed)"
                    f"{self._best_str()}")

    def _update(self, trial_id: str, row: dict[str, Any]) -> None:
        """Keep the epoch that stands for the trial (finite target, not diverged): its best so
        far, or under scope "last" its latest (`countnet.experiment.best_epoch`'s rule)."""
        value = row.get(self.metric)
        if not is_finite(value) or row.get(DIVERGED_KEY) is True or STEP_KEY not in row:
            return
        old = self._best.get(trial_id)
        # A row of an earlier epoch (a restarted trial re-reports some) is not newer.
        newer = old is None or int(row[STEP_KEY]) >= int(old[STEP_KEY])
        keep = (newer if self.scope == SCOPE_LAST
                else old is None or self._better(value, old[self.metric]))
        if keep:
            self._best[trial_id] = {k: row.get(k) for k in (STEP_KEY, self.metric, "val_acc")}

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _own_best(self, trial_id: str) -> str:
        b = self._best.get(trial_id)
        if b is None:
            return ""
        return f": {self.metric} {b[self.metric]:.4g} (epoch {int(b[STEP_KEY])})"

    def _best_str(self) -> str:
        if not self._best:
            return ""
        pick = min if self.mode == "min" else max
        tid = pick(self._best, key=lambda t: self._best[t][self.metric])
        b = self._best[tid]
        acc = b.get("val_acc")
        acc_str = f" val_acc {acc:.3f}" if isinstance(acc, (int, float)) else ""
        return f" | best {tid} {self.metric} {b[self.metric]:.4g}{acc_str}"

    def _count(self) -> str:
        # Counted here: Ray calls on_trial_complete while the trial is still RUNNING.
        return f"{len(self._done)}/{self.num_samples} done"

    def _print(self, text: str) -> None:
        stream = self.stream if self.stream is not None else sys.stderr
        print(f"[{elapsed(time.monotonic() - self._start)}] {text}", file=stream, flush=True)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if state.get("stream") in (sys.stderr, sys.stdout):  # not picklable; looked up again
            state["stream"] = None
        return state


def elapsed(seconds: float) -> str:
    """`m:ss`, or `h:mm:ss` from one hour."""
    s = int(seconds)
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


def _results(trial: Any) -> list[dict[str, Any]]:
    """The rows Ray wrote for a trial (its result.json in the experiment, else the driver's
    staging copy); [] when neither is there."""
    for base in (trial.path, trial.local_path):
        rows = None if base is None else read_jsonl(Path(base) / RESULT_FILE)
        if rows is not None:
            return rows
    return []
