"""Output helpers shared by the commands (imported by the CLI only; library code returns values
and uses `countnet.formatting`)."""

from __future__ import annotations

import json

from countnet.formatting import nan_to_null


def print_json(obj: object) -> None:
    """Strict JSON on stdout (non-finite numbers as null)."""
    print(json.dumps(nan_to_null(obj), indent=2))
