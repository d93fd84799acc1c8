"""Bundles and checkpoints record the sha256 of their tensors file; a damaged file is one line.

Damage here is what a bad disk or download does: 64 bits flipped in the middle of the file. torch
still loads such a file (the flipped bytes are weights), so without the hash the model would
count wrong without a word. A file of this version (format 2) whose hash record is gone is
refused; an older one without a record loads unchecked, with one warning line.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from countnet.bundle import load_model, write_bundle
from countnet.checkpoint import (
    CHECKPOINT_KEYS,
    digest_path,
    load_checkpoint,
    save_checkpoint,
)
from countnet.cli import main
from countnet.errors import DataError, IntegrityError, UncheckedWarning
from countnet.generate import write_dataset
from countnet.rundir import RunLogger
from countnet.train import fit

COUNTNET = shutil.which("countnet") or str(Path(sys.executable).parent / "countnet")


def flip_64_bits(path: Path) -> None:
    """Invert 8 bytes in the middle of the file."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 8] = bytes(b ^ 0xFF for b in data[mid:mid + 8])
    path.write_bytes(bytes(data))


def _one_line(err: str) -> str:
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def _predict(model: Path, images: Path) -> subprocess.CompletedProcess:
    """`countnet predict MODEL IMAGES` as a user runs it (a real process: real warnings)."""
    return subprocess.run([COUNTNET, "predict", str(model), str(images)], capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny) -> tuple[Path, Path, Path]:
    """(run dir, bundle, images): a tiny model trained 2 epochs, its bundle, 3 PNG scenes."""
    cfg = tiny(epochs=2, batch_size=32)
    root = tmp_path_factory.mktemp("trained")
    with RunLogger(root / "run", cfg) as logger:
        fit(cfg, logger)
    model, cfg = load_model(root / "run")
    bundle = write_bundle(root / "bundle", model.state_dict(), cfg, {"note": "test"})
    write_dataset(root / "images", cfg, 3, seed=5)
    return root / "run", bundle, root / "images"


@pytest.fixture
def bundle(trained, tmp_path) -> Path:
    """A copy of the trained bundle to spoil."""
    return Path(shutil.copytree(trained[1], tmp_path / "bundle"))


@pytest.fixture
def run(trained, tmp_path) -> Path:
    """A copy of the trained run dir to spoil."""
    return Path(shutil.copytree(trained[0], tmp_path / "run"))


def test_bundle_records_the_sha256_of_model_pt(bundle) -> None:
    config = json.loads((bundle / "config.json").read_text())
    digest = hashlib.sha256((bundle / "model.pt").read_bytes()).hexdigest()
    assert config["sha256"] == {"model.pt": digest}
    assert config["format"] == 2


