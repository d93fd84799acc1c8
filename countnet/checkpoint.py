"""Checkpoint files: plain tensors and Python values only, loaded with `weights_only=True`.

A checkpoint (or a bundle's model.pt) from anyone is safe to load: torch's weights-only unpickler
refuses every Python object that is not a tensor, a container or a plain value, so a malicious
pickle fails with DataError instead of running code.

Integrity: `checkpoint.pt` has a sidecar `checkpoint.pt.sha256` (sha256sum's format, so
`sha256sum -c checkpoint.pt.sha256` checks it too) that `save_checkpoint` writes with it and
`load_checkpoint` checks: a file damaged on disk or in a copy is one IntegrityError line naming
it, never weights that silently count wrong. The hash guards against damage, not against an
attacker, who can rewrite both files.

Format: `save_checkpoint` records `"format": FORMAT` (2) in the file, which tells this version's
checkpoints, always written with their sidecar, from older ones:
- format 2 without its sidecar (lost in a copy, deleted) is refused: one IntegrityError line;
- no format key: a checkpoint of an older countnet. With a sidecar it is checked; without one
  it loads unchecked, with an `UncheckedWarning` naming it (the command prints it in one line).
`load_checkpoint` removes the key: it describes the file, not the training state.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from countnet.errors import DataError, IntegrityError, UncheckedWarning

CHECKPOINT_FILE = "checkpoint.pt"
DIGEST_SUFFIX = ".sha256"  # checkpoint.pt.sha256, beside checkpoint.pt
_HEX64 = re.compile(r"[0-9a-f]{64}")
MAX_DIGEST_BYTES = 4096  # a sidecar holds one or two lines; refuse to read a huge one
# What `countnet.train` saves; every reader (resume, export, predict, diagnose) needs these.
CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "rng", "config", "history")
FORMAT_KEY = "format"  # in the checkpoint file: its format (module docstring)
FORMAT = 2  # 2: always written with its sha256 sidecar; a file without the key is older


def resolve(path: str | Path) -> Path:
    """A `.pt` file as given; anything else names a directory holding `checkpoint.pt`."""
    p = Path(path)
    return p if p.suffix == ".pt" else p / CHECKPOINT_FILE


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write atomically with its sha256 sidecar, so a crash never leaves half a checkpoint.

    Args:
        path: a `.pt` file, or a directory to hold `checkpoint.pt`.
        state: the training state (CHECKPOINT_KEYS); FORMAT is recorded beside it.

    Returns:
        The checkpoint file.
    """
    target = resolve(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_atomic({**state, FORMAT_KEY: FORMAT}, target)
    return target


def digest_path(target: Path) -> Path:
    """The sidecar holding `target`'s sha256: `checkpoint.pt.sha256`."""
    return target.with_name(target.name + DIGEST_SUFFIX)


def save_atomic(obj: Any, target: Path) -> None:
    """torch.save `obj` to `target`, and its sha256 to the sidecar; a crash leaves a pair that
    loads (the old file or the new one, each with its hash listed).

    Two files cannot be renamed in one step, so for a moment the sidecar lists two hashes:
    1. the file's bytes are serialised and hashed in memory, then written to a temp file;
    2. the sidecar becomes (temp file + rename) the new hash plus the hash(es) of the old file,
       if there is one;
    3. the temp file is renamed over `target`;
    4. the sidecar becomes the new hash alone.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    sidecar = digest_path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # A crash between 2 and 3 leaves the old file: the sidecar still accepts it.
        old = _old_digests(target, sidecar) if target.is_file() else []
        _write_digests(sidecar, target.name, [digest, *old])
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _write_digests(sidecar, target.name, [digest])


def _old_digests(target: Path, sidecar: Path) -> list[str]:
    """The hashes the sidecar accepts for the current `target`; its own hash if it has none."""
    with contextlib.suppress(OSError, DataError):
        listed = read_digests(sidecar)
        if listed:
            return listed
    return [file_sha256(target)]


def _write_digests(sidecar: Path, name: str, digests: list[str]) -> None:
    """Replace the sidecar by one `HASH  NAME` line per hash, atomically (temp + rename)."""
    text = "".join(f"{d}  {name}\n" for d in dict.fromkeys(digests))
    fd, tmp = tempfile.mkstemp(prefix=f".{sidecar.name}.", suffix=".tmp", dir=sidecar.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, sidecar)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_digests(sidecar: Path) -> list[str]:
    """The sha256 hashes a sidecar lists (one per line, `HASH  NAME` or `HASH`); DataError if it
    is not such a file. The name is not compared: a renamed pair still checks."""
    try:
        if sidecar.stat().st_size > MAX_DIGEST_BYTES:
            raise DataError(f"{sidecar}: larger than {MAX_DIGEST_BYTES} bytes; not a sha256 list")
        text = sidecar.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise DataError(f"{sidecar}: not a sha256 list (not ASCII text)") from None
    except OSError as e:
        raise DataError(f"{sidecar}: cannot read ({e.strerror})") from None
    digests = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        digest = line.split()[0].lower()
        if not _HEX64.fullmatch(digest):
            raise DataError(f"{sidecar}:{n}: not a sha256 (64 hex digits): {digest[:70]!r}")
        digests.append(digest)
    if not digests:
        raise DataError(f"{sidecar}: lists no sha256")
    return digests


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in chunks (a file larger than memory is fine)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(path: Path, recorded: list[str], where: str) -> None:
    """IntegrityError unless the sha256 of `path` is one of `recorded` (from `where`)."""
    try:
        actual = file_sha256(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    if actual not in recorded:
        raise IntegrityError(f"{path}: damaged: its sha256 is {actual[:16]}..., but {where} "
                             f"records {recorded[0][:16]}... (the file changed after it was "
                             f"written: a disk or copy error); use an intact copy")


def load_tensors(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True; any failure is one DataError line naming the file."""
    if not path.is_file():
        raise DataError(f"{path}: missing")
    try:
        with warnings.catch_warnings():
            # A foreign pickle protocol makes torch warn before it refuses: one line, not three.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a torn, foreign or malicious file: its content is the problem
        raise DataError(f"{path}: {_load_failure(e)}") from None


def _load_failure(e: Exception) -> str:
    """torch.load's many-line messages, as one short line that says what was wrong."""
    text = str(e)
    if "Weights only load failed" in text:
        # The reason is the line naming what was refused: "Unsupported global: GLOBAL io.open
        # was not an allowed global ...", or "Unsupported operand 149".
        lines = (line.strip().removeprefix("WeightsUnpickler error:").strip()
                 for line in text.splitlines())
        detail = next((line for line in lines if line.startswith("Unsupported")), "")
        detail = detail.split(" was not an allowed global")[0]
        return ("refused: it holds Python objects, not only tensors, and is never unpickled "
                f"as code (weights_only=True){': ' + detail if detail else ''}")
    first = text.strip().splitlines()[0] if text.strip() else ""
    first = first.split(". ")[0]  # torch appends paragraphs of advice after the first sentence
    return f"not a readable torch file ({type(e).__name__}{': ' + first if first else ''})"


def check_state_dict(state: Any, where: str) -> dict[str, torch.Tensor]:
    """`state` when it is a mapping of parameter name -> tensor, else DataError."""
    if not isinstance(state, Mapping):
        raise DataError(f"{where}: not a state_dict (a mapping of parameter name to tensor), "
                        f"got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise DataError(f"{where}: not a state_dict: entry {bad[0]!r} is not a named tensor")
    return dict(state)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without unpickling code (weights_only=True), checked against its
    sidecar (module docstring).

    Args:
        path: a `.pt` file, or a directory holding `checkpoint.pt`.
        map_location: where the tensors go.

    Returns:
        The training state (CHECKPOINT_KEYS and what else was saved; no FORMAT_KEY).

    Raises:
        FileNotFoundError: no such checkpoint.
        IntegrityError: its sha256 differs from its sidecar's, or a checkpoint of this format
            has lost its sidecar.
        DataError: any other bad file.

    Warns:
        UncheckedWarning: an older checkpoint without a sidecar, loaded unchecked.
    """
    target = resolve(path)
    if not target.is_file():
        raise FileNotFoundError(f"{target}: no checkpoint there")
    sidecar = digest_path(target)
    checked = sidecar.is_file()
    if checked:
        check_sha256(target, read_digests(sidecar), sidecar.name)
    # Loading an unchecked file is safe (weights_only); only its content tells its format.
    state = load_tensors(target, map_location)
    if not isinstance(state, dict):
        raise DataError(f"{target}: not a countnet checkpoint (a dict), got "
                        f"{type(state).__name__}")
    written_with_sidecar = state.pop(FORMAT_KEY, None) is not None
    if not checked and written_with_sidecar:
        raise IntegrityError(f"{target}: its sha256 sidecar {sidecar.name} is missing, and "
                             f"countnet writes one with every checkpoint of this format: the "
                             f"file cannot be checked; copy {sidecar.name} along with it")
    if not checked:
        warnings.warn(f"{target}: loaded unchecked: no {sidecar.name} (a checkpoint of a "
                      f"countnet that recorded no sha256)", UncheckedWarning, stacklevel=2)
    missing = [k for k in CHECKPOINT_KEYS if k not in state]
    if missing:
        raise DataError(f"{target}: not a countnet checkpoint: no {', '.join(missing)}")
    check_state_dict(state["model"], f"{target}: model")
    return state
