"""Output directories and bundles under failure: refused, replaced whole, or left as they were.

The command-line side (one line, exit 2, nothing written) is in test_cli.py; these are the
building blocks, without Ray.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from countnet.bundle import load_model, write_bundle
from countnet.config import MAX_DEPTH, MAX_WIDTH, ConfigError, TrainConfig
from countnet.models import model_from_config
from countnet.outdir import OutputKind, check_out_dir, staged_dir

SMALL = {"image_size": 32, "max_count": 5}  # on top of the suite's TINY: small input images
ANY = OutputKind("thing", lambda p: (p / "mine").is_file(), "it has no file `mine`")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_check_out_dir(tmp_path) -> None:
    check_out_dir(tmp_path / "new" / "deeper", force=False, kind=ANY)  # absent: fine
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty", force=False, kind=ANY)
    used = tmp_path / "used"
    used.mkdir()
    (used / "x").write_text("x")
    with pytest.raises(ConfigError, match=r"--out .*used: not empty \(1 entries\); pass --force"):
        check_out_dir(used, force=False, kind=ANY)
    with pytest.raises(ConfigError, match=r"not an earlier countnet thing .* will not delete it"):
        check_out_dir(used, force=True, kind=ANY)
    (used / "mine").write_text("")
    check_out_dir(used, force=True, kind=ANY)
    with pytest.raises(ConfigError, match=r"--export .*x: is a file"):
        check_out_dir(used / "x", force=True, kind=ANY, flag="--export")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        check_out_dir(used / "x" / "y", force=False, kind=ANY)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["empty", "mine", "used", "x"]


def test_staged_dir_replaces_whole_or_not_at_all(tmp_path) -> None:
    target = tmp_path / "out"
    with staged_dir(target) as stage:
        (stage / "a").write_text("1")
    assert _files(target) == {"a": b"1"}
    assert oct(target.stat().st_mode & 0o777) != oct(0o700)  # a plain mkdir's permissions
    with pytest.raises(RuntimeError), staged_dir(target) as stage:
        (stage / "b").write_text("2")
        raise RuntimeError("killed")
    assert _files(target) == {"a": b"1"}
    with staged_dir(target) as stage:
        (stage / "b").write_text("2")
    assert _files(target) == {"b": b"2"}  # replaced, not merged
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging or retired dirs left


def _state(cfg: TrainConfig, fill: float) -> dict[str, torch.Tensor]:
    state = model_from_config(cfg).state_dict()
    return {k: torch.full_like(v, fill) for k, v in state.items()}


def test_an_export_killed_between_files_leaves_the_old_bundle(tmp_path, monkeypatch, tiny) -> None:
    cfg = tiny(SMALL)
    bundle = write_bundle(tmp_path / "bundle", _state(cfg, 1.0), cfg, {"run": "old"})
    old = _files(bundle)
    real_write_text = Path.write_text

    def die_on_metrics(self: Path, *args, **kwargs):
        if self.name == "metrics.json":  # model.pt and config.json are written by now
            raise KeyboardInterrupt
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", die_on_metrics)
    with pytest.raises(KeyboardInterrupt):
        write_bundle(bundle, _state(cfg.replace(width=16), 2.0), cfg.replace(width=16),
                     {"run": "new"})
    monkeypatch.undo()
    assert _files(bundle) == old  # the old bundle, whole: never new weights beside an old config
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]
    model, loaded = load_model(bundle)
    assert loaded.width == 8 and all(torch.all(p == 1.0) for p in model.parameters())
    # Uninterrupted, the new bundle replaces the old one whole.
    write_bundle(bundle, _state(cfg.replace(width=16), 2.0), cfg.replace(width=16), {"run": "new"})
    assert json.loads((bundle / "metrics.json").read_text()) == {"run": "new"}
    assert load_model(bundle)[1].width == 16


def test_write_bundle_never_replaces_a_foreign_directory(tmp_path, tiny) -> None:
    cfg = tiny(SMALL)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a bundle"):
        write_bundle(tmp_path, _state(cfg, 1.0), cfg, {})
    assert _files(tmp_path) == {"notes.txt": b"mine"}


def test_bundle_metrics_are_strict_json(tmp_path, tiny) -> None:
    cfg = tiny(SMALL)
    bundle = write_bundle(tmp_path / "b", _state(cfg, 1.0), cfg, {"val_loss": float("nan")})
    text = (bundle / "metrics.json").read_text()
    assert json.loads(text, parse_constant=pytest.fail) == {"val_loss": None}


def test_bundle_caps_stop_a_huge_model_before_it_is_built(tmp_path, tiny) -> None:
    cfg = tiny(SMALL)
    bundle = write_bundle(tmp_path / "b", _state(cfg, 1.0), cfg, {})
    config = json.loads((bundle / "config.json").read_text())
    for key, value in (("width", MAX_WIDTH + 1), ("depth", MAX_DEPTH + 1)):
        (bundle / "config.json").write_text(json.dumps(
            {**config, "train_config": {**config["train_config"], key: value}}))
        with pytest.raises(ConfigError, match=rf"train_config: {key}: {value} is above the cap"):
            load_model(bundle)
