"""`TrainConfig`: the single, frozen description of one training run (one trial).

nanoGPT style: one block of commented defaults, overrides checked against the known keys, and the
resolved config saved with every checkpoint. Search-space keys are these field names.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# Choices for the string-valued fields; checked in `TrainConfig.__post_init__`.
DATA_KINDS = ("synthetic", "folder", "carpk")
POOLS = ("avg", "sum")
OPTIMIZERS = ("adamw", "sgd")
# `lr_range` rises exponentially from lr/1000 to lr over the run (Smith's LR range test).
SCHEDULES = ("constant", "onecycle", "cosine", "lr_range")
LOSSES = ("mse", "huber")
# `dihedral` (flips + 90° rotations) preserves the count. `crop` (random crop, resized back) does
# NOT: it cuts objects off at the border. It exists to show its effect in `countnet diagnose`.
AUGMENTS = ("none", "dihedral", "crop")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp32", "bf16")


class ConfigError(ValueError):
    """A config key or value is wrong. The message names the key."""


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run, with its unit. Defaults reach val_acc >= 0.95 on a 2-core CPU."""

    # --- data ---------------------------------------------------------------------------------
    data: str = "synthetic"  # synthetic | folder (labels.csv) | carpk (CARPK layout)
    data_dir: str = ""  # folder or carpk root; unused for synthetic
    image_size: int = 64  # px, square; real photos are resized to it
    channels: int = 1  # 1 (grey) or 3 (RGB)
    min_count: int = 0  # objects per synthetic image, inclusive
    max_count: int = 20  # objects per synthetic image, inclusive
    min_object_size: int = 3  # px, side of the smallest rectangle
    max_object_size: int = 8  # px, side of the largest rectangle
    distractors: int = 0  # max hollow frames per image that must NOT be counted
    noise: float = 0.05  # std of Gaussian pixel noise, intensity units (image in [0, 1])
    jitter: float = 0.2  # +/- relative jitter of object intensity / colour
    train_size: int = 12000  # images in the training split
    val_size: int = 2000  # images in the validation split
    test_size: int = 2000  # images in the test split (synthetic only)
    data_seed: int = 0  # seed of the synthetic splits; train/val/test derive disjoint seeds
    val_fraction: float = 0.2  # folder data without train/ and val/: share hashed into val
    val_equals_train: bool = False  # control: validate on the training samples themselves
    shuffle_labels: bool = False  # control (Zhang et al. 2017): permute the training labels
    train_eval_size: int = 2000  # cap on the fixed training subset for train_loss_eval, images

    # --- model --------------------------------------------------------------------------------
    model: str = "simple"  # a name in countnet.models.MODELS
    width: int = 32  # simple: channels of the widest conv layer
    depth: int = 5  # simple: number of 3x3 conv layers
    batchnorm: bool = False  # simple: BatchNorm after each conv
    pool: str = "sum"  # avg | sum; sum suits counting (a count is a sum of local evidence)
    dropout: float = 0.0  # probability, before the linear head
    small_stem: bool = True  # resnets: 3x3 stride-1 stem, no max-pool (for 64 px inputs)
    weights_path: str = ""  # resnets: local torchvision state_dict; nothing is downloaded
    freeze_body: bool = False  # train the head only (fastai's create_cnn before unfreeze)
    freeze_bn: bool = False  # keep BatchNorm running statistics fixed (BN layers stay in eval)

    # --- optimisation -------------------------------------------------------------------------
    optimizer: str = "adamw"  # adamw | sgd (with momentum)
    lr: float = 3e-3  # peak learning rate, per step
    momentum: float = 0.9  # sgd momentum; adamw beta1 is left at torch's default
    weight_decay: float = 0.0  # decoupled for adamw, L2-in-gradient for sgd
    wd_exclude_bn_bias: bool = True  # no weight decay on BatchNorm weights and biases
    schedule: str = "onecycle"  # constant | onecycle | cosine | lr_range, stepped per batch
    epochs: int = 8  # passes over the training split
    batch_size: int = 64  # images per step
    loss: str = "mse"  # mse | huber (delta = 1 object)
    augment: str = "none"  # none | dihedral (count-preserving) | crop (NOT count-preserving)
    seed: int = 0  # model init, shuffling, augmentation and dropout
    device: str = "auto"  # auto picks cuda when present, else cpu
    precision: str = "fp32"  # fp32 | bf16 (autocast on CUDA; weights and loss stay fp32)
    channels_last: bool = False  # NHWC memory format for convolutions on the GPU
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    eval_batch_size: int = 500  # images per forward pass in evaluation

    def __post_init__(self) -> None:
        from countnet.models import MODELS  # local import: the registry needs torch

        _check_choice("model", self.model, tuple(MODELS))
        _check_choice("data", self.data, DATA_KINDS)
        _check_choice("pool", self.pool, POOLS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("loss", self.loss, LOSSES)
        _check_choice("augment", self.augment, AUGMENTS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("precision", self.precision, PRECISIONS)
        if self.channels not in (1, 3):
            raise ConfigError(f"channels: must be 1 or 3, got {self.channels}")
        if self.data != "synthetic" and not self.data_dir:
            raise ConfigError(f"data_dir: required when data is {self.data!r}")
        for name in ("image_size", "train_size", "val_size", "epochs", "batch_size", "width",
                     "depth", "eval_batch_size", "min_object_size", "train_eval_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("min_count", "distractors", "test_size", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if self.max_count < self.min_count:
            raise ConfigError(f"max_count: {self.max_count} < min_count {self.min_count}")
        if self.max_object_size < self.min_object_size:
            raise ConfigError(
                f"max_object_size: {self.max_object_size} < min_object_size {self.min_object_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: must be in [0, 1), got {self.dropout}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction: must be in (0, 1), got {self.val_fraction}")
        if self.lr <= 0:
            raise ConfigError(f"lr: must be > 0, got {self.lr}")
        for name in ("weight_decay", "noise", "jitter", "momentum"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}: must be >= 0, got {getattr(self, name)}")

    # --- conversion ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build a config from plain values. Unknown keys and wrong types raise ConfigError."""
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a mapping of field: value, got {type(d).__name__}")
        hints = _field_types()
        unknown = sorted(k for k in d if k not in hints)
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(map(str, unknown))} "
                              f"(known: {', '.join(hints)})")
        values = {k: _coerce(k, v, hints[k]) for k, v in d.items()}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, in field order: safe for YAML, JSON and `torch.load(weights_only=True)`."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed, type-checked like `from_dict`."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
        """Load a YAML file of fields (may be empty) and apply `key=value` overrides."""
        d: dict[str, Any] = {}
        if path:
            loaded = read_yaml(path)
            if loaded is not None and not isinstance(loaded, dict):
                raise ConfigError(f"{path}: must hold a mapping of field: value")
            d.update(loaded or {})
        d.update(parse_overrides(overrides or []))
        return cls.from_dict(d)

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def read_yaml(path: str | Path, error: type[ConfigError] = ConfigError) -> Any:
    """Parse a YAML file with safe_load (never runs code); a failure is one line naming it."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None


def field_names() -> tuple[str, ...]:
    """The names of all TrainConfig fields: the only keys a config or search space may use."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["lr=1e-3", "model=resnet18"]` -> dict. Values are parsed as YAML scalars (never eval)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: cannot parse value: {e}") from e
    return out


def _field_types() -> dict[str, type]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig)}


def _coerce(key: str, value: Any, typ: type) -> Any:
    """Accept exact types, ints for floats and YAML's `1e-3` strings for floats; nothing else."""
    if typ is bool:
        if isinstance(value, bool):
            return value
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                return number
    elif typ is str and isinstance(value, str):
        return value
    raise ConfigError(f"{key}: expected {typ.__name__}, got {type(value).__name__} {value!r}")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)}; got {value!r}")
