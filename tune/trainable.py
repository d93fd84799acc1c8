"""The Ray Tune trainable: a thin wrapper that runs `countnet.train.fit` for one trial.

Per epoch it reports every metric of `countnet.train.METRIC_KEYS`, plus where it ran (`node_id`,
`hostname`) and `diverged`, with a checkpoint written by fit's own `save`. A restarted trial
resumes from `tune.get_checkpoint()`. Data comes from `countnet.datasets.load_splits`, which caches
per process: with `reuse_actors=True` later trials in the same worker reuse the tensors.
"""

from __future__ import annotations

import contextlib
import math
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray import tune as ray_tune  # Ray Tune; `tune` is this package

from countnet.checkpoint import load_checkpoint
from countnet.experiment import DIVERGED_KEY
from countnet.train import Diverged, SaveFn, fit
from tune.optuna_space import trial_config

BEST_VAL_DIR = "best_val"  # inside an overfit search's checkpoint: the min-val_loss epoch's


def train_countnet(config: dict[str, Any]) -> None:
    """Train one trial's config; a diverged trial ends normally, marked `diverged`."""
    _train(config, keep_best_val=False)


def train_countnet_overfit(config: dict[str, Any]) -> None:
    """`train_countnet` for the target `overfit`: every checkpoint also holds, in `best_val/`, the
    checkpoint of the trial's min-val_loss epoch so far (Ray keeps the max-gap one), so that
    `countnet export --epoch best-val` can export the early-stopped twin of the baseline."""
    _train(config, keep_best_val=True)


def _train(config: dict[str, Any], keep_best_val: bool) -> None:
    """Train one trial's config.

    Args:
        config: the trial's Ray config.
        keep_best_val: copy the min-val_loss epoch's checkpoint into every checkpoint.
    """
    # torch's intra-op threads follow the CPUs Ray gave this trial.
    cpus = ray_tune.get_context().get_trial_resources().required_resources.get("CPU", 1)
    cfg = trial_config(config).replace(threads=max(1, int(cpus)))
    where = {"node_id": ray.get_runtime_context().get_node_id(), "hostname": socket.gethostname()}

    def on_epoch_end(metrics: dict[str, float], save: SaveFn) -> None:
        # fit raises Diverged right after an epoch whose train loss is not finite.
        diverged = not math.isfinite(metrics["train_loss"])
        if not all(math.isfinite(v) for v in metrics.values()):
            # No checkpoint: a NaN/inf epoch must never be ranked, kept or exported.
            ray_tune.report({**metrics, **where, DIVERGED_KEY: diverged})
            return
        with tempfile.TemporaryDirectory() as tmp:
            save(tmp)
            if keep_best_val:
                if metrics["val_loss"] < best_val[0]:
                    best_val[0] = metrics["val_loss"]
                    shutil.rmtree(best_dir, ignore_errors=True)
                    shutil.copytree(tmp, best_dir)
                shutil.copytree(best_dir, Path(tmp) / BEST_VAL_DIR)
            ray_tune.report({**metrics, **where, DIVERGED_KEY: False},
                        checkpoint=ray_tune.Checkpoint.from_directory(tmp))

    checkpoint = ray_tune.get_checkpoint()
    resume = checkpoint.as_directory() if checkpoint else contextlib.nullcontext()
    best_val = [math.inf]  # the min val_loss so far, whose checkpoint is in best_dir
    # A diverged trial was reported (marked `diverged`) above; it ends and the search goes on.
    with resume as resume_dir, tempfile.TemporaryDirectory() as keep, \
            contextlib.suppress(Diverged):
        best_dir = Path(keep) / BEST_VAL_DIR
        if keep_best_val and resume_dir is not None and (Path(resume_dir) / BEST_VAL_DIR).is_dir():
            shutil.copytree(Path(resume_dir) / BEST_VAL_DIR, best_dir)  # a restarted trial
            best_val[0] = float(load_checkpoint(best_dir)["history"][-1]["val_loss"])
        fit(cfg, on_epoch_end, resume_from=resume_dir)
