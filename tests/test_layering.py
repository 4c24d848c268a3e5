"""Architecture rules: the core does no network I/O; server and client never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN_IN_CORE = {"asyncio", "websockets", "aiosqlite", "socket"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_outside_store_does_no_io() -> None:
    for path in (ROOT / "crdt_sync").rglob("*.py"):
        if "store" in path.relative_to(ROOT / "crdt_sync").parts:
            continue
        roots = {name.split(".")[0] for name in _imports(path)}
        assert not roots & FORBIDDEN_IN_CORE, f"{path} imports {roots & FORBIDDEN_IN_CORE}"


def test_server_and_client_do_not_import_each_other() -> None:
    for package, other in (("server", "crdt_sync.client"), ("client", "crdt_sync.server")):
        for path in (ROOT / package).rglob("*.py"):
            assert not any(n.startswith(other) for n in _imports(path)), f"{path} imports {other}"
