"""Connecting to Ray for a search (quietly unless -v), and refusing trial requests that no node
of the cluster can ever run."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import optuna
import ray
import yaml

from countnet.config import ConfigError
from countnet.runtime import omp_env

# Written by the cluster launcher on the head node; Ray Tune's own test for an autoscaling
# cluster (ray.tune.execution.cluster_info._is_ray_cluster). Expanded at call time.
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
# How often Ray saves the experiment and searcher state (Ray's "auto" is >= 10 s). What happens
# after the last save is forgotten when a killed driver is resumed; each save uploads the state
# to cloud storage, so not 0.
GLOBAL_CHECKPOINT_S = "3"
TOKEN_FIX = ("set RAY_AUTH_MODE=token and the cluster's token (~/.ray/auth_token, "
             "RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN)")
# Ray's own output engine prints its experiment box and a tensorboard hint into its session
# directory even at verbose=0; its legacy engine prints nothing at verbose=0. Set while a quiet
# search runs (Ray reads it when the run starts).
LEGACY_OUTPUT_ENV = {"RAY_AIR_NEW_OUTPUT": "0"}
# On Ctrl+C Ray's tune.run logs a "Resume experiment with: Tuner.restore(...)" warning; countnet
# prints its own `--resume` command. Raised to ERROR while a quiet search runs.
RAY_TUNE_RUN_LOGGER = "ray.tune.tune"
# Ray's background sync of the driver's staging folder can list the searcher's state file while
# Searcher.save_to_dir writes it (as ".<uuid>-tmp-searcher-state-...pkl") and try to copy it after
# it was renamed: a FileNotFoundError, logged with a 30-line traceback by these two loggers. The
# next sync copies the renamed file, so that one race is dropped; any other sync failure shows.
RAY_SYNC_LOGGERS = ("ray.train._internal.syncer", "ray.tune.execution.experiment_state")
SEARCHER_TMP_FILE = "-tmp-searcher-state"
# Ray (2.5x) turns token authentication on by itself for a new local Ray when RAY_AUTH_MODE is
# unset (writing a token to ~/.ray/auth_token if there is none), and says so at every start with
# a WARNING, "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to
# opt out. ...", which printed before `make search`'s own first line. Token authentication on is
# what countnet wants, so the line asks nothing of the user: that one record is dropped while
# countnet starts or joins Ray; Ray's other authentication messages (e.g. that it is disabled, or
# a token is missing) still show. Setting RAY_AUTH_MODE=token here instead would not do: the
# driver reads Ray's config when it imports ray, so the new GCS would ask for a token that the
# driver never sends (tried with Ray 2.60: "InvalidAuthToken" until ray.init gives up).
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
AUTH_ENABLED_NOTE = "Token authentication is enabled for this Ray cluster"
# Set by `ray job submit` in the driver: the job's config, its runtime_env included. Ray refuses
# ray.init's runtime_env when both set one environment variable.
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


class SearcherStateRace(logging.Filter):
    """Drops Ray's log records of a sync that lost the race with a searcher-state save."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        return not ("FileNotFoundError" in text and SEARCHER_TMP_FILE in text)


class TokenAuthNote(logging.Filter):
    """Drops Ray's note that it turned token authentication on (`AUTH_ENABLED_NOTE`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(AUTH_ENABLED_NOTE)


@contextlib.contextmanager
def _without_auth_note() -> Iterator[None]:
    """`TokenAuthNote` on Ray's authentication logger while `ray.init` runs."""
    auth_logger = logging.getLogger(RAY_AUTH_LOGGER)
    note = TokenAuthNote()
    auth_logger.addFilter(note)
    try:
        yield
    finally:
        auth_logger.removeFilter(note)


class ResourceError(ConfigError):
    """A trial asks for more than any node has: it would stay PENDING forever."""


