"""Where an experiment's files live: a local directory or a cloud URI (s3://...), through pyarrow.

Ray Tune writes its files through pyarrow filesystems; the search's own small files (its record
and space) go the same way, so `--resume` and `export` find them wherever the experiment is. The
Optuna study is SQLite and needs a local file: for a URI it lives at a fixed absolute path on the
driver's machine (~/countnet/studies/<name>, not the driver's cwd, which under `ray job submit` is
a runtime-env directory), recorded in countnet_search.json, and a copy is uploaded to the
experiment when the search ends.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs

STUDY_ROOT = "~/countnet/studies"  # local home of the SQLite study for URI storage


def is_uri(location: str | Path) -> bool:
    return "://" in str(location)


def experiment_location(storage: str, name: str) -> tuple[str, str, Path]:
    """(Ray storage_path, experiment dir, local dir of the study) for `storage` and `name`."""
    if is_uri(storage):
        root = storage.rstrip("/")
        return root, f"{root}/{name}", Path(STUDY_ROOT).expanduser().resolve() / name
    root_path = Path(storage).expanduser().resolve()
    return str(root_path), str(root_path / name), root_path / name


def normalise(location: str | Path) -> str:
    """A URI as given; a local path made absolute."""
    return str(location) if is_uri(location) else str(Path(location).expanduser().resolve())


def read_text(location: str) -> str | None:
    """The text of a file at a local path or URI; None when it does not exist."""
    fs, path = pyarrow.fs.FileSystem.from_uri(normalise(location))
    if fs.get_file_info(path).type != pyarrow.fs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def write_text(location: str, text: str) -> None:
    """Write a text file at a local path or URI, whole or not at all.

    It is written beside its final name and then moved there, so a reader (`--resume`,
    `countnet export`) never sees a half-written countnet_search.json after a crash.
    """
    fs, path = pyarrow.fs.FileSystem.from_uri(normalise(location))
    fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    staging = f"{path}.partial-{os.getpid()}"
    with fs.open_output_stream(staging) as f:
        f.write(text.encode())
    fs.move(staging, path)


def upload(local_file: Path, location: str) -> None:
    """Copy a local file to a local path or URI (pyarrow streams it to the URI's filesystem)."""
    pyarrow.fs.copy_files(str(local_file), normalise(location))
