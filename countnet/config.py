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
POOLS = ("avg", "sum", "density")
OPTIMIZERS = ("adamw", "sgd")
# `lr_range` rises exponentially from lr/1000 to lr over the run (Smith's LR range test).
# `schedulefree`: Schedule-Free AdamW (Defazio et al. 2024), a linear warm-up of warmup_epochs and
# then a constant lr; the evaluated weights are its own average, so no stopping time is planned
# and the model at epoch e does not depend on `epochs` (what ASHA's early rungs need).
SCHEDULES = ("constant", "onecycle", "cosine", "lr_range", "schedulefree")
LOSSES = ("mse", "huber")
# `dihedral` (flips + 90° rotations) preserves the count; `photometric` is dihedral plus a gamma,
# contrast, brightness, blur and noise per image (countnet.augment). `crop` (random crop, resized
# back) does NOT: it cuts objects off at the border. It exists to show its effect in `countnet
# diagnose`.
AUGMENTS = ("none", "dihedral", "photometric", "crop")
DEVICES = ("auto", "cpu", "cuda")
# `auto`: bf16 autocast on CUDA and on CPUs with native bf16 (AMX, avx512_bf16), else fp32.
PRECISIONS = ("auto", "fp32", "bf16")
LAYOUTS = ("free", "grid")
# `image`: subtract each image's median (its background level), so the net sees objects, not
# lighting. Inside the model, so every caller (train, evaluate, predict) normalises alike.
INPUT_NORMS = ("none", "image")
# The registered models (countnet.models.MODELS); kept here so a config never imports torch.
MODEL_NAMES = ("simple", "resnet18", "resnet34", "resnet50", "resnet101")
MIN_FRAME = 5  # px: the smallest distractor frame still has a visible 3x3 hole
# Share of the image that objects of mean size (grown by min_gap) may cover. Measured with
# random placement: 0 of 64,000 objects dropped at 0.32; 0.2 % at 0.38 (see scenes.py).
FREE_MAX_DENSITY = 0.33
MAX_IMAGE_SIZE = 1024  # px: bounds memory for configs from untrusted bundles
# Caps on the `simple` model, for the same reason; far above every shipped search space.
MAX_WIDTH = 1024  # channels
MAX_DEPTH = 64  # conv layers


