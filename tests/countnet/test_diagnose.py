"""`countnet diagnose` on constructed runs whose answer is known in advance.

Every run here is real: `fit` trains a tiny `simple` model on tiny synthetic data and `RunLogger`
writes a real run dir; the diagnosis reads it back like the CLI does.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from countnet.bundle import write_bundle
from countnet.checkpoint import load_checkpoint
from countnet.cli import main
from countnet.config import TrainConfig
from countnet.datasets import load_splits
from countnet.diagnose import TERMS, diagnose, weight_decay_penalty
from countnet.diagnose_io import diagnose_path, load_for_diagnosis
from countnet.diagnose_report import format_report, short_verdict, verdict_line
from countnet.models import model_from_config
from countnet.rundir import RunLogger
from countnet.train import fit
from tests.conftest import tiny_config
from tests.countnet.images import PLAIN

# The old grid scenes in one fixed look, no gradient clipping: the mechanisms' sizes below were
# calibrated so (clipping tames the noisy batch-of-4 BatchNorm runs), and the diagnosis itself
# does not depend on what the scenes look like or how the run was optimised.
# On top of the suite's TINY (its 256 training scenes).
# The sum head without weight averaging, as the sizes were calibrated; the averaging term has
# its own test below.
RUN = {"image_size": 32, "max_count": 8, "width": 16, "depth": 4, "val_size": 128,
       "train_eval_size": 256, "batch_size": 32, "epochs": 2, "threads": 1, **PLAIN,
       "layout": "grid", "grad_clip": 0.0, "pool": "sum", "ema_epochs": 0.0}
MECHANISMS = ("dropout", "batchnorm", "augmentation")


def train_run(tmp_path, **overrides):
    """A real run dir from a tiny config; returns (run_dir, cfg, history)."""
    cfg = tiny_config(RUN, **overrides)
    run = tmp_path / "run"
    with RunLogger(run, cfg) as logger:
        history = fit(cfg, logger).history
    return run, cfg, history


def assert_adds_up(diag) -> None:
    """The rows are an identity: they sum to f - a exactly, and the printed table to rounding."""
    terms = diag.attribution
    assert sum(terms.values()) == pytest.approx(diag.printed_difference, rel=1e-12, abs=1e-12)
    m = diag.measurements
    assert diag.printed_difference == m["f_printed_train_loss"] - m["a_val_loss"]
    # The printed table: each value is rounded to the same number of decimals, so the printed
    # rows may miss the printed total by at most half a unit in the last place per row.
    rows = {}
    for line in format_report(diag).splitlines():
        for key, label, formula in (*TERMS, ("total", "= printed train - val", "f - a")):
            if line.strip().startswith(label) and formula in line:
                rows[key] = line.split(formula, 1)[1].split()[0]
    assert set(rows) == {key for key, _, _ in TERMS} | {"total"}
    decimals = len(rows["total"].split(".")[1])
    printed = sum(float(v) for k, v in rows.items() if k != "total")
    assert abs(printed - float(rows["total"])) <= len(TERMS) * 0.5 * 10 ** -decimals + 1e-12


def test_dropout_term_dominates(tmp_path) -> None:
    run, _, _ = train_run(tmp_path, dropout=0.5, epochs=3, train_size=512, train_eval_size=512)
    diag = diagnose_path(run, samples=512, tensorboard=False)
    assert_adds_up(diag)
    terms = diag.attribution
    assert diag.mechanisms == {"dropout": True, "batchnorm": False, "augmentation": False}
    assert terms["batchnorm"] == 0 and terms["augmentation"] == 0 and terms["interaction"] == 0
    assert max(terms, key=lambda k: abs(terms[k])) == "dropout"
    assert terms["dropout"] > 0.5 * diag.printed_difference > 0
    assert "dropout" in verdict_line(diag)


def test_batchnorm_term_is_large_with_tiny_batches_and_restores_running_stats(tmp_path) -> None:
    """Batches of 4: the batch statistics are noisy, the train-mode loss moves a lot.

    The term's sign is not fixed (eval mode's running statistics can be off too), its size is:
    and on the same weights, batches of 128 (settled statistics) move the loss less.
    """
    run, cfg, _ = train_run(tmp_path, batchnorm=True, batch_size=4, epochs=3)
    diag = diagnose_path(run, samples=256, tensorboard=False)
    assert_adds_up(diag)
    terms = diag.attribution
    assert diag.mechanisms["batchnorm"] and terms["dropout"] == 0 == terms["augmentation"]
    assert abs(terms["batchnorm"]) > 0.1 * diag.measurements["b_train_eval"]
    model, _, history, epoch, _, _ = load_for_diagnosis(run)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    big = diagnose(model, cfg.replace(batch_size=128), load_splits(cfg), history, samples=256,
                   epoch=epoch)
    assert big.attribution["batchnorm"] < terms["batchnorm"]
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats restored
    assert not any(m.training for m in model.modules())  # modes restored (eval)


def test_augmentation_that_changes_counts_gives_a_large_term(tmp_path) -> None:
    run, cfg, _ = train_run(tmp_path, augment="crop", epochs=3, train_size=512,
                            train_eval_size=512)
    diag = diagnose_path(run, samples=512, tensorboard=False)
    assert_adds_up(diag)
    terms = diag.attribution
    assert diag.mechanisms == {"dropout": False, "batchnorm": False, "augmentation": True}
    assert terms["augmentation"] > 0.1 * diag.measurements["b_train_eval"]
    # A count-preserving augmentation on the same weights costs far less.
    model, _, history, epoch, _, _ = load_for_diagnosis(run)
    flips = diagnose(model, cfg.replace(augment="dihedral"), load_splits(cfg), history,
                     samples=512, epoch=epoch)
    assert flips.attribution["augmentation"] < 0.5 * terms["augmentation"]


def test_val_equals_train_control(tmp_path) -> None:
    run, _, history = train_run(tmp_path, val_equals_train=True, val_size=256)
    for m in history:  # the same samples in eval mode: exactly the same loss
        assert m["val_loss"] == m["train_loss_eval"]
        assert m["gap"] == 0
    diag = diagnose_path(run, samples=256, tensorboard=False)
    assert_adds_up(diag)
    assert diag.true_gap == pytest.approx(0, abs=1e-5 * diag.measurements["a_val_loss"])
    assert diag.split["val_duplicates_of_train"] == 256 == diag.split["val_size"]


def _head_lambda_max(cfg: TrainConfig) -> float:
    """Largest curvature of the MSE loss of the linear head on the frozen body's features."""
    torch.manual_seed(cfg.seed)  # the same initial weights as fit() builds
    model = model_from_config(cfg)
    x = load_splits(cfg).train_x
    with torch.no_grad():
        feats = model.body(model.norm(x)).sum((2, 3))  # (N, F): sum pooling
    phi = torch.cat([feats, torch.ones(len(feats), 1)], 1).double()  # (N, F + 1)
    return torch.linalg.eigvalsh(2 * phi.T @ phi / len(phi)).max().item()


