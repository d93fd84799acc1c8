"""Numbers for people and for JSON: one finiteness test, one NaN-to-null rule, one formatter.

Library code (bundles, run dirs, the export, results tables) and the CLI share these; nothing
here prints.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def is_finite(v: Any) -> bool:
    """A real number (int or float, not a bool) that is neither NaN nor infinite."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def nan_to_null(obj: Any) -> Any:
    """JSON has no NaN or inf: each non-finite float becomes None (null), recursively through
    dicts, lists and tuples (a tuple becomes a list, as JSON has only lists)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: nan_to_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_null(v) for v in obj]
    return obj


def fmt_number(v: Any) -> str:
    """A value for a table column, at most about 10 characters for a number.

    None is "-"; a whole float below 1e6 prints as an integer (epoch 3.0 is "3"); any other
    float has 4 significant digits (`.4g`: 0.001235, -1.234e-05, nan, inf); the rest is str().
    """
    if v is None:
        return "-"
    if isinstance(v, numbers.Real) and not isinstance(v, int):  # float, numpy floats
        f = float(v)
        return str(int(f)) if f.is_integer() and abs(f) < 1e6 else f"{f:.4g}"
    return str(v)


def format_params(params: dict[str, Any]) -> str:
    """`lr=0.0031 width=16 ...`: each value as `fmt_number` writes it."""
    return " ".join(f"{k}={fmt_number(v)}" for k, v in params.items())
