"""Errors of bad input that several modules raise: folders, checkpoints, bundles, run dirs.

Each message is one line that names the file (and the row where there is one). The `countnet`
command prints it and exits with code 2 (`countnet.cli.main`); a library caller can catch it.
`ConfigError` (a wrong key, value or flag) lives with the config it checks, `countnet.config`.
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data. The message names the file (and the row where there is one)."""


class IntegrityError(DataError):
    """A file's bytes are not those its writer recorded (their sha256 differs): the file was
    damaged on disk or on the way. The message names the file."""
