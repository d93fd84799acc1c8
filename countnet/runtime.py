"""Process settings that must be made before torch loads; this module imports no torch.

OpenMP threads should sleep instead of spinning while they wait (`OMP_WAIT_POLICY=PASSIVE`). On
a busy or shared machine a spinning thread burns the core its partner needs: training ran ~4x
slower on a loaded 2-core box (bench/data.py, bench/gpu.sh --cpu-check). OpenMP reads the
variable once, when torch starts it, so it must be in the environment before `import torch`;
set later it does nothing. A user's own setting wins.

Importing countnet sets nothing: a library has no business changing its host's environment.
The processes countnet starts set it, each at its own entry:
- the `countnet` command: `countnet.cli.main` calls `set_omp_env` before any subcommand (and so
  torch) is imported;
- Ray trial workers: `tune.cluster.connect` passes `omp_env()` to them (the embedded Ray's
  workers inherit the command's environment; a cluster's get it as the job's env_vars);
- the bench scripts: `os.environ.update(omp_env())` above their `import torch`.
"""

from __future__ import annotations

import os

OMP_WAIT_POLICY = "OMP_WAIT_POLICY"
OMP_WAIT_DEFAULT = "PASSIVE"  # sleep while waiting: see the module docstring


def omp_env() -> dict[str, str]:
    """The OpenMP settings countnet's processes run with: {"OMP_WAIT_POLICY": value}, the
    environment's own value when it has one, else PASSIVE."""
    return {OMP_WAIT_POLICY: os.environ.get(OMP_WAIT_POLICY, OMP_WAIT_DEFAULT)}


def set_omp_env() -> None:
    """Put `omp_env()` into this process's environment (a value already there is kept).

    Call it before torch is imported: OpenMP reads the variable only when torch starts it.
    """
    os.environ.update(omp_env())
