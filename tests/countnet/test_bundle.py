"""`load_model`: a run dir's best or last checkpoint (`which`), through the run-dir layout."""

from __future__ import annotations

import pytest
import torch

from countnet.bundle import load_model
from countnet.checkpoint import load_checkpoint
from countnet.config import ConfigError
from countnet.rundir import BEST, LAST, RunLogger, checkpoint_path
from countnet.train import fit

# 3 steps an epoch, 2 epochs: epoch 2's weights differ from epoch 1's.
RUN = {"train_size": 96, "val_size": 32, "batch_size": 32, "epochs": 2}


def test_load_model_takes_the_best_or_the_last_checkpoint_of_a_run(tmp_path, tiny) -> None:
    cfg = tiny(RUN)
    with RunLogger(tmp_path, cfg) as logger:
        def worse_second_epoch(metrics, save) -> None:
            # Epoch 2 logged as worse, so checkpoints/best keeps epoch 1 and last holds epoch 2.
            logger({**metrics,
                    "val_loss": metrics["val_loss"] + 100.0 * (metrics["epoch"] == 2)}, save)

        fit(cfg, worse_second_epoch)
    saved = {w: load_checkpoint(checkpoint_path(tmp_path, w)) for w in (BEST, LAST)}
    assert saved[BEST]["epoch"] == 1 and saved[LAST]["epoch"] == 2
    for which, kwargs in ((BEST, {}), (BEST, {"which": "best"}), (LAST, {"which": "last"})):
        model, loaded = load_model(tmp_path, **kwargs)
        assert loaded == cfg
        state = model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in saved[which]["model"].items())
    best, last = load_model(tmp_path)[0].state_dict(), load_model(tmp_path, which=LAST)[0]
    assert any(not torch.equal(best[k], v) for k, v in last.state_dict().items())


def test_load_model_refuses_another_which_in_one_line(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"^which: must be best or last, got 'first'$"):
        load_model(tmp_path, which="first")


def test_a_run_without_the_checkpoint_is_named(tmp_path) -> None:
    (tmp_path / "config.yaml").write_text("model: simple\n")  # a run stopped in its 1st epoch
    with pytest.raises(FileNotFoundError, match=r"a run dir without checkpoints/last/"):
        load_model(tmp_path, which=LAST)