class ConfigError(ValueError):
    """A config key or value is wrong. The message names the key."""


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of a run, with its unit. See README for what the defaults reach."""

    # --- data ---------------------------------------------------------------------------------
    data: str = "synthetic"  # synthetic | folder (labels.csv) | carpk (CARPK layout)
    data_dir: str = ""  # folder or carpk root; unused for synthetic
    image_size: int = 64  # px, square; real photos are resized to it
    crop_size: int = 0  # px, square random crops of box-annotated photos at native size; 0 = off
    # box sides (the geometric mean of width and height): the std of the Gaussian that spreads
    # each object of a box-annotated photo over its density target (countnet.crops)
    density_sigma: float = 0.25
    channels: int = 1  # 1 (grey) or 3 (RGB)
    train_size: int = 12000  # images in the training split
    val_size: int = 2000  # images in the validation split
    test_size: int = 2000  # images in the test split (synthetic only)
    data_seed: int = 0  # seed of the synthetic splits; train/val/test derive disjoint seeds
    val_fraction: float = 0.2  # folder data without train/ and val/: share hashed into val
    val_equals_train: bool = False  # control: validate on the training samples themselves
    shuffle_labels: bool = False  # control (Zhang et al. 2017): permute the training labels
    train_eval_size: int = 1000  # cap on the fixed training subset for train_loss_eval, images

    # --- synthetic scenes: layout (what is drawn where) ----------------------------------------
    layout: str = "free"  # free: anywhere, border included, >= min_gap apart | grid: one per cell
    min_count: int = 0  # objects per synthetic image, inclusive
    max_count: int = 20  # objects per synthetic image, inclusive
    min_object_size: int = 3  # px, the shortest side of a rectangle
    max_object_size: int = 8  # px, the longest side; height and width are drawn independently
    min_gap: int = 1  # px of background between any two objects (free layout)
    distractors: int = 0  # max hollow frames per image that must NOT be counted

    # --- synthetic scenes: appearance, drawn per image (intensity units: image in [0, 1]) ------
    contrast_min: float = 0.25  # object level minus background level, lowest
    contrast_max: float = 0.9  # ... highest
    background_min: float = 0.0  # background level, lowest (capped at 1 - contrast)
    background_max: float = 0.5  # ... highest
    jitter: float = 0.1  # +/- relative jitter of each object's contrast (and colour)
    invert_prob: float = 0.2  # probability of dark objects on a light background (1 - image)
    gradient_max: float = 0.1  # largest rise of a linear background ramp across the image
    blur_min: float = 0.0  # px, std of a Gaussian blur, lowest
    blur_max: float = 0.8  # px, ... highest
    noise_min: float = 0.0  # std of Gaussian pixel noise, lowest
    noise_max: float = 0.06  # ... highest

    # --- model --------------------------------------------------------------------------------
    model: str = "simple"  # a name in countnet.models.MODELS
    input_norm: str = "image"  # none | image: subtract each image's median (its background)
    width: int = 32  # simple: channels of the widest conv layer
    depth: int = 5  # simple: number of 3x3 conv layers
    batchnorm: bool = False  # simple: BatchNorm after each conv
    # density: a 1x1 conv to a non-negative density per position, summed (a count is a sum of
    # local evidence); sum | avg: pooled features into one linear output (the earlier heads)
    pool: str = "density"
    dropout: float = 0.0  # probability, before the linear head
    small_stem: bool = True  # resnets: 3x3 stride-1 stem, no max-pool (for 64 px inputs)
    weights_path: str = ""  # resnets: local torchvision state_dict; nothing is downloaded
    freeze_body: bool = False  # train the head only (fastai's create_cnn before unfreeze)
    freeze_bn: bool = False  # keep BatchNorm running statistics fixed (BN layers stay in eval)

    # --- optimisation -------------------------------------------------------------------------
    optimizer: str = "adamw"  # adamw | sgd (with momentum)
    lr: float = 2e-3  # peak learning rate, per step
    momentum: float = 0.9  # sgd momentum; adamw beta1 is left at torch's default
    weight_decay: float = 0.0  # decoupled for adamw, L2-in-gradient for sgd
    wd_exclude_bn_bias: bool = True  # no weight decay on BatchNorm weights and biases
    # constant | onecycle | cosine | lr_range, stepped per batch | schedulefree (its own optimiser)
    schedule: str = "onecycle"
    # epochs of linear warm-up (schedulefree), fixed whatever `epochs` is; in epochs like
    # ema_epochs, so one setting suits 200 images and 12,000 alike
    warmup_epochs: float = 1.0
    epochs: int = 16  # passes over the training split
    # images per step. 32, not 64: the same epoch time on a CPU, twice the steps, and a val_loss
    # 2x lower on 3 seeds, with every shift-suite set >= 0.985 (docs/benchmarks.md)
    batch_size: int = 32
    grad_clip: float = 1.0  # max global gradient norm per step; 0 = no clipping
    # epochs: time constant of an exponential moving average of the weights; evaluation,
    # checkpoints and bundles use the average (train_loss stays the trained weights'); 0 = off
    ema_epochs: float = 0.5
    loss: str = "mse"  # mse | huber (delta = 1 object)
    # box-annotated crops only: weight of the loss on the counts of density_cell x density_cell px
    # regions against the density target (where the objects are, not only how many); 0 = the
    # crop's count alone
    density_loss: float = 1.0
    density_cell: int = 8  # px of the input: side of the regions that density_loss compares
    # none | dihedral | photometric (both count-preserving) | crop (NOT count-preserving)
    augment: str = "none"
    seed: int = 0  # model init, shuffling, augmentation and dropout
    device: str = "auto"  # auto picks cuda when present, else cpu
    precision: str = "auto"  # auto | fp32 | bf16 (autocast; weights, losses, metrics stay fp32)
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPUs and GPUs
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    eval_batch_size: int = 500  # images per forward pass in evaluation

    def __post_init__(self) -> None:
        validate(self)

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


def validate(cfg: TrainConfig) -> None:
    """Every check of a config, in one place: choices, ranges, finite numbers, scene fit, model
    limits. Runs on construction, so `train`, `search`, `generate` and `evaluate` all reject a bad
    config before anything is written or started. Raises ConfigError naming the field(s).
    """
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{f.name}: must be a finite number, got {value}")
    for key, choices in (("model", MODEL_NAMES), ("data", DATA_KINDS), ("pool", POOLS),
                         ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("loss", LOSSES),
                         ("augment", AUGMENTS), ("device", DEVICES), ("precision", PRECISIONS),
                         ("layout", LAYOUTS), ("input_norm", INPUT_NORMS)):
        _check_choice(key, getattr(cfg, key), choices)
    if cfg.channels not in (1, 3):
        raise ConfigError(f"channels: must be 1 or 3, got {cfg.channels}")
    if cfg.data != "synthetic" and not cfg.data_dir:
        raise ConfigError(f"data_dir: required when data is {cfg.data!r}")
    for name in ("image_size", "train_size", "val_size", "epochs", "batch_size", "width",
                 "depth", "eval_batch_size", "min_object_size", "train_eval_size"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"{name}: must be >= 1, got {getattr(cfg, name)}")
    for name in ("min_count", "distractors", "test_size", "threads", "min_gap", "grad_clip",
                 "warmup_epochs"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name}: must be >= 0, got {getattr(cfg, name)}")
    for low, high in (("min_count", "max_count"), ("min_object_size", "max_object_size"),
                      ("contrast_min", "contrast_max"), ("background_min", "background_max"),
                      ("blur_min", "blur_max"), ("noise_min", "noise_max")):
        if getattr(cfg, high) < getattr(cfg, low):
            raise ConfigError(f"{high}: {getattr(cfg, high)} < {low} {getattr(cfg, low)}")
    for name in ("contrast_min", "contrast_max", "background_min", "background_max",
                 "invert_prob", "gradient_max"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ConfigError(f"{name}: must be in [0, 1], got {getattr(cfg, name)}")
    if cfg.contrast_max <= 0:
        raise ConfigError("contrast_max: must be > 0, or objects are invisible")
    if cfg.image_size > MAX_IMAGE_SIZE:
        raise ConfigError(f"image_size: at most {MAX_IMAGE_SIZE} px, got {cfg.image_size}")
    if not 0 <= cfg.crop_size <= MAX_IMAGE_SIZE:
        raise ConfigError(f"crop_size: must be in [0, {MAX_IMAGE_SIZE}] px (0 = off), got "
                          f"{cfg.crop_size}")
    if cfg.crop_size and cfg.data == "synthetic":
        raise ConfigError("crop_size: crops need box-annotated photos (data: carpk or folder), "
                          "not data 'synthetic'")
    if cfg.schedule == "schedulefree":
        if cfg.optimizer != "adamw":
            raise ConfigError(f"schedule: schedulefree is AdamW's; got optimizer {cfg.optimizer!r}")
        if cfg.ema_epochs > 0:
            raise ConfigError("ema_epochs: schedulefree evaluates its own average of the weights; "
                              f"set ema_epochs=0 (got {cfg.ema_epochs})")
    if cfg.density_sigma <= 0:
        raise ConfigError(f"density_sigma: must be > 0 (box sides), got {cfg.density_sigma}")
    if cfg.density_cell < 1:
        raise ConfigError(f"density_cell: must be >= 1 px, got {cfg.density_cell}")
    if cfg.crop_size and cfg.density_loss > 0 and cfg.pool != "density":
        raise ConfigError(f"density_loss: needs pool 'density' (a density map to compare), got "
                          f"pool {cfg.pool!r}; set density_loss=0 to train on counts alone")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ConfigError(f"dropout: must be in [0, 1), got {cfg.dropout}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise ConfigError(f"val_fraction: must be in (0, 1), got {cfg.val_fraction}")
    if cfg.lr <= 0:
        raise ConfigError(f"lr: must be > 0, got {cfg.lr}")
    for name in ("weight_decay", "jitter", "momentum", "blur_min", "noise_min", "ema_epochs",
                 "density_loss"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"{name}: must be >= 0, got {getattr(cfg, name)}")
    if cfg.model == "simple" and cfg.depth < 2:
        raise ConfigError(f"depth: the simple model needs >= 2 conv layers, got {cfg.depth}")
    for name, cap in (("width", MAX_WIDTH), ("depth", MAX_DEPTH)):
        if getattr(cfg, name) > cap:
            raise ConfigError(f"{name}: {getattr(cfg, name)} is above the cap of {cap}")
    if cfg.data == "synthetic":
        _check_scene_fits(cfg)


def evaluates_average(cfg: TrainConfig) -> bool:
    """Whether a run evaluates (and saves as its model) an average of the weights it trains:
    the EMA (ema_epochs > 0) or schedulefree's own average. Its checkpoints then hold the trained
    weights too ("train_model"), which `countnet diagnose` compares."""
    return cfg.ema_epochs > 0 or cfg.schedule == "schedulefree"


def grid_cells(cfg: TrainConfig) -> int:
    """Cells per side of the grid layout: one cell for every object and distractor."""
    return max(1, math.ceil(math.sqrt(cfg.max_count + cfg.distractors)))


def _check_scene_fits(cfg: TrainConfig) -> None:
    """Every count from min_count to max_count must fit, for the largest objects."""
    fields = "image_size, max_count, max_object_size, min_gap"
    if cfg.max_object_size > cfg.image_size:
        raise ConfigError(f"max_object_size: {cfg.max_object_size} px > image_size "
                          f"{cfg.image_size} px")
    if cfg.layout == "grid":
        grid = grid_cells(cfg)
        need = max(cfg.max_object_size, MIN_FRAME if cfg.distractors else 0) + 2
        if cfg.image_size // grid < need:
            raise ConfigError(
                f"scene does not fit ({fields.replace('min_gap', 'distractors')}): "
                f"{cfg.max_count} objects + {cfg.distractors} distractors need a {grid}x{grid} "
                f"grid of {need} px cells, but image_size {cfg.image_size} gives "
                f"{cfg.image_size // grid} px cells")
        return
    # Free layout: objects of mean size, grown by min_gap, may cover at most FREE_MAX_DENSITY
    # of the image, so that random placement finds room for every one of them.
    def mean_side(low: int) -> float:
        return (low + max(low, cfg.max_object_size)) / 2 + cfg.min_gap

    cover = cfg.max_count * mean_side(cfg.min_object_size) ** 2
    if cfg.distractors:
        cover += cfg.distractors * mean_side(max(MIN_FRAME, cfg.min_object_size)) ** 2
    share = cover / (cfg.image_size + cfg.min_gap) ** 2
    if share > FREE_MAX_DENSITY:
        raise ConfigError(
            f"scene does not fit ({fields}): {cfg.max_count} objects + {cfg.distractors} "
            f"distractors of mean size (with gap) would cover {share:.0%} of a {cfg.image_size} "
            f"px image, more than {FREE_MAX_DENSITY:.0%}; raise image_size or lower max_count / "
            f"max_object_size / min_gap")


def read_yaml(path: str | Path, error: type[ConfigError] = ConfigError) -> Any:
    """Parse a YAML file with safe_load (never runs code); a failure is one line naming it."""
    try:
        return yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise error(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None


def data_fields() -> tuple[str, ...]:
    """The fields that shape a run's data: those declared before `model` (the data and scene
    sections). They key the dataset cache, so this is derived from the declaration, not listed."""
    names = field_names()
    return names[:names.index("model")]


def scene_fields() -> tuple[str, ...]:
    """The fields of the synthetic-scene sections (layout and appearance), in declared order."""
    names = field_names()
    return names[names.index("layout"):names.index("model")]


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


def field_type(name: str) -> type:
    """The declared type (int, float, bool or str) of one TrainConfig field."""
    return _field_types()[name]


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
        number = yaml_float(value)
        if number is not None:
            return number
    elif typ is str and isinstance(value, str):
        return value
    raise ConfigError(f"{key}: expected {typ.__name__}, got {type(value).__name__} {value!r}")


def yaml_float(value: Any) -> float | None:
    """A finite float from YAML 1.1's reading of `1e-3` (no dot), which is a string; else None.

    The one place that accepts such strings: configs (`_coerce`) and search-space bounds
    (`tune.space`) both call it.
    """
    if not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)}; got {value!r}")
