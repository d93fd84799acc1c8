"""Model registry: name -> builder. Every model maps (B, C, H, W) images to (B,) counts.

A model is a body (feature map) followed by a regression head: pooling -> optional dropout ->
linear -> one output. Sum pooling suits counting: a count is a sum of local evidence, and the sum
stays right when the image grows, where an average would need the image size baked in.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from countnet.config import POOLS, TrainConfig

DENSITY_INIT = 0.01  # objects per position of the final map at init (about 10 on a 32x32 map)


class CountHead(nn.Module):
    """Pooling (avg | sum) -> dropout p -> linear -> (B,); or a density map summed (density).

    `density` (Lempitsky & Zisserman 2010; CSRNet, DM-Count): a 1x1 conv gives every position a
    non-negative density (ReLU), and the count is its sum. Background positions then add exactly
    0, whatever the image size, where a linear head on a sum adds w . f(background) per position.
    """

    def __init__(self, in_features: int, pool: str = "sum", dropout: float = 0.0) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool: must be one of {', '.join(POOLS)}, got {pool!r}")
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        if pool == "density":
            self.fc = nn.Conv2d(in_features, 1, 1)
            # Start as a flat positive density: zero weights (Fixup), so no position starts dead
            # under the ReLU, and a bias of DENSITY_INIT objects per position (about the mean count
            # of the default 64 px scenes).
            nn.init.zeros_(self.fc.weight)
            nn.init.constant_(self.fc.bias, DENSITY_INIT)
        else:
            self.fc = nn.Linear(in_features, 1)

    def density(self, feats: torch.Tensor) -> torch.Tensor:  # (B, F, h, w) -> (B, 1, h, w)
        """Per-position density; its sum over positions is the count (pool `density` only)."""
        with torch.autocast(feats.device.type, enabled=False):
            return torch.relu(self.fc(self.dropout(feats.float())))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:  # (B, F, h, w) -> (B,)
        # Pool and regress in fp32 even under bf16 autocast: a bf16 sum of 1,000 positions, or a
        # bf16 count (steps of 0.125 from 16 to 32), would round the count itself.
        if self.pool == "density":
            return self.density(feats).sum((1, 2, 3))
        with torch.autocast(feats.device.type, enabled=False):
            feats = feats.float()
            pooled = feats.sum((2, 3)) if self.pool == "sum" else feats.mean((2, 3))  # (B, F)
            return self.fc(self.dropout(pooled)).squeeze(1)


class ImageNorm(nn.Module):
    """Subtract each image's median, its background level (objects cover well under half).

    Lighting then no longer shifts the input; the net sees objects as departures from the
    background, in either polarity. Part of the model, so train, evaluate and predict all see it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C, H, W)
        level = x.flatten(1).median(dim=1).values  # (B,)
        return x - level.view(-1, 1, 1, 1)


class CountNet(nn.Module):
    """Input normalisation, a body producing a feature map, and a CountHead."""

    def __init__(self, body: nn.Module, features: int, pool: str, dropout: float,
                 input_norm: str = "none") -> None:
        super().__init__()
        self.norm = ImageNorm() if input_norm == "image" else nn.Identity()
        self.body = body
        self.head = CountHead(features, pool, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B,)
        return self.head(self.body(self.norm(x)))

    def density_map(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 1, h, w)
        """The per-position density whose sum is the count (pool `density` only), fp32."""
        return self.head.density(self.body(self.norm(x)))


def simple(channels: int = 1, width: int = 32, depth: int = 5, batchnorm: bool = False,
           pool: str = "sum", dropout: float = 0.0, input_norm: str = "none") -> CountNet:
    """A plain CNN that trains fast on a CPU: `depth` 3x3 convs, ReLU, stride 2 once.

    Widths grow from width/2 to width. One early stride-2 conv quarters the cost; the receptive
    field (>= 9 px for depth 5) covers a whole rectangle, so a corner detector plus sum pooling
    can count exactly. Without BatchNorm by default: with it, the same net learned far slower.
    """
    if depth < 2:
        raise ValueError(f"depth: simple needs >= 2 conv layers, got {depth}")
    layers: list[nn.Module] = []
    c_in = channels
    for i in range(depth):
        c_out = max(4, width // 2) if i == 0 else width
        stride = 2 if i == 1 else 1
        layers.append(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batchnorm))
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        layers.append(nn.ReLU(inplace=True))
        c_in = c_out
    return CountNet(nn.Sequential(*layers), c_in, pool, dropout, input_norm)


def _torchvision_arch(arch: str) -> Callable[..., nn.Module]:
    """torchvision's builder of `arch`, imported here: `import torchvision` pulls in
    torch._dynamo (about 2 s of every `countnet` command and Ray worker), which the `simple`
    net never needs."""
    import torchvision.models

    return getattr(torchvision.models, arch)


