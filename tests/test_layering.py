"""Architecture rules (docs/architecture.md): the core does no network or disk I/O outside
``crdt_sync/store``; the pure layers load neither asyncio nor aiosqlite; server and client never
import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CORE = {"asyncio", "websockets", "aiosqlite", "socket"}
PACKAGE_DIRS = {
    "crdt_sync": "crdt_sync",
    "server": "crdt_sync.server",
    "client": "crdt_sync.client",
}


def _module_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [*PACKAGE_DIRS[rel.parts[0]].split("."), *rel.parts[1:]]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    module = _module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base)
                if node.module:
                    names.add(f"{prefix}.{node.module}")
                else:
                    names.update(f"{prefix}.{alias.name}" for alias in node.names)
            elif node.module:
                names.add(node.module)
    return names


def test_relative_imports_are_resolved() -> None:
    found = _imports(ROOT / "crdt_sync" / "store" / "sqlite.py")
    assert {"crdt_sync.errors", "crdt_sync.records.layout", "crdt_sync.store.batch"} <= found


def test_core_outside_store_does_no_io() -> None:
    for path in (ROOT / "crdt_sync").rglob("*.py"):
        if "store" in path.relative_to(ROOT / "crdt_sync").parts:
            continue
        roots = {name.split(".")[0] for name in _imports(path)}
        assert not roots & FORBIDDEN_IN_CORE, f"{path} imports {roots & FORBIDDEN_IN_CORE}"
        store = {n for n in _imports(path) if n.startswith("crdt_sync.store")}
        assert path.name == "__init__.py" or not store, f"{path} imports the store: {store}"


@pytest.mark.parametrize(
    "module", ["crdt_sync", "crdt_sync.protocol", "crdt_sync.records", "crdt_sync.yjs"]
)
def test_the_pure_layers_load_no_asyncio_nor_aiosqlite(module: str) -> None:
    probe = (
        f"import sys, {module}\n"
        "loaded = sorted({'asyncio', 'aiosqlite', 'websockets'} & set(sys.modules))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_server_and_client_do_not_import_each_other() -> None:
    for package, other in (("server", "crdt_sync.client"), ("client", "crdt_sync.server")):
        for path in (ROOT / package).rglob("*.py"):
            assert not any(n.startswith(other) for n in _imports(path)), f"{path} imports {other}"
