"""LWW fields across languages: Python writes, Node (yjs + crdt_sync/js/lww.mjs) reads and
overwrites, Python reads the JavaScript writes as the winners (docs/lww.md). The whole record
layout across languages is tested in test_record_js.py."""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

from helpers.node import JS_DIR, require_node
from pycrdt import Doc, Map

from crdt_sync.records.clock import HybridClock, Timestamp
from crdt_sync.records.layout import layout_of, read_fields
from crdt_sync.records.lww import LWW_ROOT, LwwPolicy
from crdt_sync.records.record import RecordEditor

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
    # JS removed the entries it overwrote: no conflict, one entry per field (assignee's is
    # its deletion; "notes" was assigned a str, a value like the others).
    assert layout_of(doc).conflicts() == []
    entries = {e.slot: e for e in layout_of(doc).all_entries()}
    assert sorted(e[0] for e in entries) == [
        "assignee",
        "geo",
        "notes",
        "photo",
        "priority",
        "status",
    ]
    assert entries[("assignee",)].deleted
    assert len(doc.get(LWW_ROOT, type=Map)) == 6


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
    assert layout_of(doc).conflicts() == []


def test_lww_readers_skip_containers_and_nested_slots_and_writes_replace_them() -> None:
    clock = HybridClock("py-tech-17")
    doc = _python_record(NOW, clock)

    def stamp(current: Timestamp | None) -> Timestamp:
        return clock.after(current, NOW) if current else clock.tick(NOW)

    with doc.transaction():
        editor = RecordEditor(doc, "jobs", POLICY, stamp)
        editor.text("memo").append("typed")
        editor.map("address")["street"] = "1 Rue"
        editor.array("labels").append("a")
    out = _run_node(
        {
            "update": base64.b64encode(doc.get_update()).decode(),
            "replica": "web-ana",
            "writes": [["memo", "a value now"], ["address", {"street": "whole"}]],
            "deletes": ["labels"],
            "now": NOW + 1_000,
        }
    )
    assert out["before"] == {
        **out["values"],
        "memo": "typed",
        "address": {"street": "1 Rue"},
        "labels": ["a"],
    }
    assert sorted(out["values"]) == ["assignee", "geo", "notes", "photo", "status"]
    assert out["winners"] == sorted([*out["values"], "memo", "address", "labels"])
    doc.apply_update(base64.b64decode(out["update"]))
    fields = read_fields(doc)
    assert fields["memo"] == "a value now" and fields["address"] == {"street": "whole"}
    assert "labels" not in fields
    # The JS writer removed what it saw: the text's content, the map's keys, the list's items.
    assert layout_of(doc).conflicts() == []
    assert str(layout_of(doc).text(("memo",))) == ""
    assert layout_of(doc).entries(("address", "street")) == []
