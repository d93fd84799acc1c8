"""Output helpers shared by the commands."""

from __future__ import annotations

import json
import math


def finite(obj: object) -> object:
    """JSON has no NaN/inf: replace them by None (null), recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def print_json(obj: object) -> None:
    """Strict JSON on stdout (non-finite numbers as null)."""
    print(json.dumps(finite(obj), indent=2))
