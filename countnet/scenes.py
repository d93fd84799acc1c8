"""Synthetic counting scenes: filled rectangles to count, hollow frames (distractors) to ignore.

An image is a pure function of (seed, index): every random number comes from a counter-based hash of
(seed, index, stream), so the result does not depend on batch size, device or worker count.

Generation is vectorised over the whole batch with no Python loop per image or per object:
- non-overlap: the image is a G x G grid of cells; each object gets its own cell (a random
  permutation of cells per image, via argsort of hashed scores) and a jittered position inside it,
  at least 1 px away from the cell border, so objects never touch;
- drawing: a rectangle is the outer product of a 0/1 row interval and a 0/1 column interval, so
  the sum of all rectangles of an image is one matrix product, (H, N) @ (N, W), batched over the
  images (`bmm`). Objects never overlap, so the sum is the picture. A hollow frame is its
  rectangle minus its interior: one more (negative) rectangle.
- noise: a window of a fixed bank of Gaussian tiles, at a hashed tile and offset.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from countnet.config import TrainConfig

UINT32 = 0xFFFFFFFF
# Streams of the counter-based generator: each random quantity reads its own stream.
STREAM_COUNT, STREAM_CELLS, STREAM_SIZE, STREAM_POS, STREAM_TONE = 1, 2, 3, 4, 5
STREAM_NOISE, STREAM_BACKGROUND, STREAM_DISTRACT = 6, 7, 8
NOISE_TILES = 256  # tiles in the Gaussian noise bank
NOISE_BANK_SEED = 20240601
MIN_FRAME = 5  # px: the smallest distractor frame still has a visible 3x3 hole
BACKGROUND = 0.1  # mean background intensity; objects are brighter (0.55-1.0 before jitter)
OBJECT_TONE = 0.8


@dataclass(frozen=True)
class SceneSpec:
    """Parameters of a synthetic scene; the subset of TrainConfig that shapes an image."""

    image_size: int = 64  # px
    channels: int = 1  # 1 or 3
    min_count: int = 0  # objects, inclusive
    max_count: int = 20  # objects, inclusive
    min_object_size: int = 3  # px
    max_object_size: int = 8  # px
    distractors: int = 0  # max hollow frames, not counted
    noise: float = 0.05  # Gaussian pixel noise std, intensity units
    jitter: float = 0.2  # relative intensity / colour jitter

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> SceneSpec:
        return cls(cfg.image_size, cfg.channels, cfg.min_count, cfg.max_count,
                   cfg.min_object_size, cfg.max_object_size, cfg.distractors, cfg.noise,
                   cfg.jitter)

    @property
    def grid(self) -> int:
        """Cells per side: enough cells for every object and distractor."""
        return max(1, math.ceil(math.sqrt(self.max_count + self.distractors)))

    @property
    def cell(self) -> int:
        return self.image_size // self.grid

    def check(self) -> None:
        """Raise ValueError when the objects cannot fit without overlap."""
        need = max(self.max_object_size, MIN_FRAME if self.distractors else 0) + 2
        if self.cell < need:
            raise ValueError(
                f"scene: {self.max_count} objects + {self.distractors} distractors need a "
                f"{self.grid}x{self.grid} grid of {need}px cells, but image_size "
                f"{self.image_size} gives {self.cell}px cells; raise image_size or lower the "
                f"counts / max_object_size")


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32-style) on int64 tensors holding values in [0, 2^32)."""
    # Multipliers < 2^31 keep the products below 2^63, so int64 never overflows.
    x = (x ^ (x >> 16)) * 0x7FEB352D & UINT32
    x = (x ^ (x >> 15)) * 0x5BD1E995 & UINT32
    return x ^ (x >> 16)


def uniform(seed: int, indices: torch.Tensor, stream: int, n: int) -> torch.Tensor:
    """(B, n) floats in [0, 1): a pure function of (seed, index, stream, column)."""
    key = _hash32((indices.to(torch.int64) & UINT32) ^ _hash32(
        torch.tensor((seed * 0x9E3779B1 + stream * 0x85EBCA77) & UINT32, device=indices.device)))
    cols = torch.arange(n, device=indices.device, dtype=torch.int64)
    h = _hash32(_hash32(key[:, None] ^ (cols[None, :] * 0x27D4EB2F & UINT32)))  # (B, n)
    return h.to(torch.float64).div_(2.0**32).to(torch.float32)


@functools.lru_cache(maxsize=8)
def _noise_windows(size: int, device: str) -> torch.Tensor:
    """Every size x size window of a doubled (periodic) bank of Gaussian tiles, as a view.

    The bank comes from a fixed CPU generator, so the noise is the same on any device. Window
    `tile * 4 s^2 + dy * 2 s + dx` is tile `tile` rolled by (dy, dx): one gather per image
    instead of a per-pixel hash (which cost ~10x the whole scene).
    """
    gen = torch.Generator().manual_seed(NOISE_BANK_SEED)
    bank = torch.randn(NOISE_TILES, size, size, generator=gen).to(device)
    flat = bank.repeat(1, 2, 2).contiguous().view(-1)  # tiles of (2s, 2s), periodic
    n = flat.numel() - (size - 1) * (2 * size + 1)
    return flat.as_strided((n, size, size), (1, 2 * size, 1))


