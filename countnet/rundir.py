"""What countnet keeps on disk: the run directory, and the layout every command reads.

A run directory (`countnet train`):

RUN/config.yaml            the resolved TrainConfig
RUN/metrics.jsonl          one JSON line per epoch (METRIC_KEYS); a NaN or inf is written as null
RUN/events.out.tfevents.*  every metric as a TensorBoard scalar at step = epoch
RUN/checkpoints/last/      the latest finite epoch (resume from here)
RUN/checkpoints/best/      the finite epoch with the lowest val_loss so far
RUN/suite.json             the best checkpoint on the shift suite (countnet.suite)

An epoch with a NaN or inf metric (a diverged one) is logged but never checkpointed: `last` and
`best` keep the last finite weights.

This module owns the layout, so each rule is here once:
- where a run keeps its checkpoints (`checkpoint_dir`, `checkpoint_path`; `countnet.bundle`'s
  `load_model(path, which=...)` loads through them);
- the one writer of metrics.jsonl (`RunLogger`, `write_metrics`, `metrics_line`) and the one
  reader of JSON-lines files, metrics.jsonl and Ray's result.json alike (`parse_jsonl`: a torn
  last line is skipped, any other bad line is a DataError naming the file and line);
- what a path is (`kind_of`: a run, bundle, experiment or checkpoint), decided by the file names
  below; `expect_kind` is the one-line refusal of a path a command cannot take. The bundle and
  experiment names live here rather than in `countnet.bundle` and `countnet.experiment`, which
  import them: both of those need `kind_of`, and it needs the names.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter

from countnet.checkpoint import CHECKPOINT_FILE, load_checkpoint
from countnet.config import ConfigError, TrainConfig
from countnet.errors import DataError
from countnet.folder import read_text
from countnet.formatting import nan_to_null
from countnet.outdir import OutputKind
from countnet.train import RESUME_FREE_FIELDS, SaveFn

BEST_METRIC = "val_loss"  # lower is better
SUITE_FILE = "suite.json"  # written by `countnet train` (countnet.suite.record_suite)

# ---- the layout: the names by which each kind of directory is known -------------------------
RUN, BUNDLE, EXPERIMENT, CHECKPOINT = "run", "bundle", "experiment", "checkpoint"  # kind_of
RUN_CONFIG_FILE = "config.yaml"  # RUN/: the resolved TrainConfig, written first
METRICS_FILE = "metrics.jsonl"  # RUN/: one JSON line per epoch
CHECKPOINTS_DIR = "checkpoints"  # RUN/checkpoints/{best,last}/checkpoint.pt
BEST, LAST = "best", "last"  # which checkpoint of a run: lowest BEST_METRIC, latest finite
WHICH = (BEST, LAST)
BUNDLE_MODEL_FILE = "model.pt"  # a bundle's state_dict (countnet.bundle)
BUNDLE_CONFIG_FILE = "config.json"  # a bundle's TrainConfig, input and sha256
BUNDLE_METRICS_FILE = "metrics.json"  # a bundle's provenance and figures
SEARCH_INFO_FILE = "countnet_search.json"  # an experiment's target, metric, mode, seed, space
PARAMS_FILE = "params.json"  # Ray: a trial's config, in each trial directory of an experiment
EXPERIMENT_STATE_GLOB = "experiment_state-*.json"  # Ray: the state of an experiment
# What each kind is called, and the files that make it one, for messages.
KIND_NOUNS = {RUN: "a run directory", BUNDLE: "a bundle", EXPERIMENT: "a search experiment",
              CHECKPOINT: "a checkpoint"}
KIND_FILES = {RUN: f"{RUN_CONFIG_FILE} or {METRICS_FILE}",
              BUNDLE: f"{BUNDLE_MODEL_FILE} + {BUNDLE_CONFIG_FILE}",
              EXPERIMENT: f"{SEARCH_INFO_FILE} or trial_*/{PARAMS_FILE}",
              CHECKPOINT: f"a .pt file, or a directory holding {CHECKPOINT_FILE}"}


def kind_of(path: str | Path) -> str | None:
    """What `path` is, from the names of the files in it (none is opened).

    The first that applies wins, so that a path is one kind only:
    1. a `.pt` file: CHECKPOINT;
    2. a directory holding model.pt and config.json: BUNDLE;
    3. one holding countnet_search.json, Ray's experiment_state-*.json or a trial directory's
       params.json: EXPERIMENT;
    4. one holding config.yaml or metrics.jsonl: RUN (`countnet train` writes config.yaml
       before the first epoch, so a run stopped in its first epoch is one too);
    5. one holding checkpoint.pt (a run's checkpoints/best, a search trial's checkpoint):
       CHECKPOINT.

    Args:
        path: a file or directory; one that does not exist is None.

    Returns:
        RUN, BUNDLE, EXPERIMENT, CHECKPOINT, or None for anything else.
    """
    p = Path(path)
    if p.is_file():
        return CHECKPOINT if p.suffix == ".pt" else None
    if not p.is_dir():
        return None
    if (p / BUNDLE_MODEL_FILE).is_file() and (p / BUNDLE_CONFIG_FILE).is_file():
        return BUNDLE
    if ((p / SEARCH_INFO_FILE).is_file() or any(p.glob(EXPERIMENT_STATE_GLOB))
            or any(p.glob(f"*/{PARAMS_FILE}"))):
        return EXPERIMENT
    if (p / RUN_CONFIG_FILE).is_file() or (p / METRICS_FILE).is_file():
        return RUN
    if (p / CHECKPOINT_FILE).is_file():
        return CHECKPOINT
    return None


def expect_kind(path: str | Path, accepted: tuple[str, ...]) -> str:
    """The kind of `path` (`kind_of`) when it is one of `accepted`, else ConfigError.

    The message is one line that names the path, what it is (when it is some other kind) and
    what would do, e.g. `x: neither a run directory (config.yaml or metrics.jsonl) nor a search
    experiment (...)`.

    Args:
        path: the path a command was given.
        accepted: the kinds the command takes, in the order to name them.
    """
    p = Path(path)
    kind = kind_of(p)
    if kind in accepted:
        return kind
    if not p.exists():
        raise ConfigError(f"{p}: no such file or directory")
    wanted = [f"{KIND_NOUNS[k]} ({KIND_FILES[k]})" for k in accepted]
    if kind is not None:
        raise ConfigError(f"{p}: {KIND_NOUNS[kind]}, not " + _listing(wanted, "or"))
    if len(wanted) == 1:
        raise ConfigError(f"{p}: not {wanted[0]}")
    raise ConfigError(f"{p}: neither " + _listing(wanted, "nor"))


def _listing(items: list[str], last: str) -> str:
    """`a, b <last> c`."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def checkpoint_dir(run_dir: str | Path, which: str = BEST) -> Path:
    """The directory holding a run's `which` checkpoint: RUN/checkpoints/{best,last}.

    Args:
        run_dir: the run directory.
        which: BEST (the lowest val_loss) or LAST (the latest finite epoch).

    Raises:
        ConfigError: `which` is neither.
    """
    if which not in WHICH:
        raise ConfigError(f"which: must be {' or '.join(WHICH)}, got {which!r}")
    return Path(run_dir) / CHECKPOINTS_DIR / which


