"""Node.js for the tests that drive real Yjs/Hocuspocus clients (``tests/js``).

``scripts/test`` installs ``tests/js/node_modules`` with ``npm ci``. Without node (or without
the installed packages) those tests skip with the reason, except under ``CI=true``, where a
missing node/npm is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

JS_DIR = Path(__file__).resolve().parent.parent / "js"


def require_node() -> str:
    """The node executable, with ``tests/js/node_modules`` installed; else skip (fail on CI)."""
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node is not installed"
    elif not (JS_DIR / "node_modules" / "yjs").is_dir():
        missing = "tests/js/node_modules is missing (run: npm ci --prefix tests/js)"
    if missing is None:
        assert node is not None
        return node
    if os.environ.get("CI") == "true":
        pytest.fail(f"{missing}; the JavaScript interop tests cannot run under CI=true")
    pytest.skip(missing)
