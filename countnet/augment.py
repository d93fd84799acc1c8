"""Batch augmentations on device tensors, driven by an explicit generator (reproducible)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

CROP_MIN_SCALE = 0.6  # `crop` keeps a random square of 60-100 % of the side
# `photometric`, per image (intensity units: an image in [0, 1]):
GAMMA = (0.7, 1.4)  # x ** gamma: darker or lighter mid-tones
CONTRAST = (0.6, 1.4)  # gain around the image's mean
BRIGHTNESS = (-0.15, 0.15)  # level shift
BLUR_PROB = 0.5  # share of images blurred by a 3x3 Gaussian of BLUR_SIGMA px
BLUR_SIGMA = 0.8  # px
NOISE_MAX = 0.04  # std of Gaussian pixel noise, drawn in [0, NOISE_MAX] per image


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator,
                  image_channels: int | None = None) -> torch.Tensor:
    """Augment x (B, C, H, W). `generator` lives on the CPU; draws do not depend on the device.

    - none: x unchanged.
    - dihedral: one of the 8 flips/90-degree rotations per image; preserves the count.
    - photometric: dihedral, then per image a gamma, contrast, brightness, sometimes a blur, and
      pixel noise (the look of another camera, light or ground); preserves the count.
    - crop: a random square crop resized back; cuts objects at the border, so it does NOT
      preserve the count (it exists to demonstrate the augmentation term of the diagnosis).

    Args:
        x: images (B, C, H, W), optionally followed by maps that must move with them.
        kind: one of the kinds above (TrainConfig.augment).
        generator: the draws' generator, on the CPU.
        image_channels: the first this many channels are the image; the rest (a density
            target) move with it but are never re-lit. None: all channels are the image.
    """
    if kind == "photometric":
        out = augment_batch(x, "dihedral", generator)
        c = x.shape[1] if image_channels is None else image_channels
        return torch.cat([photometric(out[:, :c], generator), out[:, c:]], 1)
    if kind == "none":
        return x
    b = x.shape[0]
    if kind == "dihedral":
        code = torch.randint(0, 8, (b,), generator=generator).to(x.device)  # (B,)
        out = torch.where((code % 2 == 1)[:, None, None, None], x.flip(3), x)
        rot = code // 2
        for k in range(1, 4):  # 3 whole-batch rotations, selected per image
            out = torch.where((rot == k)[:, None, None, None], torch.rot90(out, k, (2, 3)), out)
        return out
    if kind == "crop":
        scale = CROP_MIN_SCALE + (1 - CROP_MIN_SCALE) * torch.rand(b, generator=generator)
        shift = (1 - scale)[:, None] * (2 * torch.rand(b, 2, generator=generator) - 1)  # (B, 2)
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = scale
        theta[:, 1, 1] = scale
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", align_corners=False)
    raise ValueError(f"augment: unknown kind {kind!r}")


def photometric(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-image gamma, contrast, brightness, blur (BLUR_PROB of them) and noise of x
    (B, C, H, W) in [0, 1]; the result is clamped to [0, 1]."""
    b = x.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:  # (B, 1, 1, 1) on x's device
        return (low + (high - low) * torch.rand(b, generator=generator)).view(-1, 1, 1, 1).to(x)

    out = x.clamp(0, 1) ** uniform(*GAMMA)
    mean = out.mean((1, 2, 3), keepdim=True)
    out = (out - mean) * uniform(*CONTRAST) + mean + uniform(*BRIGHTNESS)
    k = torch.exp(-0.5 * (torch.arange(3.0) - 1) ** 2 / BLUR_SIGMA**2)
    kernel = (k[:, None] * k[None, :] / k.sum() ** 2).to(x).expand(x.shape[1], 1, 3, 3)
    blurred = F.conv2d(F.pad(out, (1, 1, 1, 1), mode="replicate"), kernel, groups=x.shape[1])
    blur = (torch.rand(b, generator=generator) < BLUR_PROB).view(-1, 1, 1, 1).to(x.device)
    out = torch.where(blur, blurred, out)
    noise = torch.randn(x.shape, generator=generator).to(x) * uniform(0.0, NOISE_MAX)
    return (out + noise).clamp(0, 1)