def checkpoint_path(run_dir: str | Path, which: str = BEST) -> Path:
    """The checkpoint file of a run's `which` checkpoint (`checkpoint_dir`/checkpoint.pt).

    Args:
        run_dir: the run directory.
        which: BEST or LAST.
    """
    return checkpoint_dir(run_dir, which) / CHECKPOINT_FILE


RUN_OUTPUT = OutputKind("run dir", lambda p: kind_of(p) == RUN,
                        f"it has no {KIND_FILES[RUN]}")


def finite_epoch(metrics: dict[str, Any]) -> bool:
    """Every number of the epoch is finite: its weights may be checkpointed and ranked."""
    return all(math.isfinite(v) for v in metrics.values() if isinstance(v, (int, float)))


class RunLogger:
    """An `on_epoch_end` callback that writes everything a run leaves behind, every epoch.

    `resume_from` (a checkpoint of this run) continues a run: metrics.jsonl is rewritten from
    the checkpoint's own history, which drops a line torn by a crash and any epoch logged after
    the checkpoint, so the log and the weights agree. Without it the directory must hold no run
    (nor a bundle, an experiment or a checkpoint: `kind_of`).

    A context manager: `with RunLogger(out, cfg) as logger: fit(cfg, logger)` closes the
    TensorBoard writer (its file handle and thread) however the block ends.
    """

    def __init__(self, out_dir: str | Path, cfg: TrainConfig, *,
                 resume_from: str | Path | None = None) -> None:
        self.dir = Path(out_dir)
        self.last_dir = checkpoint_dir(self.dir, LAST)
        self.best_dir = checkpoint_dir(self.dir, BEST)
        self.last_epoch: int | None = None  # the epoch checkpoints/last holds
        history: list[dict[str, Any]] = []
        if resume_from is not None:
            state = load_checkpoint(resume_from)
            # fit() refuses other values too, but only after this logger would have rewritten
            # the log: check first, so that a refused resume leaves the run as it was.
            saved = TrainConfig.from_dict(state["config"]).to_dict()
            diff = [k for k, v in cfg.to_dict().items()
                    if k not in RESUME_FREE_FIELDS and saved[k] != v]
            if diff:
                raise ConfigError(f"resume: checkpoint {resume_from} was trained with other "
                                  f"values of {', '.join(diff)}")
            history = [dict(h) for h in state["history"]]
            self.last_epoch = int(state["epoch"])
        elif (kind := kind_of(self.dir)) is not None:  # never append a second run to the first
            what = "resume it or use" if kind == RUN else "use"
            raise ConfigError(f"{self.dir}: already holds a {kind}; {what} an empty directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        cfg.save_yaml(self.dir / RUN_CONFIG_FILE)
        if resume_from is not None:
            write_metrics(self.dir, history)
        self.writer = SummaryWriter(log_dir=str(self.dir))
        # A resumed run keeps its best epoch so far.
        finite = [m for m in history if finite_epoch(m)]
        self.best = min(finite, key=lambda m: m[BEST_METRIC]) if finite else None

    def __call__(self, metrics: dict[str, float], save: SaveFn) -> None:
        epoch = int(metrics["epoch"])
        finite = finite_epoch(metrics)
        if finite:
            # Checkpoint first: metrics.jsonl never lists a finite epoch that cannot be resumed.
            save(self.last_dir)
            self.last_epoch = epoch
        with (self.dir / METRICS_FILE).open("a") as f:
            f.write(metrics_line(metrics) + "\n")
        for key, value in metrics.items():
            if key != "epoch":
                self.writer.add_scalar(key, value, epoch)
        self.writer.flush()
        if finite and (self.best is None or metrics[BEST_METRIC] < self.best[BEST_METRIC]):
            self.best = dict(metrics)
            save(self.best_dir)

    def close(self) -> None:
        """Flush and close the TensorBoard event file; closing twice is harmless."""
        self.writer.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        # An exception in the block (Diverged, Ctrl-C) still closes the event file; it is
        # never swallowed (None is returned).
        self.close()


def metrics_line(metrics: dict[str, Any]) -> str:
    """One strict-JSON line: NaN and inf become null (JSON has neither)."""
    return json.dumps(nan_to_null(metrics), allow_nan=False)


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Replace metrics.jsonl by `history`, atomically (temp file + rename)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{METRICS_FILE}.", dir=run_dir)
    with os.fdopen(fd, "w") as f:
        f.writelines(metrics_line(m) + "\n" for m in history)
    os.replace(tmp, run_dir / METRICS_FILE)


def parse_jsonl(text: str, where: str) -> list[dict[str, Any]]:
    """The rows of a JSON-lines text (metrics.jsonl, Ray's result.json), one JSON object a line.

    The one rule for a torn file: a crash while a line was being written leaves it cut short,
    and only the last line can be (each writer appends whole lines), so a last line that is not
    JSON is skipped: the rows before it stand. Any other line that is not a JSON object is a
    DataError naming `where` and the line. Blank lines are skipped. A complete last line counts
    with or without its newline: an object parses only when its closing brace is there.

    Args:
        text: the file's text.
        where: the file, for messages.
    """
    numbered = [(n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    rows = []
    for n, line in numbered:
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            if n == numbered[-1][0]:
                break
            raise DataError(f"{where}:{n}: not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}:{n}: not a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def read_jsonl(path: str | Path) -> list[dict[str, Any]] | None:
    """`parse_jsonl` of a local file; None when there is no such file.

    Args:
        path: the file.

    Raises:
        DataError: it cannot be read, is not UTF-8, or a line other than the last is bad.
    """
    p = Path(path)
    if not p.is_file():
        return None
    return parse_jsonl(read_text(p), str(p))


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The per-epoch metrics a run logged (its metrics.jsonl, `parse_jsonl`); null reads back
    as NaN.

    Args:
        run_dir: the run directory.

    Raises:
        DataError: no metrics.jsonl, or a bad line (`parse_jsonl`).
    """
    path = Path(run_dir) / METRICS_FILE
    rows = read_jsonl(path)
    if rows is None:
        raise DataError(f"{path}: missing")
    return [{k: math.nan if v is None else v for k, v in row.items()} for row in rows]
