"""tune.cluster's Ray session: the one known-harmless Ray sync race, and Ray's note that it turned
token authentication on, stay off the terminal."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tune.cluster import (
    AUTH_ENABLED_NOTE,
    RAY_AUTH_LOGGER,
    RAY_SYNC_LOGGERS,
    SearcherStateRace,
    TokenAuthNote,
    ray_session,
)

# Ray's text in the CI run of 2026-12-02, less the traceback above it.
RACE = ("Failed to open local file '/tmp/ray/session_x/artifacts/q/driver_artifacts/"
        ".af97cd2e-tmp-searcher-state-2026-12-02_22-53-30.pkl'. Detail: [errno 2] No such file")


def _record(logger: logging.Logger, exc: BaseException) -> logging.LogRecord:
    """A record as experiment_state logs a failed sync: an error with the exception attached."""
    try:
        raise exc
    except type(exc):
        return logger.makeRecord(logger.name, logging.ERROR, __file__, 0,
                                 "Saving experiment state to storage failed with exception: ",
                                 (), sys.exc_info())


def test_the_searcher_state_race_is_dropped_and_other_sync_failures_are_not() -> None:
    race = SearcherStateRace()
    logger = logging.getLogger(RAY_SYNC_LOGGERS[1])
    assert not race.filter(_record(logger, FileNotFoundError(2, RACE)))
    assert race.filter(_record(logger, FileNotFoundError(2, "Failed to open local file "
                                                            "'/data/trial_1/result.json'")))
    assert race.filter(_record(logger, PermissionError(13, RACE)))
    # Ray's syncer logs a warning with the traceback in its text instead.
    warning = logging.getLogger(RAY_SYNC_LOGGERS[0]).makeRecord(
        RAY_SYNC_LOGGERS[0], logging.WARNING, __file__, 0,
        "Last sync command failed with the following error:\n%s", (f"FileNotFoundError: {RACE}",),
        None)
    assert not race.filter(warning)


def test_the_filter_is_on_the_ray_loggers_only_during_a_session(ray_local) -> None:
    def filtered() -> list[bool]:
        return [any(isinstance(f, SearcherStateRace) for f in logging.getLogger(n).filters)
                for n in RAY_SYNC_LOGGERS]

    assert filtered() == [False, False]
    with ray_session(None, verbose=0):  # reuses the test's Ray
        assert filtered() == [True, True]
    assert filtered() == [False, False]


def test_only_rays_note_that_token_auth_is_on_is_dropped() -> None:
    note = TokenAuthNote()
    logger = logging.getLogger(RAY_AUTH_LOGGER)

    def record(text: str) -> logging.LogRecord:
        return logger.makeRecord(logger.name, logging.WARNING, __file__, 0, text, (), None)

    # Ray 2.60's text (authentication_token_setup._warn_token_auth_enabled).
    assert not note.filter(record(f"{AUTH_ENABLED_NOTE}. Set RAY_AUTH_MODE=disabled to opt out."))
    assert note.filter(record("Token authentication is disabled for this Ray cluster. Anyone "
                              "with network access to the cluster can run arbitrary code"))


# A driver as `countnet search` starts its embedded Ray; it says whether token auth is on.
EMBEDDED = """
import ray
from ray._raylet import AuthenticationMode, get_authentication_mode
from tune.cluster import connect
assert connect(None)
print(get_authentication_mode() == AuthenticationMode.TOKEN)
ray.shutdown()
"""


@pytest.mark.slow
def test_embedded_ray_starts_with_token_auth_and_without_a_word(tmp_path) -> None:
    """A real embedded Ray, as a new user's first `make search` starts it (RAY_AUTH_MODE unset,
    no token yet): token authentication is on, a token was written, and stderr says nothing about
    authentication (Ray's WARNING used to come before the search's first line)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token yet; the user's own stays untouched
    run = subprocess.run([sys.executable, "-c", EMBEDDED], env=env, capture_output=True,
                         text=True, timeout=300, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True"]
    assert (tmp_path / ".ray" / "auth_token").is_file()
    assert not [line for line in run.stderr.splitlines() if "auth" in line.lower()], run.stderr
