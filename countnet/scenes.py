"""Synthetic counting scenes: filled rectangles to count, hollow frames (distractors) to ignore.

An image is a pure function of (seed, index): every random number comes from a counter-based hash of
(seed, index, stream), so the result does not depend on batch size, device or worker count. The
scene's parameters are TrainConfig's scene fields (layout and appearance); there is no second
declaration of them.

Generation is vectorised over the batch; the only Python loop runs over object slots:
- layout `free` (default): objects anywhere, the border included, never closer than `min_gap` px.
  Slots are placed largest first; each draws PLACEMENT_TRIES candidate positions for the whole
  batch at once and keeps the first that clears every box placed so far (an interval test on
  box coordinates, no pixel maps). A slot that finds no room is left empty and is not counted;
  `config.FREE_MAX_DENSITY` keeps that rare (see bench/data.py).
- layout `grid`: the old G x G grid of cells, one object per cell, for comparison.
- drawing: a rectangle is the outer product of a 0/1 row interval and a 0/1 column interval, so
  the sum of an image's rectangles is one matrix product, (H, N) @ (N, W), batched (`bmm`).
  A hollow frame is its rectangle minus its interior: one more (negative) rectangle.
- appearance, drawn per image: contrast and background level, per-object contrast jitter, a linear
  background ramp, Gaussian blur, Gaussian noise (windows of a fixed bank), and dark-on-light
  polarity. So the net has to count shapes, not lit area x brightness.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch

from countnet.config import MIN_FRAME, TrainConfig, grid_cells

UINT32 = 0xFFFFFFFF
# Streams of the counter-based generator: each random quantity reads its own stream.
STREAM_COUNT, STREAM_CELLS, STREAM_SIZE, STREAM_POS, STREAM_TONE = 1, 2, 3, 4, 5
STREAM_NOISE, STREAM_LOOK, STREAM_DISTRACT = 6, 7, 8
STREAM_PLACE = 1000  # + slot: candidate positions of one free-layout slot
NOISE_TILES = 256  # tiles in the Gaussian noise bank
NOISE_BANK_SEED = 20240601
PLACEMENT_TRIES = 32  # candidate positions per free-layout slot
BLUR_RADIUS_SIGMAS = 3  # px of blur kernel per px of sigma, each side
# Columns of the per-image STREAM_LOOK draw.
LOOK_CONTRAST, LOOK_BACKGROUND, LOOK_INVERT, LOOK_RAMP, LOOK_ANGLE, LOOK_BLUR, LOOK_NOISE = range(7)


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


def _int_between(u: torch.Tensor, low: torch.Tensor | int,
                 high: torch.Tensor | int) -> torch.Tensor:
    """Integers uniform in [low, high] from uniforms u in [0, 1)."""
    span = torch.as_tensor(high) - low + 1
    return low + (u * span).long().clamp_max(span - 1)


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


class Scenes(NamedTuple):
    """Everything that decides a batch of scenes, before a pixel is drawn."""

    top_left: torch.Tensor  # (B, 2, M) row, col of each box; frames add their hole as a box
    bottom_right: torch.Tensor  # (B, 2, M) exclusive
    tone: torch.Tensor  # (B, C, M) level added inside each box (0 for empty slots)
    background: torch.Tensor  # (B,) background level
    ramp_rise: torch.Tensor  # (B,) rise of the linear ramp, corner to corner
    ramp_angle: torch.Tensor  # (B,) its direction, radians
    blur_sigma: torch.Tensor  # (B,) px
    noise_std: torch.Tensor  # (B,)
    invert: torch.Tensor  # (B,) bool: dark objects on a light background
    count: torch.Tensor  # (B,) objects placed (distractors excluded)


def describe(cfg: TrainConfig, seed: int, indices: torch.Tensor,
             device: torch.device | str = "cpu") -> Scenes:
    """The layout and look of the scenes `indices` of dataset `seed` (see `render`)."""
    idx = indices.to(device=device, dtype=torch.int64)
    b = idx.shape[0]
    count = _int_between(uniform(seed, idx, STREAM_COUNT, 1)[:, 0], cfg.min_count, cfg.max_count)
    n_distract = _int_between(uniform(seed, idx, STREAM_DISTRACT, 1)[:, 0], 0, cfg.distractors)
    layout = _grid_layout if cfg.layout == "grid" else _free_layout
    top_left, size, is_obj, is_frame = layout(cfg, seed, idx, count, n_distract)  # (B,2,N) (B,N)
    bottom_right = top_left + size

    # Per-image look: contrast, background (capped so that objects stay <= 1), polarity, ramp,
    # blur and noise levels; all in intensity units of an image in [0, 1].
    look = uniform(seed, idx, STREAM_LOOK, 7)  # (B, 7)
    contrast = cfg.contrast_min + (cfg.contrast_max - cfg.contrast_min) * look[:, LOOK_CONTRAST]
    bg_high = (1.0 - contrast).clamp(min=cfg.background_min).clamp(max=cfg.background_max)
    background = cfg.background_min + (bg_high - cfg.background_min) * look[:, LOOK_BACKGROUND]

    # Each object's (and channel's) level above the background, jittered; empty slots draw 0.
    c, n = cfg.channels, is_obj.shape[1]
    jitter = 1 + cfg.jitter * (2 * uniform(seed, idx, STREAM_TONE, c * n).view(b, c, n) - 1)
    tone = contrast[:, None, None] * jitter * (is_obj | is_frame)[:, None]  # (B, C, N)
    if cfg.distractors:  # hollow frames: minus their interior (a 1 px border stays lit)
        hole = torch.where(is_frame[:, None], -tone, torch.zeros_like(tone))
        top_left = torch.cat([top_left, top_left + 1], 2)  # (B, 2, 2N)
        bottom_right = torch.cat([bottom_right, bottom_right - 1], 2)
        tone = torch.cat([tone, hole], 2)

    def spread(low: float, high: float, col: int) -> torch.Tensor:
        return low + (high - low) * look[:, col]

    return Scenes(top_left, bottom_right, tone, background,
                  spread(0.0, cfg.gradient_max, LOOK_RAMP), spread(0.0, 2 * math.pi, LOOK_ANGLE),
                  spread(cfg.blur_min, cfg.blur_max, LOOK_BLUR),
                  spread(cfg.noise_min, cfg.noise_max, LOOK_NOISE),
                  look[:, LOOK_INVERT] < cfg.invert_prob, is_obj.sum(1).to(torch.float32))


def render(cfg: TrainConfig, seed: int, indices: torch.Tensor,
           device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Draw the scenes `indices` of dataset `seed` with the scene fields of `cfg`.

    Args:
        cfg: the run's config; only its scene fields (layout and appearance) are read.
        seed: the dataset seed (one per split, see `datasets.split_seed`).
        indices: (B,) scene numbers.
        device: where to draw.

    Returns images (B, C, H, W) float32 in [0, 1] and counts (B,) float32.
    """
    sc = describe(cfg, seed, indices, device)
    b, s = sc.count.shape[0], cfg.image_size
    blur = None
    if cfg.blur_max > 0:
        blur = _blur_matrix(s, sc.blur_sigma, math.ceil(BLUR_RADIUS_SIGMAS * cfg.blur_max))
    images = _draw_rectangles(s, sc.top_left, sc.bottom_right, sc.tone, blur)  # (B, C, H, W)
    # The background and its ramp are added unblurred: flat or linear, blur would barely change
    # them (a linear ramp only at the border, where the kernel is renormalised).
    images += sc.background.view(b, 1, 1, 1)
    if cfg.gradient_max > 0:
        images += _ramp(s, sc.ramp_rise, sc.ramp_angle)
    if cfg.noise_max > 0:
        images += sc.noise_std.view(b, 1, 1, 1) * _noise(seed, indices.to(sc.count.device),
                                                          cfg.channels, s)
    images = torch.where(sc.invert.view(b, 1, 1, 1), 1.0 - images, images)
    return images.clamp_(0.0, 1.0), sc.count


