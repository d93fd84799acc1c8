"""`countnet report`: PNGs that decode and are not blank, trials.csv, pruned-trial importances.

Experiments here are written by hand in the layout Ray and `countnet search` leave behind
(trial_*/params.json, trial_*/result.json, countnet_search.json), so these tests need no Ray; the
same report on a real search is checked in tests/tune/test_report_search.py.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest
from PIL import Image

from countnet.cli import main
from countnet.experiment import load_experiment
from countnet.importances import param_importances, study_points
from countnet.report import (
    PNG_CURVES,
    PNG_ERRORS,
    PNG_HISTORY,
    PNG_IMPORTANCES,
    REPORT_MD,
    TRIALS_CSV,
    write_report,
)
from countnet.rung_report import PNG_RUNGS

MAX_EPOCHS = 4
SEARCH = {"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-1},
          "batch_size": {"type": "choice", "values": [16, 32]},
          "dropout": {"type": "uniform", "low": 0.1, "high": 0.3, "optional": True}}
MIN_DISTINCT_COLOURS = 8  # a plot has axes, text, lines and markers: many colours


def _trial(exp: Path, tid: str, config: dict, val_losses: list[float], start: float,
           done: bool = True, diverged_at: int | None = None) -> None:
    d = exp / f"trial_{tid}"
    d.mkdir(parents=True)
    (d / "params.json").write_text(json.dumps({"model": "simple", "epochs": MAX_EPOCHS,
                                               **config}))
    rows = []
    for e, v in enumerate(val_losses, 1):
        rows.append({"epoch": e, "lr_now": config["lr"] / e, "train_loss": v * 1.5,
                     "train_loss_eval": v * 0.9, "val_loss": v, "val_acc": 1 / (1 + v),
                     "val_mae": math.sqrt(v) if math.isfinite(v) else v, "gap": v * 0.1,
                     "diverged": e == diverged_at, "trial_id": tid, "done": False,
                     "timestamp": start + e, "time_this_iter_s": 1.0})
    rows[-1]["done"] = done
    (d / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def _experiment(root: Path) -> Path:
    """6 trials: 2 complete, 3 stopped early by ASHA (rungs 1 and 2), 1 diverged."""
    exp = root / "exp"
    exp.mkdir()
    info = {"target": "generalise", "metric": "val_loss", "mode": "min",
            "space": {"search": SEARCH,
                      "scheduler": {"max_epochs": MAX_EPOCHS, "grace_period": 1,
                                    "reduction_factor": 2}}}
    (exp / "countnet_search.json").write_text(json.dumps(info))
    # Started in the order a, b, c, d, e, f (timestamps); directory names are not in that order.
    _trial(exp, "f0", {"lr": 3e-3, "batch_size": 16, "use_dropout": False},
           [9.0, 5.0, 3.0, 3.5], start=100)  # complete, best epoch 3 (not the last)
    _trial(exp, "e1", {"lr": 1e-4, "batch_size": 32, "use_dropout": True, "dropout": 0.2},
           [20.0], start=110)  # stopped at rung 1
    _trial(exp, "d2", {"lr": 1e-2, "batch_size": 16, "use_dropout": True, "dropout": 0.1},
           [8.0, 6.0], start=120)  # stopped at rung 2
    _trial(exp, "c3", {"lr": 5e-2, "batch_size": 32, "use_dropout": False},
           [7.0, float("nan")], start=130, diverged_at=2)
    _trial(exp, "b4", {"lr": 2e-3, "batch_size": 32, "use_dropout": True, "dropout": 0.3},
           [8.5, 4.0, 2.5, 2.0], start=140)  # complete, the winner
    _trial(exp, "a5", {"lr": 3e-4, "batch_size": 16, "use_dropout": False},
           [15.0], start=150)  # stopped at rung 1
    return exp


def _assert_png(path: Path) -> None:
    assert path.is_file(), path
    with Image.open(path) as im:
        im.load()  # decodes the whole file
        assert im.format == "PNG"
        assert im.width >= 400 and im.height >= 200
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 10, f"{path.name} is (nearly) uniform"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) >= MIN_DISTINCT_COLOURS


def test_experiment_report_writes_pngs_csv_and_markdown(tmp_path) -> None:
    exp = _experiment(tmp_path)
    md = write_report(exp, tmp_path / "out")
    assert md == tmp_path / "out" / REPORT_MD
    for name in (PNG_HISTORY, PNG_IMPORTANCES, PNG_CURVES, PNG_RUNGS):
        _assert_png(md.parent / name)
        assert f"]({name})" in md.read_text()  # report.md links every image
    assert not (md.parent / PNG_ERRORS).exists()  # no evaluation in this experiment
    assert "no error-by-count plot" in md.read_text()
    assert f"[{TRIALS_CSV}]({TRIALS_CSV})" in md.read_text()


def test_trials_csv_one_row_per_trial_with_best_epoch(tmp_path) -> None:
    exp = _experiment(tmp_path)
    md = write_report(exp, tmp_path / "out")
    rows = list(csv.DictReader((md.parent / TRIALS_CSV).open()))
    assert [r["trial_id"] for r in rows] == ["f0", "e1", "d2", "c3", "b4", "a5"]  # start order
    by_id = {r["trial_id"]: r for r in rows}
    assert by_id["f0"]["best_epoch"] == "3" and by_id["f0"]["outcome"] == "complete"
    assert float(by_id["f0"]["best_val_loss"]) == 3.0
    assert by_id["d2"]["outcome"] == "stopped@2" and by_id["d2"]["stopped_early"] == "True"
    # As in `countnet search`'s table: a diverged trial shows its best finite epoch, and is
    # never ranked nor exported.
    assert by_id["c3"]["outcome"] == "diverged" and by_id["c3"]["best_epoch"] == "1"
    assert by_id["b4"]["best_epoch"] == "4" and by_id["b4"]["epochs_run"] == "4"
    assert by_id["e1"]["config.dropout"] == "0.2" and by_id["f0"]["config.dropout"] == ""
    ranked = load_experiment(exp).ranked()
    assert ranked[0].trial_id == "b4" and int(ranked[0].best["epoch"]) == 4
    assert "c3" not in [t.trial_id for t in ranked]


def test_an_overfit_report_ranks_each_trial_at_its_last_epoch(tmp_path) -> None:
    """The overfit target: a trial stands by its last epoch (`rank_scope`), not by the huge gap
    of an untrained net's first epochs; the report says "last" where it says "best"."""
    exp = tmp_path / "exp"
    exp.mkdir()
    info = {"target": "overfit", "metric": "gap", "mode": "max",
            "space": {"search": SEARCH, "scheduler": {"max_epochs": MAX_EPOCHS}}}
    (exp / "countnet_search.json").write_text(json.dumps(info))
    # (val_loss, train_loss_eval) per epoch: s9 has the early spike, m8 memorised at the end.
    for i, (tid, losses) in enumerate((
            ("s9", [(420.0, 34.0), (30.0, 20.0), (12.0, 6.0), (11.0, 6.5)]),
            ("m8", [(40.0, 35.0), (12.0, 4.0), (13.0, 1.0), (15.0, 0.3)]))):
        d = exp / f"trial_{tid}"
        d.mkdir()
        (d / "params.json").write_text(json.dumps({"model": "simple", "epochs": MAX_EPOCHS,
                                                   "lr": 1e-3 * (i + 1), "batch_size": 16}))
        rows = [{"epoch": e, "train_loss": t, "train_loss_eval": t, "val_loss": v,
                 "gap": v - t, "val_acc": 0.3, "diverged": False, "trial_id": tid,
                 "done": e == MAX_EPOCHS, "timestamp": 100.0 * i + e, "time_this_iter_s": 1.0}
                for e, (v, t) in enumerate(losses, 1)]
        (d / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    md = write_report(exp, tmp_path / "out")
    text = md.read_text()
    assert "each trial at its last epoch" in text and "| last epoch |" in text
    assert "| 1 | m8 |" in text and "| 2 | s9 |" in text  # m8's final gap 14.7 > s9's 4.5
    rows = {r["trial_id"]: r for r in csv.DictReader((md.parent / TRIALS_CSV).open())}
    assert rows["s9"]["best_epoch"] == rows["m8"]["best_epoch"] == str(MAX_EPOCHS)


def test_rungs_follow_asha(tmp_path) -> None:
    exp = load_experiment(_experiment(tmp_path))
    assert exp.rungs() == [1, 2]  # grace 1 x factor 2**k below max_epochs 4


def test_importances_use_pruned_trials() -> None:
    """All trials but one PRUNED, in a conditional space: Optuna's own importances see one
    COMPLETE trial; ours name every parameter the trials varied."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    dists = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
             "batch_size": optuna.distributions.CategoricalDistribution([16, 32]),
             "use_dropout": optuna.distributions.CategoricalDistribution([False, True]),
             "dropout": optuna.distributions.FloatDistribution(0.1, 0.3)}
    rng = np.random.default_rng(0)
    complete = {"lr": 1e-3, "batch_size": 16, "use_dropout": False}
    study.add_trial(optuna.trial.create_trial(
        params=complete, distributions={k: dists[k] for k in complete}, value=1.0))
    for _ in range(11):
        params = {"lr": float(10 ** rng.uniform(-4, -1)), "batch_size": int(rng.choice([16, 32])),
                  "use_dropout": True, "dropout": float(rng.uniform(0.1, 0.3))}
        curve = {1: 10 * params["lr"] ** 0.5 + params["dropout"], 2: 9 * params["lr"] ** 0.5}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: dists[k] for k in params},
            state=optuna.trial.TrialState.PRUNED, intermediate_values=curve))
    # Optuna's own sees only the one COMPLETE trial: too few to rank, so it warns and gives its
    # parameters equal shares, and never names dropout, which only PRUNED trials varied.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        own = optuna.importance.get_param_importances(study)
    assert own == pytest.approx({k: 1 / len(complete) for k in complete})
    points = study_points(study)
    assert len(points) == len(study.trials)  # the PRUNED ones count, with their best epoch
    result = param_importances(points, "min")
    assert set(result) > set(complete)  # more than the COMPLETE trial's parameters
    assert "dropout" in result
    assert sum(result.values()) == pytest.approx(1.0)


def test_importances_of_a_report_include_stopped_trials(tmp_path) -> None:
    exp = load_experiment(_experiment(tmp_path))
    points = [(exp.effective_params(t), t.best["val_loss"]) for t in exp.ranked()]
    assert len(points) == 5  # 2 complete + 3 stopped early; the diverged one has no value
    result = param_importances(points, "min", exp.search)
    assert {"lr", "batch_size", "dropout"} <= set(result)


def test_error_by_count_from_an_evaluation(tmp_path) -> None:
    exp = _experiment(tmp_path)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    by_count = [{"count": c, "n": 10, "mae": 0.1 * c, "acc": 1 - 0.04 * c, "bias": 0.0}
                for c in range(0, 21)]
    (bundle / "evaluation.json").write_text(json.dumps({"mae": 1.0, "by_count": by_count}))
    md = write_report(exp, tmp_path / "out", bundle=bundle)
    _assert_png(md.parent / PNG_ERRORS)
    assert f"]({PNG_ERRORS})" in md.read_text()


def test_run_dir_report(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("model: simple\nepochs: 5\nlr: 0.003\n")
    lines = [{"epoch": e, "lr_now": 0.003, "train_loss": 20 / e, "train_loss_eval": 15 / e,
              "val_loss": 16 / e + (e == 5), "val_acc": e / 6} for e in range(1, 6)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    md = write_report(run)
    assert md == run / "report" / REPORT_MD
    _assert_png(md.parent / PNG_CURVES)
    assert "best epoch 4" in md.read_text()


@pytest.mark.parametrize("make, expected", [
    (lambda p: (p / "countnet_search.json").write_text("{}"), "no trials"),
    (lambda p: (p / "config.yaml").write_text("model: simple\n"), "no metrics.jsonl"),
    (lambda p: (p / "metrics.jsonl").write_text(""), "no epochs"),
    (lambda p: None, "neither a run directory"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make, expected) -> None:
    d = tmp_path / "d"
    d.mkdir()
    make(d)
    assert main(["report", str(d)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err


def test_cli_prints_the_files(tmp_path, capsys) -> None:
    exp = _experiment(tmp_path)
    assert main(["report", str(exp), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out.split()
    assert str(tmp_path / "r" / REPORT_MD) in out
    assert all(Path(p).is_file() for p in out)
