"""Output helpers shared by the commands (imported by the CLI only; library code returns values
and uses `countnet.formatting`)."""

from __future__ import annotations

import json

from countnet.formatting import nan_to_null

# The NaN-to-null rule under its old name, for countnet/suite.py only, which still imports it
# from here; remove this line once suite.py imports countnet.formatting.nan_to_null.
finite = nan_to_null


def print_json(obj: object) -> None:
    """Strict JSON on stdout (non-finite numbers as null)."""
    print(json.dumps(nan_to_null(obj), indent=2))
