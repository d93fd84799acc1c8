"""Exported bundles, and loading a trained model from a bundle, a run dir or a checkpoint.

A bundle directory holds:
- `model.pt`: the model's state_dict only (tensors; loads with weights_only=True);
- `config.json`: the TrainConfig, the input size and normalisation the model expects (height and
  width null, `"native": true` for a model trained on crops of photos at their own size), the
  sha256 of model.pt (`"sha256": {"model.pt": HEX}`), the bundle's format (`"format": 2`), and,
  when known, the object sizes it was trained on (`"object_size": {"min": px, "max": px, ...}`,
  `countnet.object_size`);
- `metrics.json`: where it came from and how good it was (`read_history` reads its epochs).

The file names are `countnet.rundir`'s, with the rest of the on-disk layout; so is the rule of
what a path is (`kind_of`), by which `load_model` takes a bundle, a run dir's best or last
checkpoint (`which`), or a checkpoint.

Loading checks model.pt against its recorded sha256: a file damaged on disk or in a download is
one IntegrityError line naming it (exit 2), never a model that counts 0 without a word. The hash
detects damage; it is no signature, since whoever can change model.pt can change config.json too.

Format: `"format": 2` (FORMAT) in config.json marks a bundle of this version, which always
records the sha256; one whose record is gone is refused (one IntegrityError line). A config.json
without the key comes from an older countnet: with a recorded sha256 it is checked, without one
model.pt loads unchecked, with an `UncheckedWarning` naming it (the command prints it in one
line).

A bundle is safe to load from anyone: tensors and JSON only, nothing is unpickled as code, and
the config may not ask for a model or an input larger than the caps below (checked before any
memory is allocated; the weights must then match the config shape for shape). A bundle is
written to a staging directory and renamed into place: a reader sees the old bundle or the new
one, never a mix.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from countnet.checkpoint import (
    check_sha256,
    check_state_dict,
    load_checkpoint,
    load_tensors,
    resolve,
)
from countnet.config import ConfigError, TrainConfig
from countnet.errors import DataError, IntegrityError, UncheckedWarning
from countnet.formatting import nan_to_null
from countnet.models import model_from_config
from countnet.object_size import OBJECT_SIZE_KEY, trained_object_size
from countnet.outdir import OutputKind, staged_dir
from countnet.rundir import (
    BEST,
    BUNDLE,
    BUNDLE_CONFIG_FILE,
    BUNDLE_METRICS_FILE,
    BUNDLE_MODEL_FILE,
    CHECKPOINT,
    KIND_FILES,
    RUN,
    checkpoint_path,
    expect_kind,
    kind_of,
)

# The bundle's file names, which countnet.rundir owns with the rest of the layout.
MODEL_FILE, CONFIG_FILE, METRICS_FILE = BUNDLE_MODEL_FILE, BUNDLE_CONFIG_FILE, BUNDLE_METRICS_FILE
# Inputs are images scaled to [0, 1] with no mean/std shift; recorded so other tools can match it.
NORMALISATION = {"scale": 1.0 / 255.0, "mean": 0.0, "std": 1.0}
MAX_CONFIG_BYTES = 1 << 20  # config.json is a few KiB; refuse to parse a huge one
SHA256_KEY = "sha256"  # config.json: {"sha256": {"model.pt": "64 hex digits"}}
FORMAT_KEY = "format"  # config.json: the bundle's format (module docstring)
FORMAT = 2  # 2: the sha256 of model.pt is always recorded; no key: an older bundle
_HEX64 = re.compile(r"[0-9a-f]{64}")

BUNDLE_OUTPUT = OutputKind("bundle", lambda p: kind_of(p) == BUNDLE,
                           f"it has no {KIND_FILES[BUNDLE]}")


def write_bundle(out_dir: str | Path, model_state: dict[str, torch.Tensor], cfg: TrainConfig,
                 metrics: dict[str, Any]) -> Path:
    """Write a bundle that `load_model` (and `countnet predict`) can use without Ray.

    Every file is written into a staging directory next to `out_dir`, which then replaces
    `out_dir` (an earlier bundle there is removed, never merged with). A failure on the way
    leaves `out_dir` as it was. A non-empty directory that is not a bundle is refused.
    """
    out = Path(out_dir)
    if out.is_dir() and any(out.iterdir()) and kind_of(out) != BUNDLE:
        raise ConfigError(f"{out}: not a bundle ({BUNDLE_OUTPUT.hint}); will not replace it")
    # Serialise before staging: an error (a NaN in metrics is fine; an odd object is not) then
    # leaves nothing behind at all. model.pt's bytes are hashed as they will be written.
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model_state.items()}, buf)
    weights = buf.getvalue()
    config = {"train_config": cfg.to_dict(),
              "input": {"height": cfg.image_size, "width": cfg.image_size,
                        "channels": cfg.channels, "normalisation": NORMALISATION},
              SHA256_KEY: {MODEL_FILE: hashlib.sha256(weights).hexdigest()},
              FORMAT_KEY: FORMAT}
    if cfg.crop_size > 0:  # trained on crops of photos at their own size: any size will do
        config["input"].update(height=None, width=None, native=True)
    object_size = trained_object_size(cfg)
    if object_size is not None:  # what `countnet predict --scale` is chosen from
        config[OBJECT_SIZE_KEY] = object_size
    config_text = json.dumps(config, indent=2, allow_nan=False)
    # Strict JSON: a NaN (a diverged confirm seed) is null, as in metrics.jsonl.
    metrics_text = json.dumps(nan_to_null(metrics), indent=2, default=str, allow_nan=False)
    with staged_dir(out) as stage:
        (stage / MODEL_FILE).write_bytes(weights)
        (stage / CONFIG_FILE).write_text(config_text)
        (stage / METRICS_FILE).write_text(metrics_text)
    return out


def read_bundle_json(path: Path) -> dict[str, Any]:
    """A bundle's config.json, a dict holding `train_config`; a bad file or key is one
    DataError or ConfigError line naming it."""
    file = path / CONFIG_FILE
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise DataError(f"{file}: larger than {MAX_CONFIG_BYTES} bytes; not a bundle config")
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{file}: not UTF-8 text (offset {e.start})") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{file}: not valid JSON (line {e.lineno} column {e.colno}: "
                        f"{e.msg})") from None
    except RecursionError:
        raise DataError(f"{file}: not valid JSON (nested too deeply)") from None
    if not isinstance(data, dict) or "train_config" not in data:
        raise ConfigError(f"{file}: no 'train_config' key (the TrainConfig the model was "
                          f"trained with)")
    return data


def recorded_sha256(data: dict[str, Any], where: Path) -> str | None:
    """model.pt's sha256 as config.json (`data`, read from `where`) records it; None when it
    records none, which only an older bundle (no format key) may do.

    Raises:
        IntegrityError: a bundle of a format that always records the hash records none.
        DataError: the record is malformed.
    """
    if SHA256_KEY not in data:
        if FORMAT_KEY in data:
            raise IntegrityError(f"{where}: records no {SHA256_KEY} of {MODEL_FILE}, and "
                                 f"countnet records it in every bundle with a {FORMAT_KEY!r} "
                                 f"key: {MODEL_FILE} cannot be checked; use an intact copy of "
                                 f"the bundle")
        return None
    digests = data[SHA256_KEY]
    digest = digests.get(MODEL_FILE) if isinstance(digests, dict) else None
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise DataError(f"{where}: {SHA256_KEY}: must be {{\"{MODEL_FILE}\": 64 lowercase hex "
                        f"digits}}, got {json.dumps(digests)[:80]}")
    return digest


def config_from(values: Any, where: str) -> TrainConfig:
    """TrainConfig.from_dict with the file named. Its validation caps image_size, width and depth,
    so an untrusted bundle cannot ask for a model that exhausts memory."""
    try:
        return TrainConfig.from_dict(values)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def read_history(path: str | Path) -> list[dict[str, Any]]:
    """The per-epoch metrics a bundle's metrics.json carries: its `history` list, a list of
    epochs, or one epoch (a dict with `train_loss`); [] when it has none or no metrics.json.

    Args:
        path: the bundle directory.

    Raises:
        DataError: metrics.json is not JSON (one line naming it).
    """
    file = Path(path) / METRICS_FILE
    if not file.is_file():
        return []
    try:
        data = json.loads(file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{file}: not JSON ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("history"), list):
        return list(data["history"])
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and "train_loss" in data:
        return [data]
    return []


def load_model(path: str | Path, device: str | torch.device = "cpu", *,
               which: str = BEST) -> tuple[nn.Module, TrainConfig]:
    """(model in eval mode, its config) from a bundle dir, a run dir or a checkpoint file/dir.

    Args:
        path: what to load; its kind is `countnet.rundir.kind_of`'s, and any other path is one
            ConfigError line.
        device: where the model goes.
        which: a run dir's checkpoint, BEST ("best", lowest val_loss: what predict, evaluate
            and export take) or LAST ("last", the latest finite epoch: what diagnose takes). A
            bundle or a checkpoint holds one model, which is loaded either way.

    Raises:
        ConfigError: `which` is neither, or `path` is none of the three kinds.
        FileNotFoundError: a run dir without that checkpoint (no finite epoch was saved).
        DataError: a damaged or foreign file (one line naming it); IntegrityError (a
            DataError) for one whose sha256 differs from, or has lost, its record.

    Warns:
        UncheckedWarning: an older bundle or checkpoint without a recorded sha256, loaded
            unchecked.
    """
    p = Path(path)
    run_ckpt = checkpoint_path(p, which)  # checks `which` whatever `path` turns out to be
    kind = expect_kind(p, (BUNDLE, RUN, CHECKPOINT))
    if kind == BUNDLE:
        data = read_bundle_json(p)
        cfg = config_from(data["train_config"], f"{p / CONFIG_FILE}: train_config")
        digest = recorded_sha256(data, p / CONFIG_FILE)
        if digest is not None:
            check_sha256(p / MODEL_FILE, [digest], CONFIG_FILE)
        else:  # an older bundle (module docstring)
            warnings.warn(f"{p / MODEL_FILE}: loaded unchecked: {CONFIG_FILE} records no "
                          f"{SHA256_KEY} (a bundle of a countnet that recorded none)",
                          UncheckedWarning, stacklevel=2)
        state = check_state_dict(load_tensors(p / MODEL_FILE), str(p / MODEL_FILE))
        where = str(p / MODEL_FILE)
    else:
        if kind == RUN and not run_ckpt.is_file():
            raise FileNotFoundError(
                f"{p}: a run dir without {run_ckpt.relative_to(p)} (no finite epoch of it was "
                f"checkpointed)")
        ckpt_path = run_ckpt if kind == RUN else resolve(p)
        ckpt = load_checkpoint(ckpt_path)
        cfg, state = config_from(ckpt["config"], f"{ckpt_path}: config"), ckpt["model"]
        where = f"{ckpt_path}: model"
    check_shapes(cfg, state, where)
    model = model_from_config(cfg)
    model.load_state_dict(state)
    return model.to(device).eval(), cfg


def check_shapes(cfg: TrainConfig, state: dict[str, torch.Tensor], where: str) -> None:
    """The weights must fit the config's model exactly, checked on the meta device (no memory).

    After this the real model costs no more memory than the weights file already took.
    """
    with torch.device("meta"):
        skeleton = model_from_config(cfg)
    want = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    wrong = [k for k in want if k in have and want[k] != have[k]]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (first {k}: {list(have[k])}, "
                         f"config needs {list(want[k])})")
        raise DataError(f"{where}: weights do not fit the {cfg.model} model of the config: "
                        + "; ".join(parts))
