"""countnet: count objects in images with a CNN, with losses you can trust."""

from __future__ import annotations

__version__ = "0.1.0"
