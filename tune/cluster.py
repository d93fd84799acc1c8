"""Connecting to Ray, and refusing trial requests that no node of the cluster can ever run."""

from __future__ import annotations

import os

import ray

from countnet.config import ConfigError


class ResourceError(ConfigError):
    """A trial asks for more than any node has: it would stay PENDING forever."""


def connect(address: str | None) -> bool:
    """Join `address` (auto | HOST:PORT), or start an embedded local Ray when None.

    Returns True when this call started Ray (the caller then shuts it down). An already
    initialised Ray (e.g. a test's) is reused. The embedded Ray has no dashboard; Ray's token
    authentication is left as Ray configures it.
    """
    # Quiet the "snapshot triggered often" warning: per-epoch checkpoints are the design.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return False
    if address is None:
        # "local": always a new single-machine Ray, never a cluster found via RAY_ADDRESS or
        # /tmp/ray/ray_current_cluster. No dashboard for an embedded run.
        ray.init(address="local", include_dashboard=False, logging_level="WARNING")
    else:
        ray.init(address=address, logging_level="WARNING")
    return True


def check_resources(cpu: float, gpu: float) -> None:
    """Fail fast when no alive node can hold one trial's request."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if gpu > 0 and not any(n.get("GPU", 0.0) > 0 for n in nodes):
        raise ResourceError(f"resources_per_trial.gpu: {gpu:g} GPU per trial, but the Ray "
                            f"cluster has no GPU; set gpu: 0")
    if not any(n.get("CPU", 0.0) >= cpu and n.get("GPU", 0.0) >= gpu for n in nodes):
        largest = ", ".join(f"{n.get('CPU', 0):g} CPU + {n.get('GPU', 0):g} GPU" for n in nodes)
        raise ResourceError(f"resources_per_trial: {cpu:g} CPU + {gpu:g} GPU per trial, but no "
                            f"node has that much (nodes: {largest})")
