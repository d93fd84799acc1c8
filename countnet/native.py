"""Count one image at its own resolution, in tiles: the same count as one pass, bounded memory.

The models are fully convolutional up to their head, and every head sums over positions of the
feature map (`density` sums a per-position density; `sum` and `avg` pool the features before a
linear layer). So a large image is counted by running the body on overlapping tiles and letting
each tile contribute only the positions of its core:

- the image is normalised once, whole (`ImageNorm` subtracts the *image's* median; a tile's own
  median would differ), and the body runs on tiles of the normalised image;
- a tile starts on a multiple of the body's stride, so its positions are the image's positions;
- its halo (the overlap beyond the core) covers the receptive field, so every core position sees
  exactly the pixels, and the zero padding, that it sees in one pass over the whole image.

The tiled count then equals the untiled one up to float rounding (tests/countnet/test_native.py).
Only one tile's activations exist at a time; the image, its normalised copy and the density map
(one float per position) are the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from countnet.config import TrainConfig
from countnet.models import model_from_config
from countnet.precision import autocast

TILE_PX = 512  # px: side of a tile's core; its activations bound the memory of counting
PROBE_PX = 1024  # px: input side used to measure the body's stride (a power of two)
KERNEL_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


@dataclass
class NativeCount:
    """The count of one image and, when asked for, its density map."""

    count: float  # the model's raw count
    density: torch.Tensor | None = None  # (h, w) float32 on the CPU: per-position density


@dataclass
class Geometry:
    """Where the body's output positions sit in the input, measured once per model.

    Output position (i, j) is centred on input pixel (stride * i, stride * j) and depends on
    input pixels at most `radius` px away from it (zero padding included).
    """

    stride: int  # input px per output position
    radius: int  # px: an upper bound of the receptive field's reach from its centre
    skeleton: nn.Module = field(repr=False)  # the body on the meta device: output sizes, no memory
    channels: int = 1
    _sizes: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict, repr=False)

    @property
    def halo(self) -> int:
        """px of overlap on each side of a tile's core: the radius, rounded up to whole strides,
        plus one stride of margin."""
        return (math.ceil(self.radius / self.stride) + 1) * self.stride

    def out_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the body's output for an input of height x width px."""
        key = (height, width)
        if key not in self._sizes:
            probe = torch.empty((1, self.channels, height, width), device="meta")
            self._sizes[key] = tuple(self.skeleton(probe).shape[2:])
        return self._sizes[key]


def geometry(cfg: TrainConfig) -> Geometry:
    """The stride and receptive-field reach of the body of `cfg`'s model.

    The stride is measured (output size of a PROBE_PX input, on the meta device); the reach is
    added up layer by layer over every convolution and pooling: each adds its kernel's reach
    times the product of the strides before it. Walking layers in order overcounts a residual
    block's 1x1 shortcut stride, so the reach is an upper bound; it is exact for `simple`.

    Args:
        cfg: the model's training config.
    """
    with torch.device("meta"):
        skeleton = model_from_config(cfg).body.eval()
    probe = torch.empty((1, cfg.channels, PROBE_PX, PROBE_PX), device="meta")
    out = skeleton(probe).shape[2]
    stride = PROBE_PX // out
    if stride * out != PROBE_PX:
        raise ValueError(f"{cfg.model}: output {out} of a {PROBE_PX} px input is not a whole "
                         f"stride")
    jump, radius = 1, 0
    for layer in skeleton.modules():
        if isinstance(layer, KERNEL_LAYERS):
            kernel = _pair(layer.kernel_size)
            dilation = _pair(getattr(layer, "dilation", 1))
            pad = _pair(layer.padding)
            reach = max(max(p, d * (k - 1) - p) for k, d, p in zip(kernel, dilation, pad))
            radius += reach * jump
            jump *= max(_pair(layer.stride))
    return Geometry(stride, radius, skeleton, cfg.channels)


def spans(length: int, out_length: int, core: int, geo: Geometry) -> list[tuple[int, ...]]:
    """Tiles along one axis: (input start, input end, first core position, end core position).

    Core positions of consecutive tiles partition range(out_length); each tile's input reaches
    `geo.halo` px beyond its core (clipped to the image) and starts on a multiple of the stride.

    Args:
        length: the image's side, px.
        out_length: the body's output positions along this side.
        core: core positions per tile.
        geo: the body's geometry.
    """
    out = []
    for first in range(0, out_length, core):
        end = min(out_length, first + core)
        start = max(0, first * geo.stride - geo.halo)
        stop = min(length, end * geo.stride + geo.halo)
        out.append((start, stop, first, end))
    return out


@torch.inference_mode()
def count_native(model: nn.Module, geo: Geometry, x: torch.Tensor, *, tile: int = TILE_PX,
                 precision: str = "fp32", layout: torch.memory_format = torch.contiguous_format,
                 with_density: bool = False) -> NativeCount:
    """The count of one image x (C, H, W) at its own size, in tiles of `tile` px.

    Args:
        model: a CountNet (norm, body, head) in eval mode, on x's device.
        geo: `geometry` of its config.
        x: the image (C, H, W) in [0, 1], any size.
        tile: side of a tile's core in input px (rounded up to whole strides).
        precision: "fp32" or "bf16" (resolved): the body runs under this autocast; the head
            sums in fp32, as in the model's forward.
        layout: memory format of the tiles (the model's own).
        with_density: also return the density map (pool `density` only).
    """
    head = model.head
    if with_density and head.pool != "density":
        raise ValueError(f"a density map needs pool 'density', not {head.pool!r}")
    height, width = x.shape[1:]
    out_h, out_w = geo.out_size(height, width)
    core = max(1, math.ceil(tile / geo.stride))
    image = model.norm(x[None].float())  # (1, C, H, W): normalised whole (the image's median)
    density = torch.zeros((out_h, out_w)) if with_density else None
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    pooled = None  # (F,) float64: the sum of features over every position (sum / avg pools)
    for top, bottom, r0, r1 in spans(height, out_h, core, geo):
        for left, right, c0, c1 in spans(width, out_w, core, geo):
            piece = image[:, :, top:bottom, left:right].contiguous(memory_format=layout)
            with autocast(precision, x.device):
                feats = model.body(piece)  # (1, F, h, w)
            r, c = top // geo.stride, left // geo.stride  # the tile's first position
            feats = feats[:, :, r0 - r:r1 - r, c0 - c:c1 - c].float()  # the core's positions
            if head.pool == "density":
                d = head.density(feats)  # (1, 1, rows, cols)
                total += d.double().sum()
                if density is not None:
                    density[r0:r1, c0:c1] = d[0, 0].cpu()
            else:
                part = feats.double().sum((0, 2, 3))  # (F,)
                pooled = part if pooled is None else pooled + part
    if head.pool == "density":
        return NativeCount(float(total), density)
    if head.pool == "avg":
        pooled = pooled / (out_h * out_w)
    with torch.autocast(x.device.type, enabled=False):
        count = head.fc(head.dropout(pooled.float()[None]))  # (1, 1)
    return NativeCount(float(count.squeeze()))


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
