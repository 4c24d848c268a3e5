"""server/ has no import circle.

Two checks: the graph of the imports between server modules, those under ``TYPE_CHECKING``
included, is acyclic (a cycle is reported with its path); and every module imports by itself
in a fresh interpreter, as a user's ``import crdt_sync.server.<module>`` does.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server"
PACKAGE = "crdt_sync.server"


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(SERVER.rglob("*.py")):
        parts = list(path.relative_to(SERVER).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([PACKAGE, *parts])] = path
    return modules


def _imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The server modules that module ``name`` (at ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            # `from .storage import sqlite` imports a module; `from .storage import X` a name
            targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found.update(target for target in targets if target in known and target != name)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_cycle_finder_reports_a_cycle_with_its_path() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_server_modules_import_each_other_without_a_cycle() -> None:
    modules = _modules()
    known = set(modules)
    graph = {name: _imported(name, path, known) for name, path in modules.items()}
    assert graph[f"{PACKAGE}.relay"] >= {f"{PACKAGE}.gateway", f"{PACKAGE}.native_endpoint"}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_every_server_module_imports_alone_in_a_fresh_interpreter(tmp_path: Path) -> None:
    # Run outside the checkout: from its root, `crdt_sync` would be the source folder, which
    # has no `server` (conftest.py).
    processes = {
        name: subprocess.Popen(
            [sys.executable, "-c", f"import {name}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for name in _modules()
        if not name.endswith(".__main__")  # runs the command line
    }
    failed = {}
    for name, process in processes.items():
        output, _ = process.communicate(timeout=120)
        if process.returncode:
            failed[name] = output.strip().splitlines()[-1:]
    assert not failed, failed