@pytest.mark.parametrize(("peak", "sign"), [(0.5, +1), (4.7, -1)])
def test_lag_sign_of_a_rising_lr_run(tmp_path, peak, sign) -> None:
    """Frozen body + linear head + plain SGD: a quadratic problem with a known stability limit.

    lr_range raises the lr exponentially. Peaking at half the limit 2/lambda_max, the loss falls
    all run long: the epoch mean lags above the end-of-epoch loss (lag > 0). Peaking at 4.7 times
    the limit, the lr crosses it about 8 steps before the end and the loss then grows
    geometrically: the end-of-epoch model is worse than the epoch mean (lag < 0).
    """
    cfg = tiny_config(RUN, train_size=512, train_eval_size=512, freeze_body=True,
                      optimizer="sgd", momentum=0.0, schedule="lr_range", precision="fp32")
    lr = peak * 2 / _head_lambda_max(cfg)
    run, _, _ = train_run(tmp_path, **{**cfg.to_dict(), "lr": lr})
    diag = diagnose_path(run, samples=512, tensorboard=False)
    assert_adds_up(diag)
    assert math.copysign(1, diag.attribution["lag"]) == sign
    assert abs(diag.attribution["lag"]) > 0.1 * diag.measurements["t_train_mode"]


def test_all_mechanisms_at_once_add_up_with_an_interaction(tmp_path) -> None:
    run, _, _ = train_run(tmp_path, dropout=0.5, batchnorm=True, batch_size=4, augment="crop",
                          epochs=1)
    diag = diagnose_path(run, samples=128, tensorboard=False)
    assert all(diag.mechanisms[k] for k in MECHANISMS)
    assert diag.attribution["interaction"] != 0
    assert_adds_up(diag)


