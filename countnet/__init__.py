"""countnet: count objects in images with a CNN, with losses you can trust."""

from __future__ import annotations

# Importing countnet changes no environment variable: the processes countnet starts set
# OMP_WAIT_POLICY themselves, before torch loads (countnet.runtime).

__version__ = "0.2.0"  # as pyproject.toml; 0.2: density head and weight averaging
