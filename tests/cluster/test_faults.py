"""Faults on the local multi-node cluster, with real signals: a trial's worker process, a whole
worker node and the search driver are SIGKILLed mid-search, and the search still completes.

Each test prints what the fault cost (FIGURES lines, `pytest -s`): the work lost, in seconds and
epochs, and how long it took to get the interrupted trial going again. The figures are measured,
never asserted (timings belong to bench/). The assertions are on what was recorded: which epochs
each trial reported, on which node, from which process, and what the Optuna study holds.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from ray.tune import ExperimentAnalysis

from tests.cluster.conftest import (
    LocalCluster,
    Watch,
    epochs,
    kill_session,
    report,
    search_args,
    start_search,
    write_space,
)

# About a second per epoch on one core: long enough to be killed in the middle of one.
FAULT_DATA = {"train_size": 1536}
EPOCHS = 3
Results = dict[str, list[dict[str, Any]]]


def fault_space(tmp_path: Path, num_samples: int, max_epochs: int = EPOCHS) -> Path:
    return write_space(tmp_path / "space.yaml", fixed=FAULT_DATA, num_samples=num_samples,
                       scheduler={"max_epochs": max_epochs, "grace_period": max_epochs})


def in_progress(rows: list[dict[str, Any]], max_epochs: int) -> bool:
    """Reported an epoch (so it has a checkpoint), but not its last one."""
    return 1 <= len(rows) < max_epochs


def checkpointed_epochs(watch: Watch, trial: str) -> int:
    """Epochs `trial`'s worker has finished, from its newest checkpoint (checkpoint_00000K is
    the checkpoint of iteration K + 1). result.json, written by the driver, may lag behind."""
    return int(watch.last_report(trial)[0].rsplit("_", 1)[1]) + 1


def epoch_s(watch: Watch, trial: str, *runs: list[dict[str, Any]]) -> float:
    """Wall time of one epoch of `trial` (train + eval + checkpoint): between two consecutive
    reports of one uninterrupted run, the first of `runs` that has two."""
    for rows in runs:
        if len(rows) >= 2:
            return watch.reported_at(trial, rows[-1]) - watch.reported_at(trial, rows[-2])
    return float(runs[0][-1]["epoch_time_s"])  # training only: a little shorter


def sleep_to_mid_epoch(watch: Watch, trial: str) -> str:
    """Sleep until half an epoch after `trial`'s newest checkpoint: the next epoch is running and
    its checkpoint is not written yet. Returns that newest checkpoint's name."""
    rows = watch.poll()[trial]
    name, at = watch.last_report(trial)
    time.sleep(max(0.0, at + 0.5 * float(rows[-1]["epoch_time_s"]) - time.time()))
    return name


def kill_mid_epoch(watch: Watch, kill: Callable[[str], None],
                   accept: Callable[[Results, str], bool] = lambda res, trial: True,
                   max_epochs: int = EPOCHS) -> tuple[str, float]:
    """Call `kill(trial)` in the middle of an epoch (not the last) of a trial in progress that
    `accept`s. Returns the trial and the wall-clock time of the kill. result.json lags behind
    the workers, so the workers' checkpoints decide."""

    def chosen(res: Results) -> str | None:
        seen = {t for t, _ in watch.checkpoints}
        return next((t for t, rows in res.items() if in_progress(rows, max_epochs) and t in seen
                     and checkpointed_epochs(watch, t) < max_epochs and accept(res, t)), None)

    for _ in range(10):
        trial = watch.until(chosen)
        newest = sleep_to_mid_epoch(watch, trial)
        watch.poll()
        if (watch.last_report(trial)[0] == newest  # no epoch ended during the wait
                and checkpointed_epochs(watch, trial) < max_epochs):
            killed_at = time.time()
            kill(trial)
            return trial, killed_at
    pytest.fail("could not aim at the middle of an epoch: epochs end too fast")


def assert_complete(results: Results, num_samples: int, max_epochs: int) -> None:
    """num_samples trials, each reporting every epoch exactly once, in order."""
    assert len(results) == num_samples, sorted(results)
    for trial, rows in results.items():
        assert epochs(rows) == list(range(1, max_epochs + 1)), (trial, epochs(rows))


def split(rows: list[dict[str, Any]], key: str, value: Any) -> tuple[list, list]:
    """The leading rows with row[key] == value, and the rest."""
    n = next((i for i, r in enumerate(rows) if r[key] != value), len(rows))
    return rows[:n], rows[n:]