def connect(address: str | None, log_to_driver: bool = True) -> bool:
    """Join `address` (auto | HOST:PORT), or start an embedded local Ray when None.

    Returns True when this call started Ray (the caller then shuts it down). An already
    initialised Ray (e.g. a test's) is reused. The embedded Ray has no dashboard; Ray's token
    authentication is left as Ray configures it (on, unless RAY_AUTH_MODE says otherwise),
    without Ray's note that it is on (`TokenAuthNote`). `log_to_driver=False` keeps the
    workers' output in Ray's log files instead of this terminal (a quiet `countnet search`).
    """
    # Quiet the "snapshot triggered often" warning: per-epoch checkpoints are the design.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", GLOBAL_CHECKPOINT_S)
    if ray.is_initialized():
        return False
    if address is None:
        # The embedded Ray's processes inherit this environment: its trial workers start with
        # OMP_WAIT_POLICY set before they import torch (countnet.runtime).
        os.environ.update(omp_env())
        # "local": always a new single-machine Ray, never a cluster found via RAY_ADDRESS or
        # /tmp/ray/ray_current_cluster. No dashboard for an embedded run.
        with _without_auth_note():
            ray.init(address="local", include_dashboard=False, logging_level="WARNING",
                     log_to_driver=log_to_driver)
        return True
    try:
        # A cluster's workers were started by its nodes, not from here: they get the variables
        # as the job's runtime env.
        with _without_auth_note():  # `auto` with a token found: Ray turns it on and says so
            ray.init(address=address, logging_level="WARNING", log_to_driver=log_to_driver,
                     runtime_env={"env_vars": cluster_env_vars()})
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
        # Without RAY_AUTH_MODE=token Ray sends no token to HOST:PORT and retries for ~35 s.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--address {address}: cannot join the Ray cluster ({reason}); check "
                          f"the address, and for a token cluster {TOKEN_FIX}") from exc
    return True


def cluster_env_vars() -> dict[str, str]:
    """The environment variables a cluster's trial workers get (`omp_env`), less those that a
    job submitted with its own runtime env (`ray job submit --runtime-env`) sets: the job's
    value wins, as a user's own setting does (and Ray refuses two values of one variable)."""
    env = omp_env()
    job_text = os.environ.get(RAY_JOB_CONFIG_ENV)
    if job_text:
        with contextlib.suppress(ValueError, AttributeError, TypeError):
            job_env = (json.loads(job_text).get("runtime_env") or {}).get("env_vars") or {}
            env = {k: v for k, v in env.items() if k not in job_env}
    return env


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


@contextlib.contextmanager
def quiet_logs(verbose: int) -> Iterator[None]:
    """With verbose 0: Ray's legacy (silent) output engine, Optuna's INFO lines off, and Ray
    Tune's "Tuner.restore" hint after Ctrl+C off (countnet prints its own --resume command)."""
    if verbose:
        yield
        return
    optuna_level = optuna.logging.get_verbosity()
    tune_logger = logging.getLogger(RAY_TUNE_RUN_LOGGER)
    tune_level = tune_logger.level
    saved = {k: os.environ.get(k) for k in LEGACY_OUTPUT_ENV}
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in RDB ..."
    tune_logger.setLevel(logging.ERROR)
    os.environ.update(LEGACY_OUTPUT_ENV)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(optuna_level)
        tune_logger.setLevel(tune_level)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def ray_session(address: str | None, verbose: int) -> Iterator[None]:
    """Ray for one search or resume: joined (address) or started here, and shut down after only
    when started here; with verbose 0 the logs are quiet (`quiet_logs`) and the workers' output
    stays in Ray's log files (they print Ray's "Checkpoint successfully created at: ..." for
    every epoch of every trial, and shutdown noise; a failed trial is still reported by
    tune.progress and the final table, with its error.txt).
    """
    race = SearcherStateRace()
    sync_loggers = [logging.getLogger(name) for name in RAY_SYNC_LOGGERS]
    for sync_logger in sync_loggers:
        sync_logger.addFilter(race)
    with quiet_logs(verbose):
        started = connect(address, log_to_driver=verbose > 0)
        try:
            yield
        finally:
            if started:
                ray.shutdown()
            for sync_logger in sync_loggers:
                sync_logger.removeFilter(race)
