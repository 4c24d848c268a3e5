"""Records across languages: a Python replica (``RecordEditor``) and a JavaScript replica
(yjs + ``crdt_sync/js/record.mjs``, under Node) edit the same record concurrently, exchange
updates, and read the same fields and the same conflicts (docs/records.md).

The JavaScript replicas live in one Node process for the whole module
(``tests/js/record_peer.mjs``, driven by ``helpers.js_peer.JsRecordPeer``).
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from helpers.js_peer import JsRecordPeer, canonical, conflict_to_js, to_js
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text

from crdt_sync.errors import InvalidEdit
from crdt_sync.records.clock import HybridClock, Timestamp
from crdt_sync.records.layout import (
    CONFLICTS_ROOT,
    FIELDS_ROOT,
    KEPT_CONFLICTS,
    array_root_name,
    layout_of,
    read_fields,
    text_root_name,
)
from crdt_sync.records.lww import LWW_ROOT, LwwPolicy
from crdt_sync.records.record import ArrayEditor, LegacyMapEditor, MapEditor, RecordEditor
from crdt_sync.records.text import TextField

T0 = 1_763_890_500_000  # 2025-11-23T09:35:00Z
HOUR = 3_600_000
POLICY = LwwPolicy({"jobs": ["status"]})  # JS writes "status" with {atomic: true}


@pytest.fixture(scope="module")
def js() -> Iterator[JsRecordPeer]:
    peer = JsRecordPeer()
    try:
        yield peer
    finally:
        peer.close()


_names = itertools.count(1)


def b64(update: bytes) -> str:
    return base64.b64encode(update).decode()


class PyReplica:
    """A Python replica of one record: a doc, an HLC, a wall clock the test sets."""

    def __init__(self, name: str = "py", client_id: int = 1, now: int = T0) -> None:
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self.clock = HybridClock(name)
        self.now = now

    def stamp(self, current: Timestamp | None) -> Timestamp:
        return self.clock.after(current, self.now) if current else self.clock.tick(self.now)

    def edit(self, ops: list[dict[str, Any]]) -> list[int]:
        """Run ``ops`` (record_peer.mjs's edit vocabulary), each in its own transaction;
        the indices of the refused ones."""
        refused = []
        for i, op in enumerate(ops):
            with self.doc.transaction():
                try:
                    run_op(self.doc, RecordEditor(self.doc, "jobs", POLICY, self.stamp), op)
                except InvalidEdit:
                    refused.append(i)
            self.now += 1
        return refused

    def apply(self, update: str) -> None:
        self.doc.apply_update(base64.b64decode(update))

    def state(self) -> str:
        return b64(self.doc.get_update())


def _parent(rec: Any, path: list[str], *, create: bool) -> Any:
    target = rec
    for key in path[:-1]:
        if create:
            target = target.map(key)
        else:
            target = target.get(key)
            if not isinstance(target, MapEditor | LegacyMapEditor):
                return None
    return target


def _bytes_in(value: Any) -> Any:
    """JSON from the JS side to Python values (``{"$bytes": ...}`` to bytes)."""
    if isinstance(value, dict):
        if list(value) == ["$bytes"]:
            return base64.b64decode(value["$bytes"])
        return {k: _bytes_in(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bytes_in(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, TextField):
        return str(value)
    if isinstance(value, MapEditor | LegacyMapEditor):
        return value.to_dict()
    if isinstance(value, ArrayEditor):
        return value.to_list()
    return value


def _reassigned(current: Any, op: dict[str, Any]) -> Any:
    """record_peer.mjs's ``reassigned``: a changed copy of ``current``, or ``None``."""
    pos, delete = op.get("pos", 0), op.get("delete", 0)

    def splice(items: list[Any], inserted: list[Any]) -> list[Any]:
        at = min(pos, len(items))
        return [*items[:at], *inserted, *items[at + delete :]]

    if isinstance(current, str):
        return "".join(splice(list(current), list(op["chars"])))
    if isinstance(current, list):
        return splice(current, _bytes_in(op["items"]))
    if isinstance(current, dict):
        changed = {**current, **_bytes_in(op.get("patch", {}))}
        changed.pop(op.get("drop"), None)
        return changed
    return None


def run_op(doc: Doc[Any], rec: RecordEditor, op: dict[str, Any]) -> None:
    """One edit of record_peer.mjs's vocabulary, made with the Python editors (or, for the
    raw ones, as a Yjs peer that writes content roots without entries)."""
    path = [op["path"]] if isinstance(op.get("path"), str) else op.get("path")
    kind = op["do"]
    if kind == "set":
        _parent(rec, path, create=True)[path[-1]] = _bytes_in(op["value"])
    elif kind == "delete":
        parent = _parent(rec, path, create=False)
        if parent is not None and path[-1] in parent:
            del parent[path[-1]]
    elif kind == "text":
        text = _parent(rec, path, create=True).text(path[-1])
        pos = min(op.get("pos", len(text)), len(text))
        text.delete(pos, min(op.get("delete", 0), len(text) - pos))
        text.insert(pos, op.get("insert", ""))
    elif kind == "array":
        array = _parent(rec, path, create=True).array(path[-1])
        pos = min(op.get("pos", len(array)), len(array))
        for _ in range(min(op.get("delete", 0), len(array) - pos)):
            del array[pos]
        for offset, item in enumerate(_bytes_in(op.get("insert", []))):
            array.insert(pos + offset, item)
    elif kind == "map":
        _parent(rec, path, create=True).map(path[-1])
    elif kind == "reassign":
        parent = _parent(rec, path, create=False)
        if parent is not None and path[-1] in parent:
            changed = _reassigned(_plain(parent[path[-1]]), op)
            if changed is not None:
                parent[path[-1]] = changed
    elif kind == "rootText":
        doc.get(op["name"], type=Text).insert(0, op["insert"])
    elif kind == "rootArray":
        doc.get(op["name"], type=Array).extend(_bytes_in(op["insert"]))
    else:
        raise AssertionError(f"no Python twin for {op}")


def py_view(doc: Doc[Any]) -> dict[str, Any]:
    """What record.mjs's readRecord/recordConflicts should say about ``doc``."""
    return {
        "fields": read_fields(doc),
        "conflicts": [conflict_to_js(c) for c in layout_of(doc).conflicts()],
    }


def stored(lww: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
    """Register entries and kept conflicts as stored, up to the order of sibling writes.

    A writer that writes several keys of a map in one edit (a whole dict assigned) takes their
    timestamps in the order it goes through them, which is not specified (Python's follows a
    set's), so the entries are compared as a set of keys and a multiset of values."""
    return {
        "keys": sorted(lww),
        "entries": sorted(canonical(v) for v in lww.values()),
        "kept": canonical(kept),
    }


def doc_of(state: str) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    doc.apply_update(base64.b64decode(state))
    return doc


def assert_same(js_view: dict[str, Any], python: dict[str, Any], what: str) -> None:
    assert canonical(js_view["fields"]) == canonical(python["fields"]), what
    assert canonical(js_view["conflicts"]) == canonical(python["conflicts"]), what


class Pair:
    """A Python replica and a JavaScript replica of one record, from the same base."""

    def __init__(self, js: JsRecordPeer, base: bytes = b"", *, py_now: int = T0) -> None:
        self.js = js
        self.name = f"doc-{next(_names)}"
        self.py = PyReplica(now=py_now)
        if base:
            self.py.doc.apply_update(base)
        js.call("open", doc=self.name, replica="js", clientId=2, update=b64(base))

    def js_edit(self, ops: list[dict[str, Any]], now: int) -> list[int]:
        reply = self.js.call("edit", doc=self.name, now=now, edits=ops)
        self.py_pending = reply["update"]
        refused: list[int] = reply["refused"]
        return refused

    def sync(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Exchange updates; (JS's view, Python's view) of the merged record, checked equal."""
        self.js.call("apply", doc=self.name, update=self.py.state())
        read = self.js.call("read", doc=self.name)
        self.py.apply(read["state"])
        python = py_view(self.py.doc)
        assert_same(read, python, "merged")
        return read, python

    def close(self) -> None:
        self.js.call("close", doc=self.name)


# -- random concurrent edits ------------------------------------------------------------------

FIELDS = ("notes", "address", "labels", "status", 'é "😀"\\')
KEYS = ("street", "zip", "é")
NASTY = "aZ é\u0301ñ😀👩\u200d🔧🇫🇷\n"
texts = st.text(alphabet=st.sampled_from(NASTY), max_size=4)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    texts,
    st.binary(max_size=3),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=3)
    ),
    max_leaves=6,
)
paths = st.one_of(
    st.tuples(st.sampled_from(FIELDS)).map(list),
    st.tuples(st.sampled_from(FIELDS[:3]), st.sampled_from(KEYS)).map(list),
    st.tuples(st.sampled_from(FIELDS[:3]), st.sampled_from(KEYS), st.sampled_from(KEYS)).map(list),
)


ROOTS = [text_root_name(("notes",)), text_root_name(("address", "zip"))]
ROOTS += [array_root_name(("labels",)), array_root_name(("notes",))]


@st.composite
def edits(draw: st.DrawFn) -> dict[str, Any]:
    path = draw(paths)
    kinds = ["set", "set", "delete", "text", "text", "array", "map", "reassign", "reassign"]
    kinds += ["rootText", "rootArray"]
    if path[0] == "status":  # last-write-wins (the Python replica's policy): a value only
        kinds = ["set", "set", "delete", "reassign"]
    kind = draw(st.sampled_from(kinds))
    op: dict[str, Any] = {"do": kind, "path": path}
    if kind == "set":
        op["value"] = to_js(draw(values))
        op["atomic"] = path == ["status"]  # as the Python replica's policy
    elif kind == "text":
        op |= {"pos": draw(st.integers(0, 6)), "delete": draw(st.integers(0, 2))}
        op["insert"] = draw(texts)
    elif kind == "array":
        op |= {"pos": draw(st.integers(0, 4)), "delete": draw(st.integers(0, 2))}
        op["insert"] = to_js(draw(st.lists(scalars, max_size=2)))
    elif kind == "reassign":  # read, change a copy, assign it back
        op["atomic"] = path == ["status"]
        op |= {"pos": draw(st.integers(0, 4)), "delete": draw(st.integers(0, 1))}
        op["chars"] = draw(texts)
        op["items"] = to_js(draw(st.lists(scalars, max_size=1)))
        op["patch"] = to_js(draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=1)))
        op["drop"] = draw(st.none() | st.sampled_from(KEYS))
    elif kind == "rootText":  # a Yjs peer typing into a content root, without an entry
        op = {"do": kind, "name": draw(st.sampled_from(ROOTS[:2])), "insert": draw(texts) or "x"}
    elif kind == "rootArray":
        op = {"do": kind, "name": draw(st.sampled_from(ROOTS[2:])), "insert": [draw(texts)]}
    return op


def v1_record() -> Doc[Any]:
    """A record as layout v1 wrote it (nested objects under the root map "fields")."""
    doc: Doc[Any] = Doc(client_id=3)
    with doc.transaction():
        fields = doc.get(FIELDS_ROOT, type=Map)
        fields["status"] = "open"
        fields["notes"] = Text("v1 note")
        fields["address"] = Map({"street": "1 Rue", "zip": Map({"é": 48.8})})
        fields["labels"] = Array(["boiler", Map({"part": "valve"})])
    return doc


def v2_record() -> Doc[Any]:
    """A record written by layout v2 (Python), with one of each kind of field."""
    base = PyReplica("base", client_id=3, now=T0 - 1000)
    base.edit(
        [
            {"do": "set", "path": ["status"], "value": "open"},
            {"do": "text", "path": ["notes"], "insert": "Début"},
            {"do": "set", "path": ["address"], "value": {"street": "1 Rue", "zip": {"é": 1}}},
            {"do": "set", "path": ["labels"], "value": ["boiler"]},
        ]
    )
    return base.doc


BASES = {"empty": lambda: Doc(client_id=3), "v1": v1_record, "v2": v2_record}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    base=st.sampled_from(sorted(BASES)),
    rounds=st.lists(
        st.tuples(
            st.lists(edits(), max_size=4),
            st.lists(edits(), max_size=4),
            st.integers(-30, 30),  # JS's wall clock minus Python's
        ),
        min_size=1,
        max_size=3,
    ),
    js_ahead=st.booleans(),
)
def test_random_concurrent_edits_read_and_write_the_same_in_both_languages(
    js: JsRecordPeer,
    base: str,
    rounds: list[tuple[list[dict[str, Any]], list[dict[str, Any]], int]],
    js_ahead: bool,
) -> None:
    """Each round, Python and JS edit concurrently, then exchange updates. Checked:

    - readers: each side reads the other's writes (and the merged record) as the other does;
    - writers: a Python twin of the JS replica (same clock, same start, same edits) writes the
      same entries, the same kept conflicts and the same content as record.mjs.
    """
    pair = Pair(js, BASES[base]().get_update())
    twin = PyReplica("js", client_id=4)  # the JS replica's clock, in Python
    try:
        for number, (py_ops, js_ops, offset) in enumerate(rounds):
            pair.py.now = T0 + 1000 * number
            js_now = pair.py.now + offset + (HOUR if js_ahead and number == 0 else 0)
            twin.doc = doc_of(pair.py.state())  # what the JS replica holds now
            twin.now = js_now
            twin_refused = twin.edit(js_ops)
            pair.py.edit(py_ops)
            reply = js.call(
                "round", doc=pair.name, now=js_now, edits=js_ops, remote=pair.py.state()
            )
            mine = reply["mine"]
            assert_same(mine, py_view(doc_of(mine["state"])), "JS's edits read by Python")
            assert_same(mine, py_view(twin.doc), "JS's edits made by Python")
            twin_maps = [
                twin.doc.get(name, type=Map).to_py() for name in (LWW_ROOT, CONFLICTS_ROOT)
            ]
            assert stored(*mine["raw"]) == stored(*twin_maps)
            assert reply["refused"] == twin_refused
            assert_same(reply["remote"], py_view(pair.py.doc), "Python's edits read by JS")
            pair.py.apply(reply["update"])
            assert_same(reply["merged"], py_view(pair.py.doc), "merged")
    finally:
        pair.close()


# -- the cases of docs/records.md, one by one -------------------------------------------------


def test_both_create_the_same_text_map_and_list_and_set_the_same_field(js: JsRecordPeer) -> None:
    pair = Pair(js)
    try:
        pair.py.now = T0
        pair.py.edit(
            [
                {"do": "text", "path": ["notes"], "insert": "Note from Python. "},
                {"do": "set", "path": ["address", "street"], "value": "1 Rue"},
                {"do": "array", "path": ["labels"], "insert": ["py"]},
                {"do": "set", "path": ["phone"], "value": "111-PY"},
            ]
        )
        pair.js_edit(
            [
                {"do": "text", "path": ["notes"], "insert": "Note from JS. "},
                {"do": "set", "path": ["address", "floor"], "value": 3},
                {"do": "array", "path": ["labels"], "insert": ["js"]},
                {"do": "set", "path": "phone", "value": "222-JS"},  # later
            ],
            now=T0 + 50,
        )
        pair.py.apply(pair.py_pending)
        read, _ = pair.sync()
        fields = read["fields"]
        assert sorted(fields) == ["address", "labels", "notes", "phone"]
        assert fields["notes"] in (
            "Note from Python. Note from JS. ",
            "Note from JS. Note from Python. ",
        )
        assert fields["address"] == {"street": "1 Rue", "floor": 3}
        assert sorted(fields["labels"]) == ["js", "py"]
        assert fields["phone"] == "222-JS"
        [conflict] = read["conflicts"]  # two creations of one kind are not a conflict
        assert conflict["slot"] == ["phone"]
        assert conflict["lost"] == {"kind": "value", "value": "111-PY", "ts": conflict["key"]}
        assert conflict["won"]["value"] == "222-JS" and conflict["won"]["ts"].endswith(".js")
    finally:
        pair.close()


def test_a_deletion_and_a_concurrent_addition(js: JsRecordPeer) -> None:
    pair = Pair(js, v2_record().get_update())
    try:
        pair.py.now = T0 + 100  # later than JS's deletions: the phone write wins over them
        pair.js_edit(
            [
                {"do": "delete", "path": "notes"},
                {"do": "delete", "path": "address"},
                {"do": "delete", "path": "labels"},
                {"do": "delete", "path": "status"},
            ],
            now=T0,
        )
        pair.py.edit(
            [
                {"do": "text", "path": ["notes"], "insert": " + py"},
                {"do": "set", "path": ["address", "floor"], "value": 2},
                {"do": "array", "path": ["labels"], "insert": ["py"]},
                {"do": "set", "path": ["status"], "value": "on_site"},
            ]
        )
        pair.py.apply(pair.py_pending)
        read, _ = pair.sync()
        # What JS saw is gone; what Python added unseen stays (add wins); the value written
        # after the deletion wins and the deletion is a conflict.
        assert read["fields"] == {
            "notes": " + py",
            "address": {"floor": 2},
            "labels": ["py"],
            "status": "on_site",
        }
        [conflict] = read["conflicts"]
        assert conflict["slot"] == ["status"]
        assert (conflict["lost"]["kind"], conflict["won"]["value"]) == ("deleted", "on_site")
    finally:
        pair.close()


def test_a_value_written_over_a_text_keeps_the_unseen_text_as_a_conflict(js: JsRecordPeer) -> None:
    pair = Pair(js, v2_record().get_update())
    try:
        pair.py.now = T0
        pair.py.edit([{"do": "text", "path": ["notes"], "insert": "unseen "}])
        pair.js_edit([{"do": "set", "path": "notes", "value": 42}], now=T0 + 10)
        pair.py.apply(pair.py_pending)
        read, _ = pair.sync()
        assert read["fields"]["notes"] == 42
        [conflict] = read["conflicts"]
        assert conflict["lost"] == {"kind": "text", "value": "unseen ", "ts": None}
        assert conflict["key"] == f'text:["notes"]@{conflict["won"]["ts"]}'
    finally:
        pair.close()


def test_each_side_writes_into_the_root_text_the_other_created(js: JsRecordPeer) -> None:
    pair = Pair(js)
    try:
        pair.py.edit([{"do": "text", "path": ["notes"], "insert": "py"}])
        pair.js_edit([{"do": "text", "path": ["memo"], "insert": "js"}], now=T0)
        pair.py.apply(pair.py_pending)
        pair.sync()
        entries = len(pair.py.doc.get(LWW_ROOT, type=Map))
        pair.py.edit([{"do": "text", "path": ["memo"], "pos": 0, "insert": "PY+"}])
        pair.js_edit([{"do": "text", "path": ["notes"], "insert": "+JS😀"}], now=T0 + 10)
        pair.py.apply(pair.py_pending)
        read, _ = pair.sync()
        assert read["fields"] == {"notes": "py+JS😀", "memo": "PY+js"}
        assert read["conflicts"] == []
        # Writing into a text that shows needs no entry: neither side added one.
        assert len(pair.py.doc.get(LWW_ROOT, type=Map)) == entries == 2
        assert str(pair.py.doc.get(text_root_name(("notes",)), type=Text)) == "py+JS😀"
    finally:
        pair.close()


def test_a_whole_object_or_list_assigned_in_js_writes_only_what_changed(js: JsRecordPeer) -> None:
    pair = Pair(js, v2_record().get_update())
    try:
        pair.py.edit([{"do": "set", "path": ["labels"], "value": ["a", "b", "c"]}])
        pair.sync()
        pair.py.now = T0 + 100  # later than JS: Python's street would win any conflict
        pair.py.edit(
            [
                {"do": "set", "path": ["address", "street"], "value": "2 Rue"},
                {"do": "set", "path": ["address", "floor"], "value": 2},
                {"do": "array", "path": ["labels"], "pos": 0, "delete": 1},
                {"do": "text", "path": ["notes"], "pos": 0, "delete": 1},
            ]
        )
        pair.js_edit(
            [
                {
                    "do": "set",
                    "path": "address",
                    "value": {"street": "1 Rue", "zip": {"é": 1, "x": 0}},  # street as seen
                },
                {"do": "set", "path": "labels", "value": ["a", "b", "X"]},
                {"do": "set", "path": "notes", "value": "Début!"},
            ],
            now=T0 + 10,
        )
        pair.py.apply(pair.py_pending)
        read, _ = pair.sync()
        # JS wrote neither street (unchanged) nor "a" (kept), so Python's edits of them stay.
        assert read["fields"]["address"] == {"street": "2 Rue", "zip": {"é": 1, "x": 0}, "floor": 2}
        assert read["fields"]["labels"] == ["b", "X"]
        assert read["fields"]["notes"] == "ébut!"
        assert read["conflicts"] == []
    finally:
        pair.close()


ONE_OVER_TRUE = [
    {"do": "set", "path": ["m"], "value": {"flag": True, "list": [True]}},
    {"do": "set", "path": ["m"], "value": {"flag": 1, "list": [1]}},  # a change: true is not 1
]


def test_js_assigning_1_over_true_writes_it(js: JsRecordPeer) -> None:
    pair = Pair(js)
    try:
        pair.js_edit(ONE_OVER_TRUE, now=T0)
        read = js.call("read", doc=pair.name)
        assert canonical(read["fields"]) == canonical({"m": {"flag": 1, "list": [1]}})
    finally:
        pair.close()


def test_python_assigning_1_over_true_writes_it() -> None:
    py = PyReplica()
    py.edit(ONE_OVER_TRUE)
    assert canonical(read_fields(py.doc)) == canonical({"m": {"flag": 1, "list": [1]}})


def test_a_string_assigned_over_a_text_splices_whole_characters(js: JsRecordPeer) -> None:
    # 😀 and 👩 share their high surrogate, 😀 and 🨀 their low one: a splice by UTF-16 units
    # would cut a character in two.
    pair = Pair(js)
    try:
        pair.py.edit([{"do": "text", "path": [f], "insert": "x😀y"} for f in ("t1", "t2")])
        pair.sync()
        pair.py.edit(
            [
                {"do": "text", "path": [f], "pos": p, "insert": m}
                for f in ("t1", "t2")
                for p, m in ((0, "<"), (4, ">"))
            ]
        )
        pair.js_edit(
            [
                {"do": "set", "path": "t1", "value": "x👩y"},
                {"do": "set", "path": "t2", "value": "x\U0001fa00y"},
            ],
            now=T0 + 10,
        )
        pair.py.apply(pair.py_pending)
        read, _ = pair.sync()
        assert read["fields"] == {"t1": "<x👩y>", "t2": "<x\U0001fa00y>"}
    finally:
        pair.close()


def test_after_a_deletion_map_content_shows_before_a_list_and_a_text(js: JsRecordPeer) -> None:
    pair = Pair(js)
    try:
        pair.py.edit([{"do": "set", "path": ["notes", "zip"], "value": 1}])
        pair.sync()
        deletion = pair.js_edit([{"do": "delete", "path": "notes"}], now=T0 + 10)
        assert deletion == []
        pair.py.edit(  # concurrent with the deletion, by Python and by a raw Yjs peer
            [
                {"do": "set", "path": ["notes", "street"], "value": "s"},
                {"do": "rootArray", "name": array_root_name(("notes",)), "insert": ["i"]},
                {"do": "rootText", "name": text_root_name(("notes",)), "insert": "t"},
            ]
        )
        pair.py.apply(pair.py_pending)
        read, _ = pair.sync()
        assert read["fields"] == {"notes": {"street": "s"}}
        lost = [(c["key"].split("@")[0], c["lost"], c["won"]["kind"]) for c in read["conflicts"]]
        assert lost == [
            ('array:["notes"]', {"kind": "array", "value": ["i"], "ts": None}, "deleted"),
            ('text:["notes"]', {"kind": "text", "value": "t", "ts": None}, "deleted"),
        ]
    finally:
        pair.close()


def test_keys_and_slots_compare_by_code_point_as_in_python(js: JsRecordPeer) -> None:
    # UTF-16 order puts 😀 (D83D DE00) before U+E000; code point order, after.
    high, private = "😀", "\ue000"
    pair = Pair(js)
    try:
        pair.py.edit([{"do": "set", "path": [f], "value": "py"} for f in (high, private)])
        pair.js_edit(
            [{"do": "set", "path": f, "value": "js"} for f in (high, private)]
            + [
                {"do": "rawEntry", "key": f"019ab0c2d3e4.000000.{r}", "value": {"f": "w", "v": r}}
                for r in (high, private)
            ],
            now=T0 + 10,
        )
        pair.py.apply(pair.py_pending)
        read, _ = pair.sync()
        assert read["fields"]["w"] == high
        assert [c["slot"] for c in read["conflicts"]] == [["w"], [private], [high]]
    finally:
        pair.close()


def test_a_v1_record_read_and_edited_by_js(js: JsRecordPeer) -> None:
    pair = Pair(js, v1_record().get_update())
    try:
        read = js.call("read", doc=pair.name)
        assert read["fields"] == {
            "status": "open",
            "notes": "v1 note",
            "address": {"street": "1 Rue", "zip": {"é": 48.8}},
            "labels": ["boiler", {"part": "valve"}],
        }
        pair.py.now = T0
        pair.py.edit(
            [
                {"do": "text", "path": ["notes"], "pos": 0, "insert": "PY "},
                {"do": "set", "path": ["address", "floor"], "value": 2},
            ]
        )
        refused = pair.js_edit(
            [
                {"do": "text", "path": "notes", "insert": " + JS"},  # the v1 Y.Text, in place
                {"do": "set", "path": ["address", "city"], "value": "Paris"},  # the v1 Y.Map
                {"do": "array", "path": "labels", "insert": ["js"]},  # the v1 Y.Array
                {"do": "set", "path": "status", "value": "closed", "atomic": True},  # to an entry
                {"do": "map", "path": "notes"},  # a text: refused
            ],
            now=T0 + 10,
        )
        assert refused == [4]
        pair.py.apply(pair.py_pending)
        read, _ = pair.sync()
        assert read["fields"] == {
            "status": "closed",
            "notes": "PY v1 note + JS",
            "address": {"street": "1 Rue", "zip": {"é": 48.8}, "floor": 2, "city": "Paris"},
            "labels": ["boiler", {"part": "valve"}, "js"],
        }
        assert read["conflicts"] == []
        assert "status" not in pair.py.doc.get(FIELDS_ROOT, type=Map)  # moved to an entry
    finally:
        pair.close()


def test_a_v1_value_beside_a_concurrent_js_entry_is_a_conflict(js: JsRecordPeer) -> None:
    pair = Pair(js)
    try:
        pair.js_edit([{"do": "set", "path": "phone", "value": "new"}], now=T0)
        with pair.py.doc.transaction():  # an old replica writes the v1 way, concurrently
            pair.py.doc.get(FIELDS_ROOT, type=Map)["phone"] = "old"
        pair.py.apply(pair.py_pending)
        read, _ = pair.sync()
        assert read["fields"] == {"phone": "new"}
        [conflict] = read["conflicts"]
        assert conflict["lost"] == {"kind": "value", "value": "old", "ts": None}
        assert conflict["key"].startswith('v1:["phone"]@')
    finally:
        pair.close()


def test_conflicts_a_js_writer_resolves_are_kept_for_python(js: JsRecordPeer) -> None:
    pair = Pair(js)
    try:
        pair.py.edit([{"do": "set", "path": ["address", "street"], "value": "py street"}])
        pair.js_edit([{"do": "set", "path": ["address", "street"], "value": "js street"}], T0 + 5)
        pair.py.apply(pair.py_pending)
        _, before = pair.sync()
        assert len(before["conflicts"]) == 1
        pair.js_edit([{"do": "set", "path": "address", "value": {"street": "agreed"}}], T0 + 9)
        pair.py.apply(pair.py_pending)
        read, after = pair.sync()
        assert read["fields"] == {"address": {"street": "agreed"}}
        assert after["conflicts"] == before["conflicts"]  # same conflict, same key, now kept
        assert len(pair.py.doc.get(CONFLICTS_ROOT, type=Map)) == 1
    finally:
        pair.close()


def test_kept_conflicts_are_bounded_the_same_way(js: JsRecordPeer) -> None:
    pair = Pair(js)
    try:
        for i in range(KEPT_CONFLICTS + 3):
            now = T0 + 1000 * i
            pair.py.now = now
            pair.py.edit([{"do": "set", "path": ["n"], "value": f"py{i}"}])
            pair.js_edit([{"do": "set", "path": "n", "value": f"js{i}"}], now=now + 5)
            pair.py.apply(pair.py_pending)
            pair.js.call("apply", doc=pair.name, update=pair.py.state())
            pair.js_edit([{"do": "set", "path": "n", "value": f"js{i} again"}], now=now + 9)
        pair.py.apply(pair.py_pending)
        read, _ = pair.sync()
        assert len(pair.py.doc.get(CONFLICTS_ROOT, type=Map)) == KEPT_CONFLICTS
        assert len(read["conflicts"]) == KEPT_CONFLICTS
        assert {c["lost"]["value"] for c in read["conflicts"]} == {
            f"py{i}" for i in range(3, KEPT_CONFLICTS + 3)
        }
    finally:
        pair.close()


def test_content_roots_without_entries_and_unusual_slot_names(js: JsRecordPeer) -> None:
    name = 'é "q" \\ 😀\n\u2028'
    pair = Pair(js)
    try:
        refused = pair.js_edit(
            [
                {"do": "rootText", "name": text_root_name(("site", name)), "insert": "from js"},
                {"do": "rootArray", "name": array_root_name((name,)), "insert": ["t"]},
                {"do": "rootText", "name": 'text:[ "x"]', "insert": "not canonical"},
                {"do": "text", "path": [name, "deep"], "insert": "x"},  # [name] shows a list
                {"do": "text", "path": ["site", "more"], "insert": "created"},
            ],
            now=T0,
        )
        assert refused == [3]
        pair.py.apply(pair.py_pending)
        read, _ = pair.sync()
        assert read["fields"] == {"site": {name: "from js", "more": "created"}, name: ["t"]}
        assert read["conflicts"] == []
        pair.py.edit([{"do": "set", "path": [name], "value": "py"}])
        read, _ = pair.sync()
        assert read["fields"][name] == "py"
        assert str(pair.py.doc.get(array_root_name((name,)), type=Array)) == "[]"
    finally:
        pair.close()


MALFORMED = {
    "not canonical key": ("019AB0C2D3E4.000003.js", {"f": "x", "v": 1, "b": None}),
    "short key": ("19ab0c2d3e4.000003.js", {"f": "x", "v": 1, "b": None}),
    "no replica": ("019ab0c2d3e4.000003.", {"f": "x", "v": 1, "b": None}),
    "not an object": ("019ab0c2d3e4.000003.js", ["x", 1]),
    "f a number": ("019ab0c2d3e4.000003.js", {"f": 3, "v": 1, "b": None}),
    "f empty list": ("019ab0c2d3e4.000003.js", {"f": [], "v": 1, "b": None}),
    "f list of numbers": ("019ab0c2d3e4.000003.js", {"f": ["x", 1], "v": 1, "b": None}),
    "bad container kind": ("019ab0c2d3e4.000003.js", {"f": "x", "t": "set", "b": None}),
    "b not a key": ("019ab0c2d3e4.000003.js", {"f": "x", "v": 1, "b": "yesterday"}),
    "b a number": ("019ab0c2d3e4.000003.js", {"f": "x", "v": 1, "b": 5}),
}


# docs/records.md: "a non-string b" makes an entry malformed; both readers ignore it.
@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_entries_are_ignored_by_both_readers(js: JsRecordPeer, case: str) -> None:
    key, raw = MALFORMED[case]
    pair = Pair(js)
    try:
        pair.js_edit(
            [
                {"do": "set", "path": "x", "value": "kept", "atomic": True},
                {"do": "rawEntry", "key": key, "value": raw},
            ],
            now=T0,
        )
        pair.py.apply(pair.py_pending)
        read, python = pair.sync()
        assert read["fields"] == python["fields"] == {"x": "kept"}
        assert read["conflicts"] == python["conflicts"] == []
    finally:
        pair.close()


def test_container_writers_refuse_another_kind_and_python_agrees(js: JsRecordPeer) -> None:
    pair = Pair(js)
    try:
        ops: list[dict[str, Any]] = [
            {"do": "set", "path": ["n"], "value": 1},
            {"do": "text", "path": ["t"], "insert": "x"},
            {"do": "text", "path": ["n"], "insert": "x"},
            {"do": "array", "path": ["n"]},
            {"do": "map", "path": ["n"]},
            {"do": "map", "path": ["t"]},
            {"do": "set", "path": ["n", "deeper"], "value": 2},
        ]
        assert pair.js_edit(ops, now=T0) == pair.py.edit(ops) == [2, 3, 4, 5, 6]
    finally:
        pair.close()
