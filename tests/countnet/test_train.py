from __future__ import annotations

import math

import pytest
import torch

from countnet.checkpoint import load_checkpoint
from countnet.config import ConfigError, TrainConfig
from countnet.train import METRIC_KEYS, Diverged, fit
from tests.countnet.images import PLAIN

# 4 steps an epoch, one thread (a test asserts the thread count).
RUN = {"train_size": 128, "batch_size": 32, "epochs": 2, "threads": 1}


def test_callback_gets_exactly_the_metric_keys_every_epoch(tiny) -> None:
    seen = []
    history = fit(tiny(RUN), lambda m, save: seen.append(m))
    assert [tuple(m) for m in seen] == [METRIC_KEYS, METRIC_KEYS]
    assert [m["epoch"] for m in history] == [1, 2]
    m = history[-1]
    assert m["gap"] == pytest.approx(m["val_loss"] - m["train_loss_eval"])
    assert m["baseline_mse"] > 10  # variance of 0..20 counts
    assert 0 <= m["val_acc"] <= m["val_off_by_one"] <= 1


def test_overfits_one_small_batch_to_near_zero(tiny) -> None:
    # The old grid scenes in one fixed look, constant lr, no clipping: this tests the loop, not
    # the data (free scenes with random looks take a 16-wide net far more than 200 steps).
    # fp32: bf16's rounding floor depends on the CPU (measured on an AMX Xeon: the last 10
    # epochs at 0.21-0.25 in bf16, 0.12-0.14 in fp32), and near-zero is the loop's property.
    cfg = tiny(RUN, PLAIN, layout="grid", train_size=16, batch_size=16, val_size=16, width=16,
               depth=4, epochs=200, lr=3e-3, schedule="constant", grad_clip=0.0,
               precision="fp32")
    history = fit(cfg)
    assert history[-1]["train_loss_eval"] < 0.05 * history[-1]["baseline_mse"]
    assert history[-1]["train_loss_eval"] < 0.2


def test_train_loss_eval_really_is_eval_mode(tiny) -> None:
    """With dropout 0.9 the train-mode loss is far above the same net in eval mode."""
    cfg = tiny(RUN, dropout=0.9, epochs=3, train_size=256)
    history = fit(cfg)
    for m in history[1:]:
        assert m["train_loss"] > m["train_loss_eval"]


def test_resume_gives_the_same_epochs_as_a_straight_run(tmp_path, tiny) -> None:
    cfg = tiny(RUN, epochs=4, dropout=0.3, augment="dihedral")
    straight = fit(cfg)

    def stop_after_two(metrics, save) -> None:
        if metrics["epoch"] == 2:
            save(tmp_path / "ckpt")
            raise KeyboardInterrupt  # a crash after epoch 2's checkpoint

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, stop_after_two)
    resumed = fit(cfg, resume_from=tmp_path / "ckpt")
    timing = ("epoch_time_s", "images_per_s")
    strip = [{k: v for k, v in m.items() if k not in timing} for m in straight]
    again = [{k: v for k, v in m.items() if k not in timing} for m in resumed]
    assert again == strip


def test_checkpoint_loads_weights_only_and_holds_the_config(tmp_path, tiny) -> None:
    cfg = tiny(RUN)
    fit(cfg, lambda m, save: save(tmp_path / f"e{int(m['epoch'])}"))
    state = load_checkpoint(tmp_path / "e2")  # weights_only=True inside
    assert set(state) == {"model", "optimizer", "scheduler", "epoch", "rng", "config", "history"}
    assert TrainConfig.from_dict(state["config"]) == cfg and state["epoch"] == 2
    with pytest.raises(ConfigError, match="other values of lr"):
        fit(cfg.replace(lr=0.5), resume_from=tmp_path / "e2")


def test_huge_lr_diverges_cleanly(tiny) -> None:
    seen = []
    cfg = tiny(RUN, lr=1e6, schedule="constant", epochs=3)
    with pytest.raises(Diverged):
        fit(cfg, lambda m, save: seen.append(m))
    assert seen and not math.isfinite(seen[-1]["train_loss"])


@pytest.mark.parametrize("schedule", ["constant", "onecycle", "cosine", "lr_range"])
def test_schedules_and_optimisers(schedule, tiny) -> None:
    lrs = []
    cfg = tiny(RUN, schedule=schedule, optimizer="sgd", weight_decay=1e-4, lr=1e-3, epochs=3,
               loss="huber")
    fit(cfg, lambda m, save: lrs.append(m["lr_now"]))
    if schedule == "lr_range":
        assert lrs[0] < lrs[1] < lrs[2] <= 1e-3 + 1e-12
    if schedule == "constant":
        assert lrs == [1e-3] * 3
    assert torch.get_num_threads() == 1