def _resnet(arch: str) -> Callable[..., CountNet]:
    def build(channels: int = 1, pool: str = "avg", dropout: float = 0.0, small_stem: bool = True,
              input_norm: str = "none") -> CountNet:
        net = _torchvision_arch(arch)(weights=None)  # nothing is downloaded
        if small_stem:
            # 64 px inputs: a 3x3 stride-1 stem without max-pool keeps an 8x8 final map.
            net.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        elif channels != 3:
            net.conv1 = nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False)
        features = net.fc.in_features
        body = nn.Sequential(*(m for name, m in net.named_children()
                               if name not in ("avgpool", "fc")))
        return CountNet(body, features, pool, dropout, input_norm)

    build.__doc__ = (f"torchvision {arch} body (weights=None; model_from_config loads a local "
                     f"state_dict) + count head.")
    return build


def load_torchvision_weights(model: CountNet, arch: str, path: str | Path) -> None:
    """Load a local torchvision `arch` state_dict (weights_path) into a built ResNet's body.

    The file must be a whole torchvision `arch` (checked strictly, as torchvision's own
    load_state_dict does). Its fc is not used, nor its stem conv where the builder replaced it
    (small_stem, or channels != 3): those layers keep their fresh initialisation.
    """
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    with torch.random.fork_rng(devices=[]):  # the reference's init leaves the RNG as it was
        ref = _torchvision_arch(arch)(weights=None)
    ref.load_state_dict(state)
    names = [n for n, _ in ref.named_children() if n not in ("avgpool", "fc")]
    for i, name in enumerate(names):  # body[i] is torchvision's child `name`
        src, dst = getattr(ref, name).state_dict(), model.body[i].state_dict()
        if src.keys() == dst.keys() and all(src[k].shape == dst[k].shape for k in src):
            model.body[i].load_state_dict(src)


MODELS: dict[str, Callable[..., CountNet]] = {
    "simple": simple,
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
    "resnet101": _resnet("resnet101"),
}
# Models that can start from a local torchvision state_dict (TrainConfig.weights_path): arch.
TORCHVISION_ARCH = {name: name for name in MODELS if name.startswith("resnet")}


def model_options(name: str) -> tuple[str, ...]:
    """The options a registered model's builder declares; each is the TrainConfig field of that
    name."""
    if name not in MODELS:
        raise ValueError(f"model: unknown {name!r}; registered: {', '.join(MODELS)}")
    return tuple(inspect.signature(MODELS[name]).parameters)


def model_fields(name: str) -> frozenset[str]:
    """The model-specific TrainConfig fields that model `name` uses: its builder's options, and
    weights_path for the models that load one. Every other TrainConfig field is used by all."""
    return frozenset(model_options(name)) | (
        {"weights_path"} if name in TORCHVISION_ARCH else frozenset())


def model_specific_fields() -> frozenset[str]:
    """The TrainConfig fields that some model uses and another ignores."""
    used = [model_fields(name) for name in MODELS]
    return frozenset().union(*used) - frozenset.intersection(*used)


def build_model(name: str, **options: object) -> CountNet:
    """Build a registered model. ValueError names an option the model does not take."""
    declared = model_options(name)
    for key in options:
        if key not in declared:
            raise ValueError(f"{key}: model {name} does not take it (it takes: "
                             f"{', '.join(declared)})")
    return MODELS[name](**options)


def model_from_config(cfg: TrainConfig) -> CountNet:
    """Build the run's model, passing it only its own options, and apply freeze_body (head-only
    training). It reads no file: weights come from a checkpoint or bundle (`load_state_dict`),
    or, when a run starts, from weights_path (`load_pretrained`).

    The frozen body's BatchNorm layers still run in train mode (batch statistics, drifting
    running statistics), as in PyTorch and fastai after `model.train()`; `freeze_bn` fixes them.

    Args:
        cfg: the run's config; its model-specific fields go to the builder (`model_options`).
    """
    model = build_model(cfg.model, **{key: getattr(cfg, key) for key in model_options(cfg.model)})
    if cfg.freeze_body:
        for p in model.body.parameters():
            p.requires_grad_(False)
    return model


def load_pretrained(model: CountNet, cfg: TrainConfig) -> None:
    """Load weights_path (a local torchvision state_dict) into a ResNet's body, in place.

    Only a run's start needs it: a checkpoint or bundle holds every weight already, so loading
    one never reads (nor needs) the pre-trained file again.

    Args:
        model: `model_from_config(cfg)`.
        cfg: the run's config; nothing happens without weights_path or for a model without one.
    """
    if cfg.weights_path and cfg.model in TORCHVISION_ARCH:
        load_torchvision_weights(model, TORCHVISION_ARCH[cfg.model], cfg.weights_path)


def set_train_mode(model: nn.Module, cfg: TrainConfig) -> None:
    """model.train(), but BatchNorm stays in eval when its statistics are frozen (freeze_bn)."""
    model.train()
    if cfg.freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
