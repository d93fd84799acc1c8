"""The main search (conftest `main_search`): ASHA, the Optuna study, TensorBoard files, seeds,
and the commands its summary prints."""

from __future__ import annotations

import io
import json
import os
import shlex
import sysconfig
from pathlib import Path

import optuna
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import tune.cli
from countnet.experiment import STUDY_FILE
from tests.tune.conftest import MAIN_SEED
from tests.tune.test_sampler import TPE_PARAMS_ATTR
from tune.cli import DASHBOARD_EXTRA, installed_command, print_summary
from tune.sampler import startup_trials
from tune.search import make_searcher


def _study(outcome) -> optuna.Study:
    return optuna.load_study(study_name="main",
                             storage=f"sqlite:///{Path(outcome.exp_dir) / STUDY_FILE}")


def test_asha_stopped_some_trials_early(main_search) -> None:
    space, outcome = main_search
    trials = outcome.trials
    assert len(trials) == space.num_samples
    assert all(t.status == "TERMINATED" for t in trials)
    early = [t for t in trials if t.stopped_early]
    full = [t for t in trials if t.epochs_run == space.max_epochs]
    assert early, [t.outcome for t in trials]
    assert full
    for t in trials:  # one result per epoch, in order
        assert [r["epoch"] for r in t.history] == list(range(1, t.epochs_run + 1))


def test_study_has_pruned_trials_with_intermediate_values(main_search) -> None:
    _, outcome = main_search
    by_params = {json.dumps(t.params, sort_keys=True): t for t in outcome.trials}
    study = _study(outcome)
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.PRUNED in states
    assert optuna.trial.TrialState.COMPLETE in states
    for ot in study.trials:
        ray_trial = by_params[json.dumps(ot.params, sort_keys=True)]
        per_epoch = {r["epoch"]: r["val_loss"] for r in ray_trial.history}
        # Every epoch the trial ran is an intermediate value, pruned or not.
        assert ot.intermediate_values == pytest.approx(per_epoch)
        if ot.state == optuna.trial.TrialState.PRUNED:
            assert ray_trial.stopped_early
            assert ot.user_attrs["stopped_early_at_epoch"] == ray_trial.epochs_run
        else:
            assert ot.state == optuna.trial.TrialState.COMPLETE
            assert ot.value == pytest.approx(per_epoch[ray_trial.epochs_run])


def test_tensorboard_scalars_for_every_epoch_of_every_trial(main_search) -> None:
    _, outcome = main_search
    for t in outcome.trials:
        acc = EventAccumulator(t.path)
        acc.Reload()
        epochs = [r["epoch"] for r in t.history]
        for tag in ("train_loss", "train_loss_eval", "val_loss"):
            events = acc.Scalars(tag)
            assert [e.step for e in events] == epochs, (t.trial_id, tag)
            expected = [r[tag] for r in t.history]
            assert [round(e.value, 3) for e in events] == [round(v, 3) for v in expected]
        # hparams: the searched values, written when the trial ended
        assert any(k.startswith("_hparams_") for k in acc.summary_metadata)


def _hparams(acc: EventAccumulator) -> tuple[dict, list[str], int]:
    """(hparams, metric tags, session end status) as TensorBoard's HParams plugin reads them."""
    def data(tag: str) -> plugin_data_pb2.HParamsPluginData:
        return plugin_data_pb2.HParamsPluginData.FromString(
            acc.summary_metadata[tag].plugin_data.content)

    start = data("_hparams_/session_start_info").session_start_info
    values = {}
    for key, value in start.hparams.items():
        kind = value.WhichOneof("kind")
        values[key] = getattr(value, kind) if kind else None
    tags = [m.name.tag for m in data("_hparams_/experiment").experiment.metric_infos]
    return values, tags, data("_hparams_/session_end_info").session_end_info.status


def test_hparams_are_the_config_and_the_best_epoch(main_search) -> None:
    """HParams: `lr` is the trial's config (never the last scheduled lr), the metrics are those
    of the best epoch (the one `countnet export` takes), with its number and ASHA's verdict."""
    _, outcome = main_search
    checked = 0
    for t in outcome.trials:
        acc = EventAccumulator(t.path)
        acc.Reload()
        hparams, tags, status = _hparams(acc)
        assert hparams["lr"] == pytest.approx(t.config["lr"])
        assert {k: hparams[k] for k in t.params} == pytest.approx(t.params)
        lr_now = [e.value for e in acc.Scalars("lr_now")]  # the per-epoch lr, its own tag
        assert lr_now == pytest.approx([r["lr_now"] for r in t.history], rel=1e-6)
        for tag in ("best/val_loss", "best/val_acc", "best/epoch", "epochs_run", "asha_stopped"):
            assert tag in tags
        last = {tag: acc.Scalars(tag)[-1].value for tag in tags}  # what HParams shows
        assert last["best/val_loss"] == pytest.approx(t.best["val_loss"], rel=1e-6)
        assert last["best/epoch"] == t.best["epoch"]
        assert last["epochs_run"] == t.epochs_run
        assert last["asha_stopped"] == float(t.stopped_early)
        assert status == 1  # STATUS_SUCCESS
        if len(set(lr_now)) > 1:  # a trial whose lr changes over its epochs
            assert hparams["lr"] != pytest.approx(lr_now[-1])
            checked += 1
    assert checked  # the one-cycle schedule changes lr every epoch of a multi-epoch trial


