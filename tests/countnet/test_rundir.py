from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from countnet.config import ConfigError, TrainConfig
from countnet.errors import DataError
from countnet.rundir import RunLogger, read_metrics
from countnet.train import METRIC_KEYS, fit

RUN = {"train_size": 96, "val_size": 32, "batch_size": 32, "epochs": 3}  # 3 steps an epoch


def test_run_dir_holds_config_metrics_events_and_checkpoints(tmp_path, tiny) -> None:
    cfg = tiny(RUN)
    logger = RunLogger(tmp_path, cfg)
    history = fit(cfg, logger).history
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


def test_metrics_are_strict_json_and_read_back_as_nan(tmp_path) -> None:
    from countnet.rundir import metrics_line

    line = metrics_line({"epoch": 3, "train_loss": math.nan, "val_loss": math.inf, "lr": 0.1})
    assert json.loads(line, parse_constant=pytest.fail)["train_loss"] is None
    (tmp_path / "metrics.jsonl").write_text(line + "\n")
    [row] = read_metrics(tmp_path)
    assert math.isnan(row["train_loss"]) and math.isnan(row["val_loss"]) and row["lr"] == 0.1


def test_read_metrics_skips_a_torn_last_line_and_names_a_bad_one(tmp_path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3, "val_lo')
    assert read_metrics(tmp_path) == [{"epoch": 1}, {"epoch": 2}]
    path.write_text('{"epoch": 1}\n{"epoch": 2, "val_lo\n{"epoch": 3}\n')
    with pytest.raises(DataError, match=r"metrics\.jsonl:2: not JSON"):
        read_metrics(tmp_path)


class _Saves:
    """A stand-in for fit's `save`: records which directories got which epoch."""

    def __init__(self) -> None:
        self.epoch = 0
        self.calls: list[tuple[str, int]] = []

    def __call__(self, directory) -> Path:
        self.calls.append((Path(directory).name, self.epoch))
        return Path(directory)


def test_a_non_finite_epoch_is_logged_but_never_checkpointed(tmp_path, tiny) -> None:
    logger = RunLogger(tmp_path / "run", tiny(RUN))
    saves = _Saves()
    base = {k: 1.0 for k in METRIC_KEYS}
    for epoch, val_loss in ((1, 2.0), (2, 1.0), (3, math.nan), (4, math.inf)):
        saves.epoch = epoch
        logger({**base, "epoch": epoch, "val_loss": val_loss}, saves)
    logger.close()
    assert saves.calls == [("last", 1), ("best", 1), ("last", 2), ("best", 2)]
    assert logger.last_epoch == 2 and logger.best["epoch"] == 2
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3, 4]


def test_a_used_run_dir_is_never_appended_to(tmp_path, tiny) -> None:
    cfg = tiny(RUN)
    logger = RunLogger(tmp_path, cfg)
    logger({**{k: 1.0 for k in METRIC_KEYS}, "epoch": 1}, _Saves())
    logger.close()
    with pytest.raises(ConfigError, match="already holds a run"):
        RunLogger(tmp_path, cfg)


def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path, tiny) -> None:
    cfg = tiny(RUN, epochs=1)
    logger = RunLogger(tmp_path, cfg)
    fit(cfg, logger)
    logger.close()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="other values of lr"):
        RunLogger(tmp_path, cfg.replace(lr=0.5), resume_from=logger.last_dir)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
