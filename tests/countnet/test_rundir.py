from __future__ import annotations

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from countnet.config import TrainConfig
from countnet.rundir import RunLogger, read_metrics
from countnet.train import METRIC_KEYS, fit

TINY = {"train_size": 96, "val_size": 32, "width": 8, "depth": 3, "batch_size": 32, "epochs": 3}


def test_run_dir_holds_config_metrics_events_and_checkpoints(tmp_path) -> None:
    cfg = TrainConfig.from_dict(TINY)
    logger = RunLogger(tmp_path, cfg)
    history = fit(cfg, logger)
    logger.close()
    assert TrainConfig.from_yaml(tmp_path / "config.yaml") == cfg
    assert read_metrics(tmp_path) == history
    assert (tmp_path / "checkpoints" / "last" / "checkpoint.pt").is_file()
    assert (tmp_path / "checkpoints" / "best" / "checkpoint.pt").is_file()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == set(METRIC_KEYS) - {"epoch"}
    for key in ("train_loss", "train_loss_eval", "val_loss", "gap"):
        values = events.Scalars(key)
        assert [e.step for e in values] == [1, 2, 3]
        # TensorBoard stores float32.
        assert [e.value for e in values] == pytest.approx([m[key] for m in history], rel=1e-6)
