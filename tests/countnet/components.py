"""Connected components, written independently of countnet's generator, to check its labels."""

from __future__ import annotations

import numpy as np


def components(mask: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """4-connected components of a boolean (H, W) mask: (top, left, bottom, right, pixels)."""
    seen = np.zeros_like(mask, dtype=bool)
    h, w = mask.shape
    out = []
    for r0 in range(h):
        for c0 in range(w):
            if not mask[r0, c0] or seen[r0, c0]:
                continue
            stack, pixels = [(r0, c0)], []
            seen[r0, c0] = True
            while stack:
                r, c = stack.pop()
                pixels.append((r, c))
                for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
                    if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        stack.append((rr, cc))
            rows = [p[0] for p in pixels]
            cols = [p[1] for p in pixels]
            out.append((min(rows), min(cols), max(rows) + 1, max(cols) + 1, len(pixels)))
    return out


def count_filled_rectangles(mask: np.ndarray) -> int:
    """Components that fill their bounding box (rectangles); hollow frames do not."""
    return sum(1 for top, left, bottom, right, n in components(mask)
               if n == (bottom - top) * (right - left))
