"""countnet: count objects in images with a CNN, with losses you can trust."""

from __future__ import annotations

import os

# OpenMP threads sleep instead of spinning while they wait. On a busy or shared machine a spinning
# thread burns the core its partner needs: training ran ~4x slower on a loaded 2-core box
# (bench/data.py, bench/gpu.sh --cpu-check). It takes effect when countnet is imported before
# torch, as in the `countnet` command and in Ray trials; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.2.0"  # as pyproject.toml; 0.2: density head and weight averaging
