"""Batch augmentations on device tensors, driven by an explicit generator (reproducible)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

CROP_MIN_SCALE = 0.6  # `crop` keeps a random square of 60-100 % of the side


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Augment x (B, C, H, W). `generator` lives on the CPU; draws do not depend on the device.

    - none: x unchanged.
    - dihedral: one of the 8 flips/90-degree rotations per image; preserves the count.
    - crop: a random square crop resized back; cuts objects at the border, so it does NOT
      preserve the count (it exists to demonstrate the augmentation term of the diagnosis).
    """
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