def _noise(seed: int, indices: torch.Tensor, c: int, s: int) -> torch.Tensor:
    """(B, c, s, s) standard normal noise: a pure function of (seed, index)."""
    b = indices.shape[0]
    u = uniform(seed, indices, STREAM_NOISE, 3 * c).view(b, 3, c)
    tile = (u[:, 0] * NOISE_TILES).long().clamp_max(NOISE_TILES - 1)  # (B, c)
    dy, dx = ((u[:, 1:] * s).long().clamp_max(s - 1)).unbind(1)  # (B, c) each
    return _noise_windows(s, str(indices.device))[tile * (4 * s * s) + dy * (2 * s) + dx]


def render(spec: SceneSpec, seed: int, indices: torch.Tensor,
           device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the scenes `indices` of dataset `seed`.

    Returns images (B, C, H, W) float32 in [0, 1] and counts (B,) float32.
    """
    spec.check()
    idx = indices.to(device=device, dtype=torch.int64)
    b, s, c, g = idx.shape[0], spec.image_size, spec.channels, spec.grid
    cells, cell = g * g, spec.cell

    # How many objects and distractors each image holds.
    span = spec.max_count - spec.min_count + 1
    count = spec.min_count + (uniform(seed, idx, STREAM_COUNT, 1)[:, 0] * span).long().clamp_max(
        span - 1)  # (B,)
    n_distract = (uniform(seed, idx, STREAM_DISTRACT, 1)[:, 0] * (spec.distractors + 1)).long()
    n_distract = torch.minimum(n_distract.clamp_max(spec.distractors), cells - count)

    # Cell ranks: a random permutation per image; rank < count holds an object, the next
    # n_distract ranks hold distractors, the rest stay empty.
    order = uniform(seed, idx, STREAM_CELLS, cells).argsort(dim=1)  # (B, cells): cell ids
    rank = order.argsort(dim=1)  # (B, cells): rank of each cell
    is_obj = rank < count[:, None]
    is_frame = (rank >= count[:, None]) & (rank < (count + n_distract)[:, None])

    # Sizes (px) and positions: objects and frames share the draw; frames are at least MIN_FRAME.
    u_size = uniform(seed, idx, STREAM_SIZE, 2 * cells).view(b, 2, cells)
    lo = torch.where(is_frame, max(MIN_FRAME, spec.min_object_size), spec.min_object_size)
    hi = torch.maximum(torch.full_like(lo, spec.max_object_size), lo)
    size = lo[:, None] + (u_size * (hi - lo + 1)[:, None]).long().clamp_max(
        (hi - lo)[:, None])  # (B, 2, cells): height, width
    slack = cell - 2 - size  # free px inside the cell, 1 px margin on each side
    u_pos = uniform(seed, idx, STREAM_POS, 2 * cells).view(b, 2, cells)
    offset = 1 + (u_pos * (slack + 1)).long().clamp_max(slack)
    cell_ids = torch.arange(cells, device=device)
    origin = torch.stack([cell_ids // g, cell_ids % g]) * cell  # (2, cells): row, col
    top_left = origin[None] + offset  # (B, 2, cells)
    bottom_right = top_left + size

    # Intensity (per object and channel), jittered; inactive cells draw nothing.
    tone = OBJECT_TONE * (1 + spec.jitter * (2 * uniform(seed, idx, STREAM_TONE, c * cells) - 1))
    tone = tone.view(b, c, cells) * (is_obj | is_frame)[:, None]  # (B, C, cells)

    if spec.distractors:  # hollow frames: minus their interior (a 1 px border stays lit)
        hole = torch.where(is_frame[:, None], -tone, torch.zeros_like(tone))
        top_left = torch.cat([top_left, top_left + 1], 2)  # (B, 2, 2 cells)
        bottom_right = torch.cat([bottom_right, bottom_right - 1], 2)
        tone = torch.cat([tone, hole], 2)
    canvas = _draw_rectangles(s, top_left, bottom_right, tone)

    background = BACKGROUND * (1 + spec.jitter * (2 * uniform(seed, idx, STREAM_BACKGROUND, c) - 1))
    images = canvas + background.view(b, c, 1, 1)
    if spec.noise > 0:
        images += spec.noise * _noise(seed, idx, c, s)
    return images.clamp_(0.0, 1.0), count.to(torch.float32)


def _draw_rectangles(s: int, top_left: torch.Tensor, bottom_right: torch.Tensor,
                     value: torch.Tensor) -> torch.Tensor:
    """Sum of value-weighted boxes [top, bottom) x [left, right) as batched matrix products.

    top_left, bottom_right: (B, 2, N) row/col; value: (B, C, N). Returns (B, C, s, s).
    """
    ar = torch.arange(s, device=value.device)
    rows = ((ar[None, :, None] >= top_left[:, 0, None, :])
            & (ar[None, :, None] < bottom_right[:, 0, None, :])).float()  # (B, s, N)
    cols = ((ar[None, None, :] >= top_left[:, 1, :, None])
            & (ar[None, None, :] < bottom_right[:, 1, :, None])).float()  # (B, N, s)
    if value.shape[1] == 1:
        return torch.bmm(rows * value[:, 0, None, :], cols)[:, None]
    return torch.einsum("brn,bcn,bns->bcrs", rows, value, cols)
