"""LWW fields across languages: Python writes, Node (yjs + crdt_sync/js/lww.mjs) reads and
overwrites, Python reads the JavaScript writes as the winners (docs/lww.md)."""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

from helpers.node import JS_DIR, require_node
from pycrdt import Doc, Map

from crdt_sync.clock import HybridClock, Timestamp
from crdt_sync.lww import LWW_ROOT, LwwPolicy, conflicts
from crdt_sync.record import RecordEditor, read_fields

NOW = 1_763_890_500_000
POLICY = LwwPolicy({"jobs": ["status", "assignee", "photo", "priority", "geo"]})


def _python_record(now: int, clock: HybridClock) -> Doc[Any]:
    doc: Doc[Any] = Doc()

    def stamp(current: Timestamp | None) -> Timestamp:
        return clock.after(current, now) if current else clock.tick(now)

    with doc.transaction():
        editor = RecordEditor(doc, "jobs", POLICY, stamp)
        editor["status"] = "open"
        editor["assignee"] = "tech-17"
        editor["photo"] = b"\x00\xffjpeg"
        editor["geo"] = {"lat": 48.85, "lon": 2.35, "tags": ["é", "😀"]}
        editor["notes"] = "collaborative text"
    return doc


def _run_node(payload: dict[str, Any]) -> dict[str, Any]:
    node = require_node()
    result = subprocess.run(
        [node, str(JS_DIR / "lww_roundtrip.mjs")],
        input=json.dumps(payload).encode(),
        capture_output=True,
        cwd=JS_DIR,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_javascript_reads_python_lww_fields_and_its_writes_win_in_python() -> None:
    python_clock = HybridClock("py-tech-17")
    doc = _python_record(NOW, python_clock)
    out = _run_node(
        {
            "update": base64.b64encode(doc.get_update()).decode(),
            "replica": "web-ana",
            "writes": [["status", "closed"], ["priority", 3]],
            "deletes": ["assignee"],
            "now": NOW + 1_000,
        }
    )
    assert out["before"] == {
        "status": "open",
        "assignee": "tech-17",
        "photo": {"$bytes": base64.b64encode(b"\x00\xffjpeg").decode()},
        "geo": {"lat": 48.85, "lon": 2.35, "tags": ["é", "😀"]},
        "notes": "collaborative text",
    }
    assert out["after"]["status"] == "closed"
    assert "assignee" not in out["after"]
    doc.apply_update(base64.b64decode(out["update"]))
    fields = read_fields(doc)
    assert fields["status"] == "closed"
    assert fields["priority"] == 3
    assert "assignee" not in fields
    assert fields["photo"] == b"\x00\xffjpeg"
    # JS removed the entries it overwrote: no conflict left, one entry per field.
    lww_map = doc.get(LWW_ROOT, type=Map)
    assert list(conflicts(lww_map)) == []
    assert len(lww_map) == 5


def test_javascript_beats_a_python_winner_from_a_clock_an_hour_ahead() -> None:
    skewed = HybridClock("py-ahead")
    doc = _python_record(NOW + 3_600_000, skewed)
    out = _run_node(
        {
            "update": base64.b64encode(doc.get_update()).decode(),
            "replica": "web-bo",
            "writes": [["status", "on_site"]],
            "deletes": [],
            "now": NOW,
        }
    )
    doc.apply_update(base64.b64decode(out["update"]))
    assert read_fields(doc)["status"] == "on_site"
    assert list(conflicts(doc.get(LWW_ROOT, type=Map))) == []