def test_a_damaged_bundle_is_one_line_and_exit_2(bundle, trained) -> None:
    images = trained[2]
    ok = subprocess.run([COUNTNET, "predict", str(bundle), str(images)], capture_output=True,
                        text=True, timeout=300)
    assert ok.returncode == 0 and len(ok.stdout.splitlines()) == 4, ok.stderr
    flip_64_bits(bundle / "model.pt")
    torch.load(bundle / "model.pt", weights_only=True)  # still loads: only the hash can tell
    out = subprocess.run([COUNTNET, "predict", str(bundle), str(images)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and out.stdout == ""
    assert f"{bundle / 'model.pt'}: damaged: its sha256 is" in _one_line(out.stderr)


def test_every_command_refuses_a_damaged_bundle(bundle, trained, capsys) -> None:
    flip_64_bits(bundle / "model.pt")
    with pytest.raises(IntegrityError, match=r"model\.pt: damaged"):
        load_model(bundle)
    for argv in (["evaluate", str(bundle), str(trained[2])], ["diagnose", str(bundle)]):
        assert main(argv) == 2
        captured = capsys.readouterr()
        assert "model.pt: damaged" in _one_line(captured.err) and captured.out == ""


def test_a_bundle_of_this_format_without_its_hash_is_refused(bundle, trained, capsys) -> None:
    """Deleting the record must not turn the check off: one line, exit 2."""
    config = json.loads((bundle / "config.json").read_text())
    del config["sha256"]
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(IntegrityError, match=r"config\.json: records no sha256 of model\.pt"):
        load_model(bundle)
    assert main(["predict", str(bundle), str(trained[2])]) == 2
    captured = capsys.readouterr()
    assert "config.json: records no sha256" in _one_line(captured.err) and captured.out == ""


def test_an_older_bundle_without_a_hash_loads_unchecked_with_one_warning(bundle,
                                                                         trained) -> None:
    """Written before countnet recorded hashes (no format, no sha256): nothing to check, and
    the command says so in one line."""
    config = json.loads((bundle / "config.json").read_text())
    del config["sha256"], config["format"]
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.warns(UncheckedWarning, match=r"model\.pt: loaded unchecked"):
        load_model(bundle)
    out = _predict(bundle, trained[2])
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 4, out.stderr
    assert _one_line(out.stderr).startswith(
        f"countnet predict: warning: {bundle / 'model.pt'}: loaded unchecked: config.json "
        f"records no sha256")


@pytest.mark.parametrize("recorded", ["0" * 63, "XYZ", None, ["model.pt"], {"other.pt": "0" * 64}])
def test_a_malformed_recorded_hash_is_one_line_and_exit_2(bundle, trained, capsys,
                                                          recorded) -> None:
    config = json.loads((bundle / "config.json").read_text())
    config["sha256"] = recorded if not isinstance(recorded, str) else {"model.pt": recorded}
    (bundle / "config.json").write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"config\.json: sha256: must be"):
        load_model(bundle)
    assert main(["predict", str(bundle), str(trained[2])]) == 2
    captured = capsys.readouterr()
    assert "config.json: sha256: must be" in _one_line(captured.err) and captured.out == ""


# --- checkpoints ---------------------------------------------------------------------------------
def test_checkpoints_have_a_sha256sum_sidecar(run) -> None:
    for name in ("last", "best"):
        ckpt = run / "checkpoints" / name / "checkpoint.pt"
        digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()
        assert digest_path(ckpt).read_text() == f"{digest}  checkpoint.pt\n"
        if shutil.which("sha256sum"):  # the format sha256sum -c reads
            check = subprocess.run(["sha256sum", "-c", digest_path(ckpt).name],
                                   cwd=ckpt.parent, capture_output=True, text=True)
            assert check.returncode == 0, check.stdout + check.stderr


def test_a_damaged_checkpoint_is_one_line_and_exit_2(run, trained, capsys) -> None:
    best = run / "checkpoints" / "best" / "checkpoint.pt"
    flip_64_bits(best)
    assert main(["predict", str(run), str(trained[2])]) == 2
    captured = capsys.readouterr()
    assert f"{best}: damaged: its sha256 is" in _one_line(captured.err) and captured.out == ""
    last = run / "checkpoints" / "last" / "checkpoint.pt"
    flip_64_bits(last)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    assert f"{last}: damaged" in _one_line(capsys.readouterr().err)


def test_a_checkpoint_records_its_format_in_the_file_only(run) -> None:
    best = run / "checkpoints" / "best" / "checkpoint.pt"
    assert torch.load(best, weights_only=True)["format"] == 2
    assert "format" not in load_checkpoint(best)  # it describes the file, not the state


def test_a_checkpoint_of_this_format_without_its_sidecar_is_refused(run, trained,
                                                                    capsys) -> None:
    """Deleting (or not copying) the sidecar must not turn the check off: one line, exit 2."""
    best = run / "checkpoints" / "best" / "checkpoint.pt"
    digest_path(best).unlink()
    with pytest.raises(IntegrityError, match=r"sidecar checkpoint\.pt\.sha256 is missing"):
        load_checkpoint(best)
    assert main(["predict", str(run), str(trained[2])]) == 2
    captured = capsys.readouterr()
    assert f"{best}: its sha256 sidecar" in _one_line(captured.err) and captured.out == ""


def _as_older_countnet_wrote_it(ckpt: Path) -> None:
    """Rewrite `ckpt` without the format key, as a countnet before format 2 saved it."""
    state = torch.load(ckpt, weights_only=True)
    del state["format"]
    torch.save(state, ckpt)


def test_an_older_checkpoint_without_a_sidecar_loads_unchecked_with_one_warning(
        run, trained) -> None:
    best = run / "checkpoints" / "best" / "checkpoint.pt"
    _as_older_countnet_wrote_it(best)
    digest_path(best).unlink()
    with pytest.warns(UncheckedWarning, match=r"checkpoint\.pt: loaded unchecked"):
        assert load_checkpoint(best)["epoch"] >= 1
    out = _predict(run, trained[2])
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 4, out.stderr
    assert _one_line(out.stderr) == (f"countnet predict: warning: {best}: loaded unchecked: no "
                                     f"checkpoint.pt.sha256 (a checkpoint of a countnet that "
                                     f"recorded no sha256)\n")


def test_an_older_checkpoint_with_a_sidecar_is_checked_without_a_word(run) -> None:
    """A countnet that wrote sidecars but no format: the sidecar is checked as ever."""
    best = run / "checkpoints" / "best" / "checkpoint.pt"
    _as_older_countnet_wrote_it(best)
    digest = hashlib.sha256(best.read_bytes()).hexdigest()
    digest_path(best).write_text(f"{digest}  checkpoint.pt\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no UncheckedWarning
        assert load_checkpoint(best)["epoch"] >= 1
    flip_64_bits(best)
    with pytest.raises(IntegrityError, match="damaged"):
        load_checkpoint(best)


@pytest.mark.parametrize("text,message", [
    ("", "lists no sha256"),
    ("not-a-hash  checkpoint.pt\n", ":1: not a sha256 (64 hex digits)"),
    ("\xe9\n", "not a sha256 list (not ASCII text)"),
    ("0" * 5000, "larger than 4096 bytes"),
])
def test_a_malformed_sidecar_is_one_data_error(run, text, message) -> None:
    best = run / "checkpoints" / "best" / "checkpoint.pt"
    digest_path(best).write_text(text, encoding="latin-1")
    with pytest.raises(DataError, match=re.escape(message)) as info:
        load_checkpoint(best)
    assert str(info.value).startswith(str(digest_path(best)))


def _state(epoch: int) -> dict:
    state = {k: {} for k in CHECKPOINT_KEYS}
    return {**state, "model": {"w": torch.full((4,), float(epoch))}, "epoch": epoch,
            "history": []}


def crash_when_renaming_onto(target: Path, monkeypatch) -> None:
    """Make the checkpoint module's os.replace raise KeyboardInterrupt when it renames a file
    onto `target` (a crash just before the new tensors file is in place); other renames run."""
    import countnet.checkpoint as checkpoint

    real_replace = checkpoint.os.replace

    def replace(src, dst):
        if Path(dst) == target:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", replace)

def test_a_crash_between_the_two_files_leaves_a_checkpoint_that_loads(tmp_path,
                                                                       monkeypatch) -> None:
    """The sidecar and the file cannot be renamed together; each crash point leaves the old
    checkpoint or the new one, never a false 'damaged'."""
    import countnet.checkpoint as checkpoint

    target = save_checkpoint(tmp_path, _state(1))
    crash_when_renaming_onto(target, monkeypatch)  # the sidecar (listing both) is in place
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, _state(2))
    monkeypatch.undo()
    assert len(digest_path(target).read_text().splitlines()) == 2
    assert load_checkpoint(tmp_path)["epoch"] == 1  # the old file, accepted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt",
                                                          "checkpoint.pt.sha256"]

    real_write = checkpoint._write_digests
    calls = []

    def crash_after_the_file(*args) -> None:  # the file is renamed in; its sidecar not final
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_write(*args)

    monkeypatch.setattr(checkpoint, "_write_digests", crash_after_the_file)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, _state(3))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["epoch"] == 3  # the new file, accepted
    save_checkpoint(tmp_path, _state(4))  # the next save leaves one hash again
    assert len(digest_path(target).read_text().splitlines()) == 1
    assert load_checkpoint(tmp_path)["epoch"] == 4


def test_overwriting_a_checkpoint_without_a_sidecar_keeps_it_loadable_until_the_rename(
        tmp_path, monkeypatch) -> None:
    """A checkpoint from before the hashes: a crash mid-save must not make it 'damaged'."""

    target = tmp_path / "checkpoint.pt"
    torch.save(_state(1), target)  # as countnet wrote it before: no sidecar
    crash_when_renaming_onto(target, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, _state(2))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path)["epoch"] == 1
