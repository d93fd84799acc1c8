"""The Ray Tune trainable: a thin wrapper that runs `countnet.train.fit` for one trial.

Per epoch it reports every metric of `countnet.train.METRIC_KEYS`, plus where it ran (`node_id`,
`hostname`) and `diverged`, with a checkpoint written by fit's own `save`. A restarted trial
resumes from `tune.get_checkpoint()`. Data comes from `countnet.datasets.load_splits`, which caches
per process: with `reuse_actors=True` later trials in the same worker reuse the tensors.
"""

from __future__ import annotations

import contextlib
import math
import socket
import tempfile
from typing import Any

import ray
from ray import tune as ray_tune  # Ray Tune; `tune` is this package

from countnet.train import Diverged, SaveFn, fit
from tune.optuna_search import DIVERGED_KEY
from tune.space import trial_config


def train_countnet(config: dict[str, Any]) -> None:
    """Train one trial's config; a diverged trial ends normally, marked `diverged`."""
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
            ray_tune.report({**metrics, **where, DIVERGED_KEY: False},
                        checkpoint=ray_tune.Checkpoint.from_directory(tmp))

    checkpoint = ray_tune.get_checkpoint()
    resume = checkpoint.as_directory() if checkpoint else contextlib.nullcontext()
    # A diverged trial was reported (marked `diverged`) above; it ends and the search goes on.
    with resume as resume_dir, contextlib.suppress(Diverged):
        fit(cfg, on_epoch_end, resume_from=resume_dir)
