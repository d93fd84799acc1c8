from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from countnet import rundir
from countnet.config import ConfigError, TrainConfig
from countnet.errors import DataError
from countnet.rundir import (
    LAST,
    RunLogger,
    checkpoint_dir,
    checkpoint_path,
    expect_kind,
    kind_of,
    parse_jsonl,
    read_jsonl,
    read_metrics,
)
from countnet.train import METRIC_KEYS, fit

RUN = {"train_size": 96, "val_size": 32, "batch_size": 32, "epochs": 3}  # 3 steps an epoch


def test_run_dir_holds_config_metrics_events_and_checkpoints(tmp_path, tiny) -> None:
    cfg = tiny(RUN)
    with RunLogger(tmp_path, cfg) as logger:
        history = fit(cfg, logger).history
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
    saves = _Saves()
    base = {k: 1.0 for k in METRIC_KEYS}
    with RunLogger(tmp_path / "run", tiny(RUN)) as logger:
        for epoch, val_loss in ((1, 2.0), (2, 1.0), (3, math.nan), (4, math.inf)):
            saves.epoch = epoch
            logger({**base, "epoch": epoch, "val_loss": val_loss}, saves)
    assert saves.calls == [("last", 1), ("best", 1), ("last", 2), ("best", 2)]
    assert logger.last_epoch == 2 and logger.best["epoch"] == 2
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3, 4]


def test_the_event_file_is_closed_when_the_with_block_raises(tmp_path, tiny) -> None:
    """`__exit__` closes the TensorBoard writer on an exception too: its file is closed and
    the thread that writes it ends (TensorBoard opens the file per write, so no file handle
    outlives a write: the writer's own state and its thread are what show it is closed)."""
    class Crash(Exception):
        pass

    before = set(threading.enumerate())
    with pytest.raises(Crash), RunLogger(tmp_path, tiny(RUN)) as logger:
        logger({**{k: 1.0 for k in METRIC_KEYS}, "epoch": 1}, _Saves())
        assert logger.writer.file_writer is not None
        assert set(threading.enumerate()) - before  # the writer's thread, while it is open
        raise Crash
    assert logger.writer.file_writer is None and logger.writer.all_writers is None
    assert not [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert [m["epoch"] for m in read_metrics(tmp_path)] == [1]
    logger.close()  # a second close is harmless


def test_a_used_run_dir_is_never_appended_to(tmp_path, tiny) -> None:
    cfg = tiny(RUN)
    with RunLogger(tmp_path, cfg) as logger:
        logger({**{k: 1.0 for k in METRIC_KEYS}, "epoch": 1}, _Saves())
    with pytest.raises(ConfigError, match="already holds a run"):
        RunLogger(tmp_path, cfg)


def test_a_refused_resume_leaves_the_run_as_it_was(tmp_path, tiny) -> None:
    cfg = tiny(RUN, epochs=1)
    with RunLogger(tmp_path, cfg) as logger:
        fit(cfg, logger)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ConfigError, match="other values of lr"):
        RunLogger(tmp_path, cfg.replace(lr=0.5), resume_from=logger.last_dir)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_parse_jsonl_skips_only_a_torn_last_line() -> None:
    rows = [{"epoch": 1}, {"epoch": 2}]
    assert parse_jsonl('{"epoch": 1}\n\n{"epoch": 2}\n{"epoch": 3, "val', "f") == rows
    assert parse_jsonl('{"epoch": 1}\n{"epoch": 2}\n', "f") == rows
    # Complete without its newline: the closing brace is there, so the row counts.
    assert parse_jsonl('{"epoch": 1}\n{"epoch": 2}', "f") == rows
    assert parse_jsonl('{"epoch": 1}\n{"epoch": 2}\n{"ep\n\n', "f") == rows  # blank after
    assert parse_jsonl("", "f") == []


@pytest.mark.parametrize("text, message", [
    ('{"epoch": 1}\n{"epoch": 2, "val\n{"epoch": 3}\n', r"^r/result\.json:2: not JSON \("),
    ('{"epoch": 1}\n[1, 2]\n{"epoch": 3}\n', r"^r/result\.json:2: not a JSON object, got list$"),
    ('{"epoch": 1}\n7\n', r"^r/result\.json:2: not a JSON object, got int$"),
])
def test_parse_jsonl_names_the_file_and_line_of_a_bad_line(text, message) -> None:
    with pytest.raises(DataError, match=message):
        parse_jsonl(text, "r/result.json")