@pytest.mark.slow
def test_trial_worker_sigkilled_mid_epoch_resumes_from_checkpoint(
        cluster: LocalCluster, searches, tmp_path) -> None:
    storage = tmp_path / "shared"
    search = searches(cluster, search_args(fault_space(tmp_path, 2), storage, "workerkill"),
                      storage / "workerkill", tmp_path / "search.log")
    watch = Watch(search.exp_dir, search)
    pids = {}

    def kill(trial: str) -> None:  # the trial's worker process, as Ray records it
        pids[trial] = int(watch.results[trial][-1]["pid"])
        os.kill(pids[trial], signal.SIGKILL)

    victim, killed_at = kill_mid_epoch(watch, kill)
    pid = pids[victim]

    assert watch.to_end() == 0, search.output()[-4000:]
    results = watch.results
    assert_complete(results, 2, EPOCHS)
    # Restarted from the checkpoint of its last epoch: it goes on with the next epoch (not epoch
    # 1), in a new process, as the first iteration since Ray restored it.
    old, new = split(results[victim], "pid", pid)
    assert old and new, "the trial did not run on after its worker was killed"
    assert new[0]["epoch"] == old[-1]["epoch"] + 1
    assert new[0]["iterations_since_restore"] == 1
    assert all(r["pid"] != pid for r in new)

    epoch = epoch_s(watch, victim, new, old)
    lost = killed_at - watch.reported_at(victim, old[-1])
    back = watch.reported_at(victim, new[0]) - killed_at
    report("worker SIGKILL", killed_in_epoch=old[-1]["epoch"] + 1, epoch_s=epoch,
           lost_s=lost, lost_epochs=lost / epoch, epochs_rerun=watch.epochs_trained() - 2 * EPOCHS,
           kill_to_next_epoch_s=back, restart_overhead_s=back - epoch)


@pytest.mark.slow
def test_worker_node_lost_mid_search_trials_finish_elsewhere(
        cluster: LocalCluster, searches, tmp_path) -> None:
    ids = cluster.node_ids()
    names = {node_id: name for name, node_id in ids.items()}
    storage = tmp_path / "shared"
    search = searches(cluster, search_args(fault_space(tmp_path, 2), storage, "nodekill"),
                      storage / "nodekill", tmp_path / "search.log")
    watch = Watch(search.exp_dir, search)
    killed_nodes = []

    def kill(trial: str) -> None:  # SIGKILL to the node's raylet, agents and workers at once
        killed_nodes.append(names[watch.results[trial][-1]["node_id"]])
        cluster.kill_node(killed_nodes[0])

    victim, killed_at = kill_mid_epoch(watch, kill)
    lost_node = killed_nodes[0]
    assert lost_node != "head"  # the head has no CPU for trials

    assert watch.to_end() == 0, search.output()[-4000:]
    results = watch.results
    assert_complete(results, 2, EPOCHS)
    survivors = {ids[n] for n in ids if n not in (lost_node, "head")}
    moved = {}  # trial -> (its rows on the lost node, its rows after)
    for trial, rows in results.items():
        old, new = split(rows, "node_id", ids[lost_node])
        if old and new:
            moved[trial] = (old, new)
            assert {r["node_id"] for r in new} <= survivors, (trial, new)
            assert new[0]["epoch"] == old[-1]["epoch"] + 1  # from its checkpoint
            assert new[0]["iterations_since_restore"] == 1
    assert victim in moved
    assert len({r["node_id"] for rows in results.values() for r in rows}) >= 2

    old, new = moved[victim]
    epoch = epoch_s(watch, victim, new, old)
    lost = sum(killed_at - watch.reported_at(t, o[-1]) for t, (o, _) in moved.items())
    back = min(watch.reported_at(t, n[0]) for t, (_, n) in moved.items()) - killed_at
    report("node SIGKILL", node=lost_node, trials_moved=len(moved), epoch_s=epoch,
           lost_s=lost, lost_epochs=lost / epoch,
           epochs_rerun=watch.epochs_trained() - 2 * EPOCHS,
           kill_to_next_epoch_s=back, restart_overhead_s=back - epoch)


@dataclass
class DriverKill:
    """The driver-kill scenario, run once for the tests below."""

    num_samples: int
    max_epochs: int
    exp_dir: Path
    before: Results  # every trial directory's results as the killed driver left them
    returncode: int  # of `countnet search --resume`
    output: str
    trials: dict[str, str]  # the experiment's trials after the resume (Ray's state): id -> status
    results: Results  # the results of those trials after the resume
    figures: dict[str, Any]

    @property
    def finished_before(self) -> Results:
        return {t: rows for t, rows in self.before.items() if len(rows) == self.max_epochs}


