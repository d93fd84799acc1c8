"""tune.cluster's Ray session: the one known-harmless Ray sync race stays off the terminal."""

from __future__ import annotations

import logging
import sys

from tune.cluster import RAY_SYNC_LOGGERS, SearcherStateRace, ray_session

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
