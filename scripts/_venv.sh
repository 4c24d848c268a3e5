# Sourced by scripts/serve and scripts/test: create .venv if needed and install the project.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CRDT_SYNC_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
extras="${1:-}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
stamp="$VENV/.crdt-sync-installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    spec="$ROOT"
    [ -n "$extras" ] && spec="$ROOT[$extras]"
    # strict editable mode: a link tree that mypy can follow (DESIGN.md, layout).
    "$VENV/bin/python" -m pip install --quiet -e "$spec" --config-settings editable_mode=strict
    touch "$stamp"
fi
