"""countnet never imports ray: it must run where only torch is installed (a GPU box, a laptop)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import countnet

PACKAGE = Path(countnet.__file__).parent


def test_import_countnet_train_leaves_ray_out() -> None:
    code = ("import sys, countnet.train, countnet.cli, countnet.predict; "
            "print(any(m == 'ray' or m.startswith('ray.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_no_countnet_module_imports_ray_or_tune() -> None:
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("ray", "tune")]
    assert offenders == []