def _slot_sizes(cfg: TrainConfig, seed: int, idx: torch.Tensor, is_frame: torch.Tensor,
                ) -> torch.Tensor:
    """(B, 2, N) heights and widths in px, each uniform in its range; frames >= MIN_FRAME."""
    b, n = is_frame.shape
    lo = torch.where(is_frame, max(MIN_FRAME, cfg.min_object_size), cfg.min_object_size)
    hi = torch.clamp(lo, min=cfg.max_object_size)
    return _int_between(uniform(seed, idx, STREAM_SIZE, 2 * n).view(b, 2, n), lo[:, None],
                        hi[:, None])


def _free_layout(cfg: TrainConfig, seed: int, idx: torch.Tensor, count: torch.Tensor,
                 n_distract: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Random sequential placement: slots largest first, PLACEMENT_TRIES candidates each.

    Slots 0..max_count-1 are objects (the first `count` used), the rest distractors. Returns
    top_left (B, 2, N), size (B, 2, N), is_obj (B, N), is_frame (B, N) of the placed slots.
    """
    b, n_obj = idx.shape[0], cfg.max_count
    n = n_obj + cfg.distractors
    slot = torch.arange(n, device=idx.device)
    wanted_obj = slot[None] < count[:, None]  # (B, N)
    wanted_frame = (slot[None] >= n_obj) & (slot[None] - n_obj < n_distract[:, None])
    size = _slot_sizes(cfg, seed, idx, wanted_frame)
    wanted = wanted_obj | wanted_frame
    # Largest first: the big ones find room while the image is still empty.
    area = torch.where(wanted, size[:, 0] * size[:, 1], -1)
    order = area.argsort(dim=1, descending=True, stable=True)  # (B, N)

    gap, s = cfg.min_gap, cfg.image_size
    top_left = torch.zeros(b, 2, n, dtype=torch.int64, device=idx.device)
    placed = torch.zeros(b, n, dtype=torch.bool, device=idx.device)
    # The boxes placed in earlier rounds, grown by min_gap, as [y0, y1) x [x0, x1) in placement
    # order; a slot that found no room stays an empty box. int16: the compares are the hot loop.
    grown = torch.zeros(4, b, n, dtype=torch.int16, device=idx.device)
    rows = torch.arange(b, device=idx.device)
    for k in range(n):
        sl = order[:, k]  # (B,) the slot placed in this round
        hw = size[rows, :, sl]  # (B, 2)
        u = uniform(seed, idx, STREAM_PLACE + k, 2 * PLACEMENT_TRIES).view(b, 2, -1)
        cand = _int_between(u, 0, (s - hw)[:, :, None])  # (B, 2, T): top, left
        y0, x0 = cand.to(torch.int16).unbind(1)  # (B, T) each
        y1, x1 = y0 + hw[:, 0:1].to(torch.int16), x0 + hw[:, 1:2].to(torch.int16)
        gy0, gy1, gx0, gx1 = (g[:, None, :k] for g in grown)  # (B, 1, k) each
        hit = ((y0[..., None] < gy1) & (gy0 < y1[..., None])
               & (x0[..., None] < gx1) & (gx0 < x1[..., None]))  # (B, T, k)
        free = ~hit.any(2)  # (B, T)
        ok = free.any(1) & wanted[rows, sl]
        pos = cand[rows, :, free.to(torch.uint8).argmax(1)]  # (B, 2): the first free candidate
        top_left[rows, :, sl] = pos
        placed[rows, sl] = ok
        box = torch.stack([pos[:, 0] - gap, pos[:, 0] + hw[:, 0] + gap,
                           pos[:, 1] - gap, pos[:, 1] + hw[:, 1] + gap])  # (4, B)
        grown[:, :, k] = torch.where(ok, box, 0).to(torch.int16)
    return top_left, size, wanted_obj & placed, wanted_frame & placed


def _grid_layout(cfg: TrainConfig, seed: int, idx: torch.Tensor, count: torch.Tensor,
                 n_distract: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """One object per cell of a G x G grid, 1 px from the cell border (the old layout)."""
    b = idx.shape[0]
    g = grid_cells(cfg)
    cells, cell = g * g, cfg.image_size // g
    n_distract = torch.minimum(n_distract, cells - count)
    # Cell ranks: a random permutation per image; rank < count holds an object, the next
    # n_distract ranks hold distractors, the rest stay empty.
    order = uniform(seed, idx, STREAM_CELLS, cells).argsort(dim=1)  # (B, cells): cell ids
    rank = order.argsort(dim=1)  # (B, cells): rank of each cell
    is_obj = rank < count[:, None]
    is_frame = (rank >= count[:, None]) & (rank < (count + n_distract)[:, None])
    size = _slot_sizes(cfg, seed, idx, is_frame)
    slack = cell - 2 - size  # free px inside the cell, 1 px margin on each side
    offset = 1 + _int_between(uniform(seed, idx, STREAM_POS, 2 * cells).view(b, 2, cells), 0,
                              slack)
    cell_ids = torch.arange(cells, device=idx.device)
    origin = torch.stack([cell_ids // g, cell_ids % g]) * cell  # (2, cells): row, col
    return origin[None] + offset, size, is_obj, is_frame


def _draw_rectangles(s: int, top_left: torch.Tensor, bottom_right: torch.Tensor,
                     value: torch.Tensor, blur: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of value-weighted boxes [top, bottom) x [left, right) as batched matrix products.

    top_left, bottom_right: (B, 2, N) row/col; value: (B, C, N); blur: (B, s, s) or None.
    A separable blur is linear, so blurring each box's row and column intervals blurs the
    picture. Returns (B, C, s, s).
    """
    ar = torch.arange(s, device=value.device)
    rows = ((ar[None, :, None] >= top_left[:, 0, None, :])
            & (ar[None, :, None] < bottom_right[:, 0, None, :])).float()  # (B, s, N)
    cols = ((ar[None, None, :] >= top_left[:, 1, :, None])
            & (ar[None, None, :] < bottom_right[:, 1, :, None])).float()  # (B, N, s)
    if blur is not None:
        rows, cols = torch.bmm(blur, rows), torch.bmm(cols, blur.transpose(1, 2))
    if value.shape[1] == 1:
        return torch.bmm(rows * value[:, 0, None, :], cols)[:, None]
    return torch.einsum("brn,bcn,bns->bcrs", rows, value, cols)


def _ramp(s: int, rise: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """(B, 1, s, s) linear ramps through the image centre, rising `rise` corner to corner."""
    pos = torch.linspace(-0.5, 0.5, s, device=rise.device)  # (s,)
    cos, sin = angle.cos(), angle.sin()
    plane = cos.view(-1, 1, 1) * pos.view(1, 1, s) + sin.view(-1, 1, 1) * pos.view(1, s, 1)
    return (rise / (cos.abs() + sin.abs())).view(-1, 1, 1, 1) * plane[:, None]  # (B, 1, s, s)


@functools.lru_cache(maxsize=8)
def _diagonals(s: int, radius: int, device: str) -> torch.Tensor:
    """(2 radius + 1, s * s): the 0/1 masks of the diagonals -radius..radius of an s x s matrix."""
    ar = torch.arange(s, device=device)
    d = ar[:, None] - ar[None, :]  # (s, s): row minus column
    taps = torch.arange(-radius, radius + 1, device=device)
    return (d[None] == taps[:, None, None]).float().view(len(taps), s * s)


def _blur_matrix(s: int, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, s, s) Gaussian blur matrices, one sigma (px) per image, rows summing to 1.

    The banded matrix is its taps times fixed diagonal masks: one small matmul instead of an exp
    per matrix entry. Renormalising each row at the border keeps the edges as bright as the
    middle (as a replicated edge would) instead of fading them towards zero.
    """
    taps = torch.arange(-radius, radius + 1, device=sigma.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps[None] / sigma.clamp(min=1e-3)[:, None]) ** 2)  # (B, K)
    k = (kernel @ _diagonals(s, radius, str(sigma.device))).view(-1, s, s)
    return k / k.sum(2, keepdim=True)
