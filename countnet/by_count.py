"""Per-count figures for the report: the `by_count` lists an evaluation left in JSON files.

`countnet evaluate`, `countnet train` (RUN/suite.json) and `countnet export` (the bundle's
metrics.json) store a model's error per true count as `by_count` lists (`countnet.evaluate.score`:
[{"count", "n", "mae", "acc", ...}, ...]), at any depth of the JSON. This finds them; the
report draws them (`countnet.report_plots.plot_errors`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVALUATION_FILES = ("suite.json", "evaluation.json", "metrics.json")  # where per-count data lives
BY_COUNT_KEY = "by_count"  # countnet.evaluate.score: [{"count", "n", "mae", "acc", ...}, ...]


def find_by_count(paths: list[Path]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Per-count figures (`by_count` lists, as `countnet evaluate` writes) found in JSON files.

    Args:
        paths: directories to look in (EVALUATION_FILES in each) or JSON files.

    Returns:
        (label, rows) per series: the label names the file and, inside it, the set.
    """
    files = []
    for p in paths:
        if p.is_dir():
            files += [p / name for name in EVALUATION_FILES if (p / name).is_file()]
        elif p.is_file():
            files.append(p)
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for f in files:
        try:
            data = json.loads(f.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue  # not an evaluation: nothing to plot from it
        for where, rows in _by_count_lists(data, ()):
            label = f"{f.parent.name}/{f.name}" + (f" {'/'.join(where)}" if where else "")
            out.append((label, rows))
    return out


def _by_count_lists(obj: Any, where: tuple[str, ...]) -> list[tuple[tuple[str, ...], list]]:
    found = []
    if isinstance(obj, dict):
        rows = obj.get(BY_COUNT_KEY)
        if isinstance(rows, list) and rows and all(
                isinstance(r, dict) and "count" in r and "mae" in r for r in rows):
            found.append((where, rows))
        for key, value in obj.items():
            if key != BY_COUNT_KEY:
                found += _by_count_lists(value, (*where, str(key)))
    return found