def test_read_jsonl_reads_a_file_by_the_same_rule(tmp_path) -> None:
    assert read_jsonl(tmp_path / "absent.json") is None
    (tmp_path / "result.json").write_text('{"epoch": 1}\n{"epo')
    assert read_jsonl(tmp_path / "result.json") == [{"epoch": 1}]
    (tmp_path / "result.json").write_text('{"epo\n{"epoch": 1}\n')
    with pytest.raises(DataError, match=r"result\.json:1: not JSON"):
        read_jsonl(tmp_path / "result.json")


def test_checkpoint_paths_of_a_run(tmp_path) -> None:
    assert checkpoint_dir(tmp_path) == tmp_path / "checkpoints" / "best"
    assert checkpoint_path(tmp_path, LAST) == tmp_path / "checkpoints" / "last" / "checkpoint.pt"
    with pytest.raises(ConfigError, match=r"^which: must be best or last, got 'worst'$"):
        checkpoint_path(tmp_path, "worst")


def _files(root: Path, *names: str) -> Path:
    """`root` with an empty JSON file at each of `names` (kind_of reads names only)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("{}")
    return root


@pytest.mark.parametrize("names, kind", [
    (("config.yaml", "metrics.jsonl", "checkpoints/best/checkpoint.pt"), rundir.RUN),
    (("config.yaml",), rundir.RUN),  # stopped in its first epoch
    (("metrics.jsonl",), rundir.RUN),
    (("model.pt", "config.json", "metrics.json"), rundir.BUNDLE),
    (("countnet_search.json",), rundir.EXPERIMENT),
    (("experiment_state-2024-01-01_00-00-00.json",), rundir.EXPERIMENT),
    (("trial_0001/params.json", "trial_0001/result.json"), rundir.EXPERIMENT),
    (("checkpoint.pt", "checkpoint.pt.sha256"), rundir.CHECKPOINT),
    (("model.pt",), None),  # half a bundle
    (("notes.txt",), None),
    ((), None),
])
def test_kind_of_each_kind_of_directory(tmp_path, names, kind) -> None:
    assert kind_of(_files(tmp_path / "d", *names)) == kind


def test_kind_of_files_and_missing_paths(tmp_path) -> None:
    assert kind_of(_files(tmp_path, "last.pt") / "last.pt") == rundir.CHECKPOINT
    assert kind_of(_files(tmp_path, "notes.txt") / "notes.txt") is None
    assert kind_of(tmp_path / "absent") is None
    assert kind_of(tmp_path / "absent.pt") is None


def test_kind_of_a_real_run_and_its_checkpoints(tmp_path, tiny) -> None:
    cfg = tiny(RUN, epochs=1)
    with RunLogger(tmp_path, cfg) as logger:
        fit(cfg, logger)
    assert kind_of(tmp_path) == rundir.RUN
    assert kind_of(checkpoint_dir(tmp_path, LAST)) == rundir.CHECKPOINT
    assert kind_of(checkpoint_path(tmp_path)) == rundir.CHECKPOINT


def test_expect_kind_refuses_in_one_line(tmp_path) -> None:
    accepted = (rundir.RUN, rundir.EXPERIMENT)
    assert expect_kind(_files(tmp_path / "run", "metrics.jsonl"), accepted) == rundir.RUN
    with pytest.raises(ConfigError, match=r"^\S+/absent: no such file or directory$"):
        expect_kind(tmp_path / "absent", accepted)
    with pytest.raises(ConfigError, match=r"/empty: neither a run directory \(config\.yaml or "
                       r"metrics\.jsonl\) nor a search experiment \(countnet_search\.json or "
                       r"trial_\*/params\.json\)$"):
        expect_kind(_files(tmp_path / "empty"), accepted)
    with pytest.raises(ConfigError, match=r"/bundle: a bundle, not a run directory \(.*\) or a "
                       r"search experiment \(.*\)$"):
        expect_kind(_files(tmp_path / "bundle", "model.pt", "config.json"), accepted)
    with pytest.raises(ConfigError, match=r"/empty: not a run directory \(.*\)$"):
        expect_kind(tmp_path / "empty", (rundir.RUN,))


def test_a_run_dir_holding_another_kind_is_refused(tmp_path, tiny) -> None:
    _files(tmp_path, "model.pt", "config.json")
    with pytest.raises(ConfigError, match="already holds a bundle; use an empty directory"):
        RunLogger(tmp_path, tiny(RUN))
