"""Errors of bad input that several modules raise: folders, checkpoints, bundles, run dirs.

Each message is one line that names the file (and the row where there is one). The `countnet`
command prints it and exits with code 2 (`countnet.cli.main`); a library caller can catch it.
`ConfigError` (a wrong key, value or flag) lives with the config it checks, `countnet.config`.
A file loaded without a check is no error but an `UncheckedWarning` (`warnings.warn`: the library
prints nothing; the command prints it in one line).
"""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data. The message names the file (and the row where there is one)."""


class UncheckedWarning(UserWarning):
    """A file was loaded without an integrity check: it comes from a countnet that recorded no
    sha256 for it, so there is nothing to compare it with. The `countnet` command prints it as
    one `warning:` line; the message names the file."""


class IntegrityError(DataError):
    """A file's bytes are not those its writer recorded (their sha256 differs): the file was
    damaged on disk or on the way. The message names the file."""
