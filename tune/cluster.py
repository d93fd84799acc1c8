"""Connecting to Ray, and refusing trial requests that no node of the cluster can ever run."""

from __future__ import annotations

import os
from pathlib import Path

import ray
import yaml

from countnet.config import ConfigError

# Written by the cluster launcher on the head node; Ray Tune's own test for an autoscaling
# cluster (ray.tune.execution.cluster_info._is_ray_cluster). Expanded at call time.
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
# How often Ray saves the experiment and searcher state (Ray's "auto" is >= 10 s). What happens
# after the last save is forgotten when a killed driver is resumed; each save uploads the state
# to cloud storage, so not 0.
GLOBAL_CHECKPOINT_S = "3"
TOKEN_FIX = ("set RAY_AUTH_MODE=token and the cluster's token (~/.ray/auth_token, "
             "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)")


class ResourceError(ConfigError):
    """A trial asks for more than any node has: it would stay PENDING forever."""


def connect(address: str | None, log_to_driver: bool = True) -> bool:
    """Join `address` (auto | HOST:PORT), or start an embedded local Ray when None.

    Returns True when this call started Ray (the caller then shuts it down). An already
    initialised Ray (e.g. a test's) is reused. The embedded Ray has no dashboard; Ray's token
    authentication is left as Ray configures it. `log_to_driver=False` keeps the workers'
    output in Ray's log files instead of this terminal (a quiet `countnet search`).
    """
    # Quiet the "snapshot triggered often" warning: per-epoch checkpoints are the design.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", GLOBAL_CHECKPOINT_S)
    if ray.is_initialized():
        return False
    if address is None:
        # "local": always a new single-machine Ray, never a cluster found via RAY_ADDRESS or
        # /tmp/ray/ray_current_cluster. No dashboard for an embedded run.
        ray.init(address="local", include_dashboard=False, logging_level="WARNING",
                 log_to_driver=log_to_driver)
        return True
    try:
        ray.init(address=address, logging_level="WARNING", log_to_driver=log_to_driver)
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
        # Without RAY_AUTH_MODE=token Ray sends no token to HOST:PORT and retries for ~35 s.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--address {address}: cannot join the Ray cluster ({reason}); check "
                          f"the address, and for a token cluster {TOKEN_FIX}") from exc
    return True


def launchable_node_types() -> list[dict[str, float]]:
    """Resources of the node types the autoscaler may start ([] off a launcher cluster)."""
    path = Path(BOOTSTRAP_CONFIG).expanduser()
    if not path.is_file():
        return []
    types = (yaml.safe_load(path.read_text()) or {}).get("available_node_types") or {}
    return [dict(t.get("resources") or {}) for t in types.values()
            if t.get("max_workers", 0) > 0]


def check_resources(cpu: float, gpu: float) -> None:
    """Fail fast when neither an alive node nor a node type the autoscaler can launch can hold
    one trial's request."""
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")] + launchable_node_types()
    if gpu > 0 and not any(n.get("GPU", 0.0) > 0 for n in nodes):
        raise ResourceError(f"resources_per_trial.gpu: {gpu:g} GPU per trial, but the Ray "
                            f"cluster has no GPU; set gpu: 0")
    if not any(n.get("CPU", 0.0) >= cpu and n.get("GPU", 0.0) >= gpu for n in nodes):
        largest = ", ".join(f"{n.get('CPU', 0):g} CPU + {n.get('GPU', 0):g} GPU" for n in nodes)
        raise ResourceError(f"resources_per_trial: {cpu:g} CPU + {gpu:g} GPU per trial, but no "
                            f"node has that much (nodes: {largest})")
