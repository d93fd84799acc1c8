"""Helpers of the bench smoke tests: import a bench script, check the JSON it wrote."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_script(name: str):
    """Import bench/<name>.py as a module (bench/ is a folder of scripts, not a package)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))  # the scripts import their helper `report`
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # Ray ships functions of registered modules by value
    spec.loader.exec_module(module)
    return module


def check_result(path: Path) -> dict:
    """The result JSON at `path`, after checking the keys every bench script writes."""
    assert path.is_file(), f"{path.name} was not written"
    result = json.loads(path.read_text())
    assert isinstance(result["goal"], str) and result["goal"]
    assert isinstance(result["ratio"], float) and math.isfinite(result["ratio"])
    assert isinstance(result["goal_met"], bool)
    assert result["machine"]["cores"] >= 1
    return result




def run_tiny(name: str, out_dir: Path, *args: str) -> dict:
    """Run `bench/<name>.py --tiny ARGS --out-dir OUT_DIR` in this process; its checked JSON."""
    assert load_script(name).main(["--tiny", *args, "--out-dir", str(out_dir)]) == 0
    return check_result(out_dir / f"{name}-tiny.json")