@pytest.fixture(scope="module")
def driver_kill(_cluster: LocalCluster, tmp_path_factory) -> Iterator[DriverKill]:
    """4 trials x 3 epochs, 2 at a time. Once a trial has finished and another is in the middle
    of an epoch, the driver is SIGKILLed (the cluster and the shared storage live on); then
    `countnet search --resume EXPERIMENT_DIR` runs it to the end."""
    num_samples, max_epochs, name = 4, 3, "driverkill"
    tmp_path = tmp_path_factory.mktemp("driverkill")
    storage = tmp_path / "shared"
    exp_dir = storage / name
    space = fault_space(tmp_path, num_samples, max_epochs)
    started = []
    try:
        search = start_search(_cluster, search_args(space, storage, name), exp_dir,
                              tmp_path / "search.log")
        started.append(search)
        watch = Watch(exp_dir, search)

        def after_a_finish(res: Results, trial: str) -> bool:
            return any(len(rows) == max_epochs for rows in res.values())

        # The driver only: the cluster, the trial workers' nodes and the storage live on.
        victim, killed_at = kill_mid_epoch(
            watch, lambda _: os.kill(search.proc.pid, signal.SIGKILL), after_a_finish, max_epochs)
        search.proc.wait(30)
        before = watch.poll()  # what the killed driver had written

        resume = start_search(_cluster, ["--resume", str(exp_dir)], exp_dir,
                              tmp_path / "resume.log")
        started.append(resume)
        resumed_at = time.time()
        watch.search = resume
        returncode = watch.to_end()
    finally:
        for s in started:
            kill_session(s.proc)
    # The experiment's trials as Ray's own state has them: a trial directory alone is not a
    # trial of the experiment.
    trials = {t.trial_id: str(t.status) for t in ExperimentAnalysis(str(exp_dir)).trials}
    # Progress lost: each unfinished trial's work since its newest checkpoint before the kill.
    reports = sorted((at, trial) for (trial, _), at in watch.checkpoints.items())
    last_before = {trial: at for at, trial in reports if at < killed_at}
    unfinished = [t for t, rows in before.items() if len(rows) < max_epochs]
    lost = sum(killed_at - last_before[t] for t in unfinished if t in last_before)
    first_after = min((at for at, _ in reports if at > resumed_at), default=float("nan"))
    epoch = float(before[victim][-1]["epoch_time_s"])
    figures = dict(
        finished_before=sum(len(r) == max_epochs for r in before.values()),
        unfinished=len(unfinished), epoch_s=epoch, lost_in_progress_s=lost,
        lost_in_progress_epochs=lost / epoch, epochs_trained=watch.epochs_trained(),
        epochs_needed=num_samples * max_epochs, resume_to_next_epoch_s=first_after - resumed_at,
        kill_to_next_epoch_s=first_after - killed_at)
    output = "\n".join(p.read_text()[-3000:] for p in (tmp_path / "search.log",
                                                        tmp_path / "resume.log"))
    yield DriverKill(num_samples, max_epochs, exp_dir, before, returncode, output, trials,
                     {t: watch.results.get(t, []) for t in trials}, figures)


@pytest.mark.slow
def test_driver_sigkilled_resume_completes(driver_kill: DriverKill) -> None:
    run = driver_kill
    report("driver SIGKILL", **run.figures)
    assert run.returncode == 0, run.output
    assert len(run.trials) == run.num_samples, run.trials
    assert set(run.trials.values()) == {"TERMINATED"}
    assert_complete(run.results, run.num_samples, run.max_epochs)


@pytest.mark.slow
def test_driver_sigkilled_finished_trials_not_rerun(driver_kill: DriverKill) -> None:
    run = driver_kill
    assert run.finished_before
    for trial, rows in run.finished_before.items():
        assert trial in run.trials  # the same trial id
        assert run.results[trial] == rows  # the same epochs, nothing appended


@pytest.mark.slow
def test_driver_sigkilled_unfinished_trials_go_on_from_their_checkpoints(
        driver_kill: DriverKill) -> None:
    run = driver_kill
    unfinished = {t: rows for t, rows in run.before.items() if 0 < len(rows) < run.max_epochs}
    assert unfinished
    for trial, rows in unfinished.items():
        assert trial in run.trials, f"{trial} was forgotten by the resumed search"
        after = run.results[trial]
        assert after[:len(rows)] == rows, trial
        # Restored from a checkpoint, not started again: the epochs go on, and one of the later
        # rows is the first iteration since a restore.
        assert epochs(after[len(rows):])[:1] == [rows[-1]["epoch"] + 1], (trial, epochs(after))
        assert any(r["iterations_since_restore"] == 1 for r in after[len(rows):]), trial


@pytest.mark.slow
def test_driver_sigkilled_study_holds_each_trial_once(driver_kill: DriverKill) -> None:
    run = driver_kill
    study = optuna.load_study(study_name=run.exp_dir.name,
                              storage=f"sqlite:///{run.exp_dir / 'optuna.db'}")
    states = [(t.number, t.state.name, t.params) for t in study.trials]
    assert len(study.trials) == run.num_samples, states
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials), states
    ray_lrs = sorted(rows[0]["config"]["lr"] for rows in run.results.values())
    assert sorted(t.params["lr"] for t in study.trials) == pytest.approx(ray_lrs)