def test_cli_json_and_tensorboard(tmp_path, capsys) -> None:
    run, _, history = train_run(tmp_path, dropout=0.3)
    assert main(["diagnose", str(run), "--json", "--samples", "64"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["epoch"] == history[-1]["epoch"] == 2
    assert out["measurements"]["f_printed_train_loss"] == history[-1]["train_loss"]
    assert sum(out["attribution"].values()) == pytest.approx(out["printed_difference"])
    assert out["verdict"].startswith("the printed train loss")
    lo, hi = out["split"]["val_loss_ci95"]
    assert lo <= out["measurements"]["a_val_loss"] <= hi
    events = EventAccumulator(str(run), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"diagnose/term_lag", "diagnose/term_dropout", "diagnose/true_gap"} <= set(scalars)
    assert "train_loss" in scalars  # the run's own events are still there
    assert events.Scalars("diagnose/term_dropout")[0].step == 2
    assert any(t.startswith("diagnose/report") for t in events.Tags()["tensors"])


def test_bundle_input_and_short_verdict(tmp_path) -> None:
    run, cfg, history = train_run(tmp_path, dropout=0.5)
    state = load_checkpoint(run / "checkpoints" / "last" / "checkpoint.pt")
    bundle = write_bundle(tmp_path / "bundle", state["model"], cfg, {"history": history})
    diag = diagnose_path(bundle, samples=64)
    assert diag.measurements["f_printed_train_loss"] == history[-1]["train_loss"]
    assert not list(bundle.glob("events.out.tfevents.*"))  # a bundle is no run dir
    assert_adds_up(diag)
    # short_verdict: None unless train_loss > val_loss; cheap from history, full with a model.
    assert short_verdict([{**history[-1], "train_loss": 0.0}]) is None
    assert short_verdict([]) is None
    cheap = short_verdict(history)
    assert history[-1]["train_loss"] > history[-1]["val_loss"] and cheap is not None
    assert f"{history[-1]['train_loss_eval']:.4g}" in cheap
    model, _, _, _, _, _ = load_for_diagnosis(run)
    full = short_verdict(history, model, cfg, load_splits(cfg), samples=64)
    assert full is not None and "dropout" in full


def test_weight_decay_penalty_row() -> None:
    cfg = tiny_config(RUN, optimizer="sgd", weight_decay=1e-2, batchnorm=True)
    model = model_from_config(cfg)
    decayed = [p for n, p in model.named_parameters() if p.ndim > 1]  # conv and linear weights
    expected = 0.5 * 1e-2 * sum(float((p.detach().double() ** 2).sum()) for p in decayed)
    assert weight_decay_penalty(model, cfg) == pytest.approx(expected, rel=1e-12)
    assert weight_decay_penalty(model, cfg.replace(optimizer="adamw")) == 0.0  # decoupled


@pytest.mark.parametrize("make", ["missing", "empty_dir", "junk_checkpoint"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make) -> None:
    target = tmp_path / "x"
    if make == "empty_dir":
        target.mkdir()
    elif make == "junk_checkpoint":
        target = tmp_path / "checkpoint.pt"
        target.write_bytes(b"not a checkpoint")
    assert main(["diagnose", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(target) in err
    assert re.match(r"countnet diagnose: error: ", err)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bf16_rounding_is_its_own_term_and_the_printed_val_loss_matches(tmp_path,
                                                                          precision) -> None:
    """(t) runs in the run's precision, (u) in fp32: bf16 rounding never hides in the lag."""
    run, _, _ = train_run(tmp_path, precision=precision)
    diag = diagnose_path(run, samples=256, tensorboard=False)
    assert_adds_up(diag)
    assert diag.precision == precision
    if precision == "fp32":
        assert diag.attribution["precision"] == 0.0
    else:
        assert diag.attribution["precision"] != 0.0
    # The printed val loss was measured in the run's own precision, and so is its check.
    assert not any("differs from the printed" in n for n in diag.notes)


def assert_averaging_is_its_own_row(run):
    """Diagnose a run dir that evaluates averaged weights: the rows add up, (r) differs from
    (t), and f - a splits into lag (f - r) and averaging (r - t). Returns the diagnosis."""
    diag = diagnose_path(run, samples=256, tensorboard=False)
    assert_adds_up(diag)
    m = diag.measurements
    assert m["r_train_mode_trained_weights"] != m["t_train_mode"]
    assert diag.attribution["averaging"] == pytest.approx(
        m["r_train_mode_trained_weights"] - m["t_train_mode"])
    assert diag.attribution["lag"] == pytest.approx(
        m["f_printed_train_loss"] - m["r_train_mode_trained_weights"])
    return diag


def test_weight_averaging_is_its_own_term_from_a_run_dir_and_noted_for_a_bundle(tmp_path) -> None:
    """The default recipe evaluates an EMA of the weights: (r) uses the trained weights, so
    f - a splits into lag (f - r) and averaging (r - t), and the rows still add up exactly."""
    run, cfg, history = train_run(tmp_path, pool="density", ema_epochs=2.0, epochs=3,
                                  dropout=0.3)
    diag = assert_averaging_is_its_own_row(run)
    assert not any("averaged weights" in n for n in diag.notes)
    # A bundle holds only the averaged weights: (r) = (t), and a note says the lag row holds both.
    state = load_checkpoint(run / "checkpoints" / "last")
    bundle = tmp_path / "bundle"
    write_bundle(bundle, state["model"], cfg, {"history": history})
    from_bundle = diagnose_path(bundle, samples=256, tensorboard=False)
    assert_adds_up(from_bundle)
    assert from_bundle.attribution["averaging"] == 0
    assert any("averaged weights" in n for n in from_bundle.notes)


def test_schedule_free_average_is_the_averaging_term_and_the_rows_add_up(tmp_path) -> None:
    """Schedule-free evaluates its own average (x) and trains another point (y): the same two
    rows as the EMA, and the identity still holds exactly."""
    run, _, _ = train_run(tmp_path, pool="density", schedule="schedulefree", ema_epochs=0.0,
                          warmup_epochs=1.0, epochs=3, dropout=0.3)
    assert_averaging_is_its_own_row(run)
