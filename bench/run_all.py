"""Run every bench script, one after another, then print one table of their headline ratios.

    python bench/run_all.py [--quick] [--only data,overhead] [--out-dir DIR]   (`make bench`)

Each script runs as its own process (a crash or a Ray left running cannot affect the next) and
writes bench/results/<name>.json. bench/gpu.sh runs on a machine with a CUDA GPU; elsewhere
it runs as `gpu.sh --cpu-check`, which checks the script and measures nothing useful.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# name -> the result file(s) it writes (the first one is its headline). In run order: cheap first.
SCRIPTS = {
    "data": ("data",),
    "precision": ("precision",),
    "loop": ("loop",),
    "overhead": ("overhead",),
    "trial_startup": ("trial_startup",),
    "search_efficiency": ("search_efficiency",),
    # Three default trainings and their suites: the longest script (~10 min on 2 cores with bf16).
    "default_seeds": ("default_seeds",),
    "gpu": ("gpu", "data-cuda"),
}


def has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def command(name: str, quick: bool, tiny: bool, cuda: bool) -> list[str]:
    """The command line of one bench script."""
    if name == "gpu":
        return ["bash", str(BENCH / "gpu.sh"), *([] if cuda else ["--cpu-check"])]
    size = ["--tiny"] if tiny else ["--quick"] if quick else []
    return [sys.executable, str(BENCH / f"{name}.py"), *size]


def result_files(name: str, tiny: bool, cuda: bool) -> list[str]:
    if name == "gpu":
        return list(SCRIPTS["gpu"]) if cuda else ["gpu-cpu-check", "data-tiny"]
    return [f"{f}-tiny" if tiny else f for f in SCRIPTS[name]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="each script sized to ~2 min on 2 cores")
    p.add_argument("--tiny", action="store_true", help="each script in seconds (smoke test)")
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(SCRIPTS)}")
    p.add_argument("--out-dir", type=Path, help="results directory (default bench/results)")
    p.add_argument("--list", action="store_true", help="print the commands and exit")
    args = p.parse_args(argv)
    names = list(SCRIPTS) if not args.only else [n.strip() for n in args.only.split(",")]
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        print(f"run_all: --only: unknown script(s) {', '.join(unknown)} "
              f"(known: {', '.join(SCRIPTS)})", file=sys.stderr)
        return 2
    cuda = has_cuda() and shutil.which("nvidia-smi") is not None
    out_dir = (args.out_dir or BENCH / "results").resolve()
    env = {**os.environ, "OUT_DIR": str(out_dir), "PYTHON": sys.executable}
    failed = []
    for name in names:
        cmd = command(name, args.quick, args.tiny, cuda)
        if name != "gpu":
            cmd += ["--out-dir", str(out_dir)]
        print(f"$ {' '.join(cmd)}", flush=True)
        if args.list:
            continue
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
        print(f"({name}: exit {rc}, {time.perf_counter() - t0:.0f} s)\n", flush=True)
        if rc != 0:
            failed.append(name)
    if args.list:
        return 0
    print(f"{'result':24s} {'ratio':>10s}  goal met  goal")
    for name in names:
        for stem in result_files(name, args.tiny, cuda):
            path = out_dir / f"{stem}.json"
            if not path.is_file():
                print(f"{stem:24s} {'-':>10s}  (no result)")
                continue
            r = json.loads(path.read_text())
            print(f"{stem:24s} {r['ratio']:10.4g}  {'yes' if r['goal_met'] else 'no ':8s}  "
                  f"{r['goal']}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
