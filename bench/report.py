"""Shared by the bench scripts: the machine they ran on, and writing bench/results/<name>.json.

Every result file has the raw figures plus, at the top level, `ratio` (the headline ratio as its
goal states it), `goal` (the goal in words) and `goal_met`. Absolute times are only comparable
on the same machine in the same run, so the machine and the CPU load are recorded with them.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU model, cores, load, torch, GPU if any."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    # Other processes share this machine; the load average says how noisy the figures are.
    if hasattr(os, "getloadavg"):
        info["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return info


def mean_std(values: list[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals) if vals else float("nan"),
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}


def write_result(name: str, ratio: float, goal: str, goal_met: bool, figures: dict[str, Any],
                 *, quick: bool, out_dir: Path | None = None) -> Path:
    """Write bench/results/<name>.json (or into out_dir) and return its path."""
    out = Path(out_dir) if out_dir else RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    record = {"name": name, "ratio": ratio, "goal": goal, "goal_met": bool(goal_met),
              "quick": quick, "when": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": machine(), "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              **figures}
    path = out / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, default=float) + "\n")
    return path


def headline(name: str, ratio: float, goal: str, goal_met: bool, path: Path) -> None:
    """The one line each script ends with."""
    verdict = "MET" if goal_met else "NOT MET"
    print(f"[{name}] ratio {ratio:.4g}  goal: {goal}  -> {verdict}  ({path})", flush=True)
