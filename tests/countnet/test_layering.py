"""Library code never imports the command line: only `countnet.cli` (and `tune.cli`, the search's
commands) may import `countnet.cli`; library functions return values and the CLI prints them."""

from __future__ import annotations

import ast
from pathlib import Path

import countnet
import tune

ROOTS = (Path(countnet.__file__).parent, Path(tune.__file__).parent)
CLI_MODULES = {"countnet/cli", "countnet/__main__.py", "tune/cli.py"}


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            if node.module == "countnet":  # from countnet import cli
                names += [f"countnet.{a.name}" for a in node.names]
    return names


def test_library_code_does_not_import_the_cli() -> None:
    offenders = set()
    for root in ROOTS:
        for path in root.rglob("*.py"):
            rel = path.relative_to(root.parent).as_posix()
            if any(rel == m or rel.startswith(m + "/") for m in CLI_MODULES):
                continue
            offenders |= {f"{rel}: {n}" for n in _imports(path)
                          if n == "countnet.cli" or n.startswith("countnet.cli.")}
    assert offenders == set()