def test_results_carry_node_and_host(main_search) -> None:
    _, outcome = main_search
    pids = set()
    for t in outcome.trials:
        row = json.loads(Path(t.path, "result.json").read_text().splitlines()[0])
        assert row["node_id"] and row["hostname"]
        pids.add(row["pid"])
    # reuse_actors: trials share worker processes, and so their cached datasets.
    assert len(pids) < len(outcome.trials)


def test_checkpoints_ranked_by_target(main_search) -> None:
    _, outcome = main_search
    for t in outcome.trials:
        # The best epoch's checkpoint is always kept (Ray keeps best-by-val_loss + latest).
        assert int(t.best["epoch"]) in t.checkpoints


def test_same_seed_same_configs(main_search) -> None:
    """The seed fixes the random start; TPE's later picks also depend on the results."""
    space, outcome = main_search
    study = _study(outcome)
    sampled = [t.params for t in study.trials]  # in the order they were asked

    def key(params: dict) -> str:
        return json.dumps(params, sort_keys=True)

    assert sorted(map(key, sampled)) == sorted(key(t.params) for t in outcome.trials)
    # The trials asked before TPE took over (tune.sampler: after startup_trials finished).
    first_tpe = min(t.number for t in study.trials if TPE_PARAMS_ATTR in t.system_attrs)
    assert first_tpe >= startup_trials(space.num_samples)

    def replay(seed: int) -> list[dict]:
        searcher = make_searcher(space, seed)  # no results told: every ask is random
        return [searcher.suggest(f"replay_{i}") for i in range(first_tpe)]

    assert replay(MAIN_SEED) == sampled[:first_tpe]
    assert replay(MAIN_SEED + 1) != sampled[:first_tpe]


def _summary(outcome) -> list[str]:
    out = io.StringIO()
    print_summary(outcome, out=out)
    return out.getvalue().splitlines()


def _where_next(outcome) -> dict[str, list[str]]:
    """The summary's command lines (tensorboard, optuna-dashboard) by command name, as argv."""
    lines = [shlex.split(line) for line in _summary(outcome)
             if line.split(" ", 1)[0].endswith(("tensorboard", "optuna-dashboard"))]
    return {Path(argv[0]).name: argv for argv in lines}


def test_printed_commands_run_from_a_fresh_shell(main_search, monkeypatch) -> None:
    """`make search` runs .venv/bin/countnet without activating .venv: the summary's commands
    then name their full path, which a fresh shell runs; in an activated one, their bare name."""
    _, outcome = main_search
    scripts = sysconfig.get_path("scripts")
    elsewhere = [d for d in os.environ["PATH"].split(os.pathsep)
                 if d and os.path.realpath(d) != os.path.realpath(scripts)]
    monkeypatch.setenv("PATH", os.pathsep.join(elsewhere))  # a fresh shell: .venv not on PATH
    fresh = _where_next(outcome)
    assert fresh["tensorboard"] == [str(Path(scripts) / "tensorboard"), "--logdir",
                                    outcome.exp_dir]
    assert os.access(fresh["tensorboard"][0], os.X_OK)  # installed there, so it runs as printed
    assert fresh["optuna-dashboard"][0] == str(Path(scripts) / "optuna-dashboard")

    monkeypatch.setenv("PATH", os.pathsep.join([scripts, *elsewhere]))  # `source activate`
    assert _where_next(outcome)["tensorboard"] == ["tensorboard", "--logdir", outcome.exp_dir]


def test_installed_command_quotes_a_path_with_spaces(monkeypatch, tmp_path) -> None:
    scripts = tmp_path / "my env" / "bin"
    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(scripts))
    monkeypatch.setenv("PATH", "/usr/bin")
    assert shlex.split(installed_command("tensorboard")) == [str(scripts / "tensorboard")]
    monkeypatch.setenv("PATH", f"/usr/bin{os.pathsep}{scripts}{os.sep}")  # a trailing slash
    assert installed_command("tensorboard") == "tensorboard"


def test_a_missing_optuna_dashboard_comes_with_its_install_command(main_search,
                                                                   monkeypatch) -> None:
    """optuna-dashboard is an optional extra: when it is missing, the line before its command
    is the command that installs it (the checkout's `dashboard` extra), runnable as printed."""
    _, outcome = main_search
    monkeypatch.setattr(tune.cli, "dashboard_installed", lambda: False)
    lines = _summary(outcome)
    prefix = "to run optuna-dashboard, install it first: "
    (note,) = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    assert lines[note + 1].split()[0].endswith("optuna-dashboard")  # then the command itself
    pip, *args = shlex.split(lines[note][len(prefix):])
    root = Path(tune.cli.__file__).resolve().parent.parent
    assert Path(pip).name == "pip" and args == ["install", "-e", f"{root}[{DASHBOARD_EXTRA}]"]
    assert f'{DASHBOARD_EXTRA} = ["optuna-dashboard' in (root / "pyproject.toml").read_text()

    monkeypatch.setattr(tune.cli, "dashboard_installed", lambda: True)
    assert not any(line.startswith(prefix) for line in _summary(outcome))
