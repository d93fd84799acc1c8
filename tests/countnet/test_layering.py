"""Import rules. Library code never imports the command line: only `countnet.cli` (and
`tune.cli`, the search's commands) may import `countnet.cli`; library functions return values and
the CLI prints them. And imports within countnet run one way: no cycle, however long."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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


def _module_name(path: Path, root: Path) -> str:
    """countnet/cli/train.py -> countnet.cli.train; a package's __init__.py is the package."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same tree it imports, wherever the import statement is (a
    function-level import closes a cycle as surely as a top-level one)."""
    modules = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        named = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                named |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from countnet import scenes` imports the module countnet.scenes.
                named |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        graph[name] = {m for m in named if m in modules and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle found by a depth-first walk, as [a, b, ..., a]."""
    cycles: list[list[str]] = []
    done: set[str] = set()

    def walk(module: str, path: list[str]) -> None:
        path.append(module)
        for dep in sorted(graph[module]):
            if dep in path:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in done:
                walk(dep, path)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            walk(module, [])
    return cycles


@pytest.mark.parametrize("root", ROOTS, ids=lambda r: r.name)
def test_imports_within_a_package_run_one_way(root) -> None:
    """No module of countnet (or of tune) imports one that imports it back, directly or through
    others (diagnose and diagnose_report once did, inside functions; so did tune.space, through
    a module __getattr__, and tune.optuna_space)."""
    cycles = _cycles(_import_graph(root))
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
