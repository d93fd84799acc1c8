"""Output directories of `generate`, `train` and `export`: never clobber, never mix.

- `check_out_dir` runs before anything is computed or written. A non-empty directory is refused
  unless `--force`; a file, or a place that cannot be written, is refused always. Each refusal is
  one ConfigError line naming the flag.
- `--force` replaces, it never merges. It deletes only what looks like an earlier output of the
  same command (`OutputKind.is_ours`): `--out ~ --force` must not wipe a home directory.
- `staged_dir` builds a whole directory (a bundle, a dataset) next to its target and renames it
  into place, so a reader finds the old directory or the new one, never a mix of the two, and a
  crash leaves the old one untouched. A run dir grows epoch by epoch and cannot be staged: with
  `--force` it is deleted first (`clear_out_dir`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from countnet.config import ConfigError

# Hidden siblings of the target: on the same filesystem, so a rename moves them into place.
STAGING_SUFFIX = ".staging-"
RETIRED_SUFFIX = ".old-"


@dataclass(frozen=True)
class OutputKind:
    """What a command writes, and how to recognise an earlier output of it (safe to replace)."""

    noun: str  # "bundle", "run dir", "dataset": for messages
    is_ours: Callable[[Path], bool]  # True for a directory this command wrote before
    hint: str  # why is_ours said no, for the refusal message: "it has no ..."


def check_out_dir(path: str | Path, *, force: bool, kind: OutputKind,
                  flag: str = "--out") -> None:
    """Raise ConfigError unless `path` can be written now (with `force`: replaced).

    Writes nothing that stays: writability is probed by creating and removing an empty
    directory, since os.access() says yes to root even on a read-only mount.
    """
    p = Path(path)
    where = f"{flag} {p}"
    if p.is_symlink() and not p.is_dir():
        raise ConfigError(f"{where}: is a dangling symbolic link")
    if p.exists():
        if not p.is_dir():
            raise ConfigError(f"{where}: is a file, not a directory")
        try:
            entries = sum(1 for _ in p.iterdir())
        except OSError as e:
            raise ConfigError(f"{where}: cannot list it ({e.strerror})") from None
        if entries:
            if not force:
                raise ConfigError(f"{where}: not empty ({entries} entries); pass --force to "
                                  f"replace it, or choose another directory")
            if p.is_symlink():
                raise ConfigError(f"{where}: is a symbolic link; --force replaces only a real "
                                  f"directory")
            if not kind.is_ours(p):
                raise ConfigError(f"{where}: not an earlier countnet {kind.noun} ({kind.hint}), "
                                  f"so --force will not delete it; remove it yourself or choose "
                                  f"another directory")
        _probe_writable(p, where)
    ancestor = p.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{where}: {ancestor} is a file, not a directory")
    _probe_writable(ancestor, where)


def _probe_writable(directory: Path, where: str) -> None:
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".countnet-probe-", dir=directory))
    except OSError as e:
        raise ConfigError(f"{where}: cannot write in {directory} ({e.strerror})") from None


def clear_out_dir(path: str | Path) -> None:
    """Delete an output directory that `check_out_dir(force=True)` accepted (no-op if absent)."""
    p = Path(path)
    if p.is_dir():
        shutil.rmtree(p)


@contextlib.contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty directory next to `target`; on success it replaces `target`.

    On an exception the staged directory is removed and `target` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}{STAGING_SUFFIX}", dir=target.parent))
    # mkdtemp makes the directory 0700; the result should have the permissions of a plain mkdir.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(stage, 0o777 & ~umask)
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    replace_dir(stage, target)


def replace_dir(new: Path, target: Path) -> None:
    """Move directory `new` to `target`, removing an old `target` (a directory) afterwards.

    An absent or empty `target` is replaced by one atomic rename. A non-empty one is first
    renamed aside and deleted after the new one is in place: a reader may find no directory for
    the instant between the two renames, but never a half-written or mixed one.
    """
    try:
        os.replace(new, target)  # atomic; POSIX allows it over an empty directory
        return
    except OSError:
        if not target.is_dir():
            raise
    retired = target.with_name(f".{target.name}{RETIRED_SUFFIX}{uuid.uuid4().hex[:8]}")
    os.replace(target, retired)
    os.replace(new, target)
    shutil.rmtree(retired, ignore_errors=True)
