"""`countnet overfit-check`: Karpathy's recipe and Zhang et al.'s control on real tiny fits."""

from __future__ import annotations

import json

import pytest

from countnet.cli import main
from countnet.overfit_check import (
    FIT_THRESHOLD,
    ONE_BATCH_STEPS,
    OverfitReport,
    Stage,
    overfit_check,
    regularisation_off,
)
from tests.conftest import tiny_flags

# On top of the suite's TINY: batches of 8 and a net wider (32 channels) than a batch, so it
# can fit, and memorise, 8 images. lr 5e-3 as the smoke test's (countnet/cli/overfit_check.py):
# 1e-2 killed seed 0's net in bf16 on an Intel Xeon.
RUN = {"image_size": 32, "max_count": 8, "width": 32, "depth": 4, "train_size": 800,
       "val_size": 128, "batch_size": 8, "lr": 5e-3, "threads": 1}


def test_regularisation_off_switches_every_regulariser_off(tiny) -> None:
    cfg = tiny(RUN, dropout=0.5, weight_decay=0.1, augment="crop", loss="huber",
               shuffle_labels=True, val_equals_train=True, schedule="lr_range")
    off = regularisation_off(cfg)
    assert (off.dropout, off.weight_decay, off.augment, off.loss) == (0.0, 0.0, "none", "mse")
    assert not off.shuffle_labels and not off.val_equals_train and off.schedule == "onecycle"
    assert (off.model, off.lr, off.batch_size) == (cfg.model, cfg.lr, cfg.batch_size)


def test_the_default_model_fits_one_batch(tiny) -> None:
    cfg = tiny(RUN, dropout=0.5)  # switched off by the check
    report = overfit_check(cfg, fractions=(), control=False)
    one = report.stages[0]
    assert one.samples == 8 and one.steps == ONE_BATCH_STEPS and not one.shuffled_labels
    assert one.train_ratio < FIT_THRESHOLD  # < 5 % of baseline_mse on one batch
    assert report.one_batch_ok and report.exit_code() == 0


def test_one_batch_is_fitted_and_shuffled_labels_are_memorised_not_generalised(tiny) -> None:
    # The sum head, as these bounds were set: the density head, a sum of local evidence, did
    # not memorise the permuted counts to 25 % of baseline_mse in 200 steps.
    cfg = tiny(RUN, dropout=0.5, pool="sum", ema_epochs=0.0)
    report = overfit_check(cfg, fractions=(), one_batch_steps=200, control_steps=200)
    one = report.stages[0]
    assert one.samples == 8 and one.steps == 200 and not one.shuffled_labels
    assert one.train_ratio < FIT_THRESHOLD  # < 5 % of baseline_mse on one batch
    assert report.one_batch_ok and report.exit_code() == 0
    control = report.control
    assert control is not None and control.shuffled_labels
    assert control.train_ratio < 0.25  # the permuted counts are memorised ...
    assert control.val_ratio > 0.8  # ... and validation, on true counts, stays at the baseline
    assert report.control_memorised and report.control_no_leak
    assert "validation stayed at the baseline" in report.message()


def test_a_control_that_did_not_memorise_gives_no_leak_verdict() -> None:
    """Zhang et al.'s leak test needs a memorised control: one still learning the permuted
    counts (measured: the smoke test's, 81 % of baseline after 200 steps) also learns to count,
    and its val below the baseline is no evidence of a leak."""
    def stage(name: str, train_mse: float, val_mse: float) -> Stage:
        return Stage(name=name, samples=16, epochs=1, steps=200, shuffled_labels=True,
                     train_mse=train_mse, train_baseline_mse=1.0, val_mse=val_mse,
                     val_baseline_mse=1.0)
    report = OverfitReport(config={}, stages=[stage("one batch", 0.001, 1.0)],
                           control=stage("shuffled labels", 0.8, 0.4))
    assert report.control_memorised is False and report.control_no_leak is None
    assert "cannot test for a leak" in report.message() and "leak into" not in report.message()
    report.control = stage("shuffled labels", 0.1, 0.4)  # memorised, and val learned: a leak
    assert report.control_memorised and report.control_no_leak is False
    assert "labels may leak into validation" in report.message()


def test_a_model_that_cannot_fit_one_batch_exits_non_zero(capsys) -> None:
    """lr 1e-7 for 20 steps stands in for a broken pipeline: the batch is not fitted."""
    argv = ["overfit-check", "--one-batch-steps", "20", "--no-control",
            *tiny_flags(RUN, lr=1e-7)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "cannot fit one batch" in captured.err and len(captured.err.strip().splitlines()) == 1
    assert "1 % of train" not in captured.out  # later stages are pointless and skipped


def test_smoke_test_json_has_every_stage(capsys) -> None:
    assert main(["overfit-check", "--smoke-test", "--json", "--no-control"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = [s["name"] for s in out["stages"]]
    assert names == ["one batch", "1 % of train", "10 % of train"]
    assert [s["samples"] for s in out["stages"]] == [8, 16, 160]
    for s in out["stages"]:
        assert s["train_ratio"] == pytest.approx(s["train_mse"] / s["train_baseline_mse"])
    assert out["one_batch_ok"] is True and out["control"] is None


def test_bad_config_is_exit_2(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: -1\n")
    assert main(["overfit-check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "lr" in err
