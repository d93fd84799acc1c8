"""`python -m countnet ...` == the `countnet` console script.

Like the console script (`countnet.cli:main`), this imports `countnet.cli`, which loads no
torch, and calls `main`, which sets OMP_WAIT_POLICY before any subcommand imports torch.
"""

from __future__ import annotations

import sys

from countnet.cli import main

sys.exit(main())
