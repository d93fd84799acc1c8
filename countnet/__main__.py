"""`python -m countnet ...` == the `countnet` console script."""

from __future__ import annotations

import sys

from countnet.cli import main

sys.exit(main())
