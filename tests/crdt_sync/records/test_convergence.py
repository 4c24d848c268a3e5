"""Convergence of records under random edits and hostile delivery (hypothesis).

Several replicas of one record, each a pycrdt ``Doc`` with its own ``RecordEditor`` and
``HybridClock`` (one or two clocks far ahead, beyond the skew bound). They make random CRDT edits
(map sets and deletes, non-ASCII text inserts and deletes at character positions, nested maps,
arrays) and random LWW writes and deletes, one transaction each; every transaction's update is
captured and delivered to the others in random order, duplicated, and batched with
``merge_updates``. The test keeps its own account of every LWW write and checks, once all
updates have reached everyone:

* every replica reads identical fields (and holds identical LWW entries);
* each LWW field holds its maximum-timestamp write among all the writes made;
* a write made after seeing a winner beats it, also when the winner came from the skewed
  clock, and seeing a skewed timestamp never drags a correct clock beyond the skew bound;
* ``conflicts()`` reports exactly the writes that are still present beside their field's
  winner, which are exactly the writes that no later writer of the field had seen.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text, TransactionEvent, merge_updates

from crdt_sync.records.clock import DEFAULT_MAX_SKEW_MS, HybridClock, Timestamp
from crdt_sync.records.layout import layout_of
from crdt_sync.records.lww import LWW_ROOT, LwwPolicy
from crdt_sync.records.record import RecordEditor, read_fields
from crdt_sync.records.values import normalize

T0 = 1_763_890_500_000
SKEW_AHEAD = 3_600_000  # the bad clock runs an hour ahead: far beyond the 5 min bound
LWW_FIELDS = ("status", "assignee", "priority")
POLICY = LwwPolicy({"jobs": LWW_FIELDS})
MAP_KEYS = ("a", "b", "c")
TEXT_FIELDS = ("notes", "memo")

NASTY = "aZ é\u0301ñ€ß日本語😀👩\u200d🔧🇫🇷\n"
nasty_text = st.text(alphabet=st.sampled_from(NASTY), max_size=5)
plain_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**40), 2**40),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        nasty_text,
        st.binary(max_size=3),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(MAP_KEYS), inner, max_size=3)
    ),
    max_leaves=8,
)


@dataclass
class LwwWrite:
    """One LWW write as the test saw it being made."""

    field: str
    ts: Timestamp
    value: Any
    deleted: bool
    author: str
    seen: frozenset[str]  # keys of the field's entries present in the author's doc


@dataclass
class Replica:
    name: str
    now: int
    doc: Doc[Any] = field(default_factory=Doc)
    clock: HybridClock = field(init=False)
    max_now: int = field(init=False)

    def __post_init__(self) -> None:
        self.clock = HybridClock(self.name)
        self.max_now = self.now

    def stamp(self, current: Timestamp | None) -> Timestamp:
        """What the store does: beat the current winner, else a plain tick."""
        return self.clock.after(current, self.now) if current else self.clock.tick(self.now)

    @contextmanager
    def edit(self, updates: list[bytes]) -> Iterator[RecordEditor]:
        """One transaction; its update (if any) is appended to ``updates``."""
        captured: list[bytes] = []

        def capture(event: TransactionEvent) -> None:
            captured.append(event.update)

        subscription = self.doc.observe(capture)
        try:
            with self.doc.transaction():
                yield RecordEditor(self.doc, "jobs", POLICY, self.stamp)
        finally:
            self.doc.unobserve(subscription)
        assert len(captured) <= 1, "an edit must produce at most one update"
        updates.extend(captured)

    def receive(self, update: bytes) -> None:
        """Apply a remote update and advance the clock past its timestamps (the store's
        conflict scan does the same)."""
        self.doc.apply_update(update)
        for entry in layout_of(self.doc).all_entries():
            self.clock.observe(entry.ts, self.now)


def lww_raw(doc: Doc[Any]) -> dict[str, Any]:
    return {k: normalize(v) for k, v in doc.get(LWW_ROOT, type=Map).items()}


def entries_of(doc: Doc[Any], name: str) -> frozenset[str]:
    """Keys of the register entries of one field, read from the raw map (not via
    crdt_sync.records.lww)."""
    return frozenset(k for k, raw in doc.get(LWW_ROOT, type=Map).items() if raw.get("f") == name)


def random_edit(
    data: st.DataObject, replica: Replica, rec: RecordEditor, writes: list[LwwWrite]
) -> None:
    """One random operation on ``rec``, valid for its current state."""
    kind = data.draw(
        st.sampled_from(
            [
                "set",
                "delete",
                "text_insert",
                "text_delete",
                "text_append",
                "text_assign",
                "nested",
                "array",
                "lww_write",
                "lww_write",
                "lww_delete",
            ]
        ),
        label="op",
    )
    if kind == "set":
        rec[data.draw(st.sampled_from(MAP_KEYS))] = data.draw(plain_values)
    elif kind == "delete":
        present = [k for k in MAP_KEYS if k in rec]
        if present:
            del rec[data.draw(st.sampled_from(present))]
    elif kind.startswith("text"):
        name = data.draw(st.sampled_from(TEXT_FIELDS))
        text = rec.text(name)
        size = len(text)
        if kind == "text_insert":
            text.insert(data.draw(st.integers(0, size)), data.draw(nasty_text))
        elif kind == "text_delete" and size:
            pos = data.draw(st.integers(0, size - 1))
            text.delete(pos, data.draw(st.integers(0, size - pos)))
        elif kind == "text_append":
            rec[name] += data.draw(nasty_text)
        elif kind == "text_assign":
            current = str(text)
            pos = data.draw(st.integers(0, len(current)))
            rec[name] = current[:pos] + data.draw(nasty_text) + current[pos:]
    elif kind == "nested":
        site = rec.map("site")
        key = data.draw(st.sampled_from(MAP_KEYS))
        if key in site and data.draw(st.booleans()):
            del site[key]
        else:
            site[key] = data.draw(plain_values)
    elif kind == "array":
        parts = rec.array("parts")
        if len(parts) and data.draw(st.booleans()):
            del parts[data.draw(st.integers(0, len(parts) - 1))]
        else:
            parts.insert(data.draw(st.integers(0, len(parts))), data.draw(plain_values))
    else:
        name = data.draw(st.sampled_from(LWW_FIELDS))
        deleting = kind == "lww_delete"
        if deleting and name not in rec:
            return
        seen = entries_of(replica.doc, name)
        value = None if deleting else data.draw(plain_values)
        if deleting:
            del rec[name]
        else:
            rec[name] = value
        entry = layout_of(replica.doc).winner((name,))
        assert entry is not None and entry.field == name
        writes.append(LwwWrite(name, entry.ts, value, deleting, replica.name, seen))
        if seen:
            # The write beats everything its author saw, skewed or not.
            winner = max(Timestamp.decode(k) for k in seen)
            assert entry.ts > winner
            if winner.ms > replica.now + DEFAULT_MAX_SKEW_MS:
                event("overwrote a skewed winner")
                assert replica.clock.state().ms <= replica.max_now + DEFAULT_MAX_SKEW_MS


def deliver(data: st.DataObject, target: Replica, updates: list[bytes], all_: bool) -> None:
    """Deliver some (or all) updates to ``target``: shuffled, some duplicated, some merged."""
    if not updates:
        return
    if all_:
        chosen = list(updates)
    else:
        chosen = data.draw(st.lists(st.sampled_from(updates), max_size=len(updates) + 2))
    rng = random.Random(data.draw(st.integers(0, 2**32 - 1), label="shuffle seed"))
    rng.shuffle(chosen)
    chosen += rng.sample(chosen, k=min(len(chosen), rng.randint(0, 2)))  # duplicates
    while chosen:
        size = rng.randint(1, 4)
        batch, chosen = chosen[:size], chosen[size:]
        target.receive(batch[0] if len(batch) == 1 else merge_updates(*batch))


@settings(max_examples=150, deadline=None)
@given(st.data(), st.integers(3, 4))
def test_replicas_converge_and_lww_fields_hold_their_latest_write(
    data: st.DataObject, n_replicas: int
) -> None:
    # pycrdt client ids decide how concurrent inserts are ordered: draw them, so that an
    # example replays identically (a random id would make the drawn edits depend on luck).
    client_ids = data.draw(
        st.lists(st.integers(1, 2**32 - 1), min_size=n_replicas, max_size=n_replicas, unique=True),
        label="client ids",
    )
    replicas = [
        Replica(f"r{i}", T0 + data.draw(st.integers(-2000, 2000)), Doc(client_id=client_id))
        for i, client_id in enumerate(client_ids)
    ]
    # One clock far ahead, sometimes two (at the same time: their timestamps can tie).
    fast = replicas[-data.draw(st.integers(1, 2), label="skewed clocks") :]
    for replica in fast:
        replica.now = replica.max_now = T0 + SKEW_AHEAD
    correct = replicas[: len(replicas) - len(fast)]
    updates: list[bytes] = []
    writes: list[LwwWrite] = []

    # A common starting point, as when a record is created and then synced everywhere.
    with replicas[0].edit(updates) as rec:
        rec.text("notes").insert(0, "Début ✓ 😀")
        rec.text("memo")
        rec.map("site")["a"] = 1
        rec.array("parts").append("pompe")
    for replica in replicas[1:]:
        replica.receive(updates[0])

    for _ in range(data.draw(st.integers(1, 25), label="steps")):
        replica = data.draw(st.sampled_from(replicas))
        step = data.draw(st.sampled_from(["edit", "edit", "deliver", "time"]))
        if step == "edit":
            with replica.edit(updates) as rec:
                for _ in range(data.draw(st.integers(1, 3))):
                    random_edit(data, replica, rec, writes)
        elif step == "deliver":
            deliver(data, replica, updates, all_=False)
        else:  # physical time moves on, or is set back
            replica.now += data.draw(st.integers(-5000, 60_000))
            replica.max_now = max(replica.max_now, replica.now)

    for replica in replicas:
        deliver(data, replica, updates, all_=True)
    # pycrdt 0.14.13 can drop an update applied before an earlier update of the same client
    # (see test_pycrdt_drops_some_updates_applied_out_of_order below); the state vector shows
    # the gap, so the sync protocol's state-vector exchange heals it. Do that exchange here.
    for target in replicas:
        for source in replicas:
            target.receive(source.doc.get_update(target.doc.get_state()))

    # Everyone converged, on the record and on the raw LWW entries.
    reference = read_fields(replicas[0].doc)
    raw = lww_raw(replicas[0].doc)
    for replica in replicas[1:]:
        assert read_fields(replica.doc) == reference
        assert lww_raw(replica.doc) == raw

    # A correct clock is never dragged beyond the skew bound by the bad one.
    for replica in correct:
        assert replica.clock.state().ms <= replica.max_now + DEFAULT_MAX_SKEW_MS

    # Each LWW field holds its maximum-timestamp write.
    for name in LWW_FIELDS:
        made = [w for w in writes if w.field == name]
        if not made:
            assert name not in reference
            continue
        latest = max(made, key=lambda w: w.ts)
        if latest.author in {r.name for r in fast} and len({w.author for w in made}) > 1:
            event("the skewed clock holds a field")
        if latest.deleted:
            assert name not in reference
        else:
            assert reference[name] == normalize(latest.value)

    # Conflicts: the writes no later writer of the field had seen (still in place, beside the
    # winner), and the ones a later writer saw lose (kept by that writer).
    removed = set().union(*(w.seen for w in writes)) if writes else set()
    expected: set[tuple[str, str]] = set()
    for name in LWW_FIELDS:
        made = [w for w in writes if w.field == name]
        present = {w.ts.encode() for w in made} - removed
        assert present == entries_of(replicas[0].doc, name)
        if made:
            winner = max(made, key=lambda w: w.ts).ts.encode()
            expected |= {(name, lost) for lost in present - {winner}}
        for w in made:
            if w.seen:
                expected |= {(name, lost) for lost in w.seen - {max(w.seen)}}
    if expected:
        event("concurrent LWW writes")
    for replica in replicas:
        found = {
            (c.field, c.lost.ts.encode())
            for c in layout_of(replica.doc).conflicts()
            if c.field in LWW_FIELDS and c.lost.ts is not None
        }
        assert found == expected


def test_a_skewed_write_wins_only_until_someone_who_saw_it_writes() -> None:
    """The documented rule, end to end: the bad clock cannot win forever."""
    updates: list[bytes] = []
    good, bad = Replica("good", T0), Replica("bad", T0 + SKEW_AHEAD)
    writes: list[LwwWrite] = []

    with bad.edit(updates) as rec:
        rec["status"] = "from the bad clock"
    good.receive(updates[-1])
    assert read_fields(good.doc)["status"] == "from the bad clock"
    assert good.clock.state().ms < T0 + SKEW_AHEAD  # seen, not adopted

    with good.edit(updates) as rec:
        rec["status"] = "closed by the office"
    entry = layout_of(good.doc).winner(("status",))
    assert entry is not None
    writes.append(LwwWrite("status", entry.ts, "closed", False, "good", frozenset()))
    bad.receive(updates[-1])
    for replica in (good, bad):
        assert read_fields(replica.doc) == {"status": "closed by the office"}
        assert layout_of(replica.doc).conflicts() == []
    # The good clock stepped just past the skewed write, and did not move there itself.
    assert writes[0].ts.ms == T0 + SKEW_AHEAD
    assert good.clock.state().ms == T0
    # Later writes of the good replica still follow its own clock, and still win the field.
    good.now += 1000
    with good.edit(updates) as rec:
        rec["priority"] = 1
        rec["status"] = "reopened"
    layout = layout_of(good.doc)
    written = [layout.winner((name,)) for name in ("priority", "status")]
    assert [e.ts.ms for e in written if e is not None] == [T0 + 1000, T0 + SKEW_AHEAD]
    bad.receive(updates[-1])
    assert read_fields(bad.doc) == {"status": "reopened", "priority": 1}


def _updates_of(steps: list[list[tuple[str, str, int]]]) -> tuple[Doc[Any], list[bytes]]:
    doc: Doc[Any] = Doc()
    root = doc.get("f", type=Map)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for step in steps:
        with doc.transaction():
            for op, key, value in step:
                if op == "text":
                    root[key] = Text("ab")
                elif op == "insert":
                    root[key].insert(0, "Z")
                else:
                    root[key] = value
    return doc, updates


@pytest.mark.xfail(
    strict=True,
    reason="pycrdt 0.14.13 (Yrs) drops a pending update of a client when an earlier update of "
    "that client arrives later; a state-vector sync heals it. XPASS means pycrdt fixed it.",
)
def test_pycrdt_drops_some_updates_applied_out_of_order() -> None:
    """Upstream bug, minimal case: four one-transaction updates of ONE client, where the third
    edits a text AND a map key; applied in the order 0, 2, 3, 1 the fourth is lost."""
    source, updates = _updates_of(
        [
            [("text", "t", 0)],
            [("set", "b", 1)],
            [("insert", "t", 0), ("set", "b", 2)],
            [("set", "c", 3)],
        ]
    )
    target: Doc[Any] = Doc()
    for i in (0, 2, 3, 1):
        target.apply_update(updates[i])
    healed: Doc[Any] = Doc()
    for i in (0, 2, 3, 1):
        healed.apply_update(updates[i])
    healed.apply_update(source.get_update(healed.get_state()))
    expected = {"t": "Zab", "b": 2, "c": 3}
    assert normalize(healed.get("f", type=Map).to_py()) == expected  # the workaround works
    assert target.get_state() == source.get_state()
    assert normalize(target.get("f", type=Map).to_py()) == expected
