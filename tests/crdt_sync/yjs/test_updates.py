"""read_update_clocks(): what a Yjs v1 update carries and needs, checked against pycrdt itself.

The reference is what pycrdt does with the same bytes: an update "integrates entirely" on a
document when, after applying it, the document holds every struct it carries and every item
it deletes (``integrate.covers`` on the update and on its delete set, both computed by pycrdt at
byte level). ``missing()`` must say exactly that, for updates made by real documents (text with
formatting and embeds, maps, arrays, nested and XML types, subdocuments, deletions, several
clients editing each other's content) and for ``merge_updates`` of any subset of them (merged
updates of non-contiguous clocks carry skip structs).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pycrdt import (
    Array,
    Doc,
    Map,
    Text,
    XmlElement,
    XmlFragment,
    XmlText,
    get_update,
    merge_updates,
)

from crdt_sync.errors import CrdtSyncError, InvalidMessage
from crdt_sync.yjs.integrate import covers
from crdt_sync.yjs.updates import (
    Gap,
    UpdateClocks,
    decode_state_vector,
    encode_state_vector,
    read_update_clocks,
)

CLIENTS = (1, 2, 300_000_000_000)  # a client id over 32 bits too
EVERYTHING = encode_state_vector({client: 2**32 - 1 for client in CLIENTS})
PROPERTIES = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

words = st.text(alphabet="abé😀 \n", min_size=1, max_size=6)
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | words
    | st.binary(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=3),
    max_leaves=6,
)


def _edit(doc: Doc[Any], op: tuple[Any, ...]) -> None:
    """One transaction of one kind on ``doc`` (``where``: a fraction of the text's length)."""
    kind, where, arg = op
    text = doc.get("notes", type=Text)
    fields = doc.get("fields", type=Map)
    items = doc.get("items", type=Array)
    # Embeds hold one position each but are not in str(text): count them, or a deletion
    # runs past the end (and Yrs panics instead of raising).
    chars = "".join(c if isinstance(c, str) else "\x00" for c, _ in text.diff())

    def offset(index: int) -> int:  # pycrdt text positions are UTF-8 byte offsets
        return len(chars[:index].encode())

    at = int(where * len(chars))
    end = min(len(chars), at + 2)
    with doc.transaction():
        if kind == "insert":
            text.insert(offset(at), arg, {"bold": True} if len(arg) % 2 else None)
        elif kind == "delete" and at < end:
            del text[offset(at) : offset(end)]
        elif kind == "format" and at < end:
            text.format(offset(at), offset(end), {"italic": arg})
        elif kind == "embed":
            text.insert_embed(offset(at), {"image": arg})
        elif kind == "set":
            fields["key" if where < 0.5 else "other"] = arg
        elif kind == "unset" and len(fields):
            del fields[sorted(fields.keys())[0]]
        elif kind == "nested":
            fields["nested"] = Map({"note": Text(arg), "list": Array([1, arg])})
        elif kind == "append":
            items.append(arg)
        elif kind == "remove" and len(items):
            del items[0]
        elif kind == "xml":
            xml = doc.get("xml", type=XmlFragment)
            xml.children.append(XmlElement("p", {"class": arg}, [XmlText(arg)]))
        elif kind == "subdoc":
            fields["attachment"] = Doc(guid="attachment")


ops = st.one_of(
    st.tuples(
        st.sampled_from(["insert", "format", "embed", "nested", "xml"]), st.floats(0, 1), words
    ),
    st.tuples(st.sampled_from(["delete", "unset", "remove", "subdoc"]), st.floats(0, 1), st.none()),
    st.tuples(st.sampled_from(["set", "append"]), st.floats(0, 1), values),
)
steps = st.lists(
    st.tuples(st.integers(0, len(CLIENTS) - 1), st.none() | st.integers(0, len(CLIENTS) - 1), ops),
    min_size=1,
    max_size=12,
)


def _history(script: list[tuple[int, int | None, tuple[Any, ...]]]) -> list[bytes]:
    """Run ``script`` on one document per client: each step optionally first syncs the editing
    client from another one (so edits refer to other clients' items), then edits. Returns every
    transaction's update, in order."""
    docs = [Doc(client_id=client) for client in CLIENTS]
    updates: list[bytes] = []
    for doc in docs:
        doc.observe(lambda event: updates.append(event.update))
    for who, sync_from, op in script:
        doc = docs[who]
        if sync_from is not None and sync_from != who:
            doc.apply_update(docs[sync_from].get_update(doc.get_state()))
        _edit(doc, op)
    return updates  # syncs included: applying another client's update is an update too


def _clean_doc(updates: list[bytes]) -> Doc[Any]:
    """A document of those ``updates`` that integrate entirely (in some order), holding
    nothing pending: like the relay's state, which never takes what cannot integrate."""
    doc: Doc[Any] = Doc()
    left = list(updates)
    progress = True
    while progress:
        progress = False
        for update in list(left):
            if _integrates_entirely(doc, update)[0]:
                doc.apply_update(update)
                left.remove(update)
                progress = True
    return doc


def _integrates_entirely(base: Doc[Any], update: bytes) -> tuple[bool, dict[int, int]]:
    """pycrdt's answer: does ``update`` integrate entirely on ``base``? And the state after."""
    doc: Doc[Any] = Doc()
    doc.apply_update(base.get_update())
    doc.apply_update(update)
    state = decode_state_vector(doc.get_state())
    deletions = get_update(update, EVERYTHING)  # the update's delete set alone
    return covers(state, update) and covers(state, deletions), state


@PROPERTIES
@given(steps, st.data())
def test_missing_says_whether_pycrdt_integrates_the_update(
    script: list[tuple[int, int | None, tuple[Any, ...]]], data: st.DataObject
) -> None:
    updates = _history(script)
    assume(updates)
    # Drawn by index: the bytes may vary between runs (Yrs encodes map values in hash order).
    indexes = st.integers(0, len(updates) - 1)
    merged = [updates[i] for i in data.draw(st.lists(indexes, min_size=1, max_size=5))]
    update = data.draw(st.sampled_from([*updates, merge_updates(*merged)]), label="update")
    base = _clean_doc([updates[i] for i in data.draw(st.lists(indexes), label="base")])
    state = decode_state_vector(base.get_state())

    clocks = read_update_clocks(update)
    entirely, after = _integrates_entirely(base, update)
    assert (clocks.missing(state) is None) == entirely
    if entirely:
        extended = dict(state)
        clocks.extend(extended)
        assert extended == after


@PROPERTIES
@given(steps)
def test_a_documents_whole_state_needs_nothing_and_carries_its_state_vector(
    script: list[tuple[int, int | None, tuple[Any, ...]]],
) -> None:
    doc = _clean_doc(_history(script))
    clocks = read_update_clocks(doc.get_update())
    assert clocks.missing({}) is None
    state: dict[int, int] = {}
    clocks.extend(state)
    assert state == decode_state_vector(doc.get_state())


def _sequence() -> list[bytes]:
    doc: Doc[Any] = Doc(client_id=7)
    updates: list[bytes] = []
    doc.observe(lambda e: updates.append(e.update))
    notes = doc.get("notes", type=Text)
    notes += "abc"  # clocks 0..2
    notes += "😀é"  # clocks 3..5: the emoji is two UTF-16 units
    del notes[0:1]  # deletes clock 0: a delete set only
    notes += "z"  # clock 6
    return updates


def test_each_update_needs_the_clocks_before_it() -> None:
    first, second, deletion, third = _sequence()
    assert read_update_clocks(first) == UpdateClocks({7: ((0, 3),)}, {})
    assert read_update_clocks(second).carried == {7: ((3, 6),)}
    assert read_update_clocks(second).missing({}) == Gap(7, 0, 3)
    assert read_update_clocks(second).missing({7: 3}) is None
    assert read_update_clocks(deletion) == UpdateClocks({}, {7: 1})
    assert read_update_clocks(third).missing({7: 3}) == Gap(7, 3, 6)


def test_a_merge_with_a_hole_needs_the_hole() -> None:
    first, second, _, third = _sequence()
    holey = read_update_clocks(merge_updates(first, third))
    assert holey.carried == {7: ((0, 3), (6, 7))}
    assert holey.missing({}) == Gap(7, 3, 6)
    assert holey.missing({7: 6}) is None
    state = {7: 3}
    read_update_clocks(second).extend(state)
    assert state == {7: 6}


def test_a_state_vector_beyond_the_update_is_kept() -> None:
    first, *_ = _sequence()
    state = {7: 10, 8: 2}
    read_update_clocks(first).extend(state)
    assert state == {7: 10, 8: 2}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x01",  # one group, truncated
        b"\x01\x01\x07\x00\x0b",  # unknown content ref 11 (Yrs' move)
        b"\x01\x01\x07\x00\x07\x01\x01\x74\x07\x07\x00",  # weak-link shared type
        b"\x01\x01\x07\x00\x04\x01\x01\x74\x02\xff\xfe\x00",  # string not UTF-8
        b"\x01\x01\x07\x00\x08\x01\x01\x74\x01\x70\x00",  # unknown any tag
        b"\x01\x01\x07\x00\x08\x01\x01\x74\x01" + b"\x75\x01" * 5000,  # deep, truncated
        b"\x01\xff\xff\xff\xff\x0f\x07\x00",  # many structs promised, none there
    ],
)
def test_malformed_updates_raise_invalid_message(data: bytes) -> None:
    with pytest.raises(InvalidMessage):
        read_update_clocks(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.data())
def test_any_bytes_give_clocks_or_invalid_message(data: bytes, more: st.DataObject) -> None:
    updates = _sequence()
    valid = more.draw(st.sampled_from(updates))
    cut = more.draw(st.integers(0, len(valid)))
    flip = more.draw(st.integers(0, 255))
    mutated = bytearray(valid)
    if mutated:
        mutated[cut % len(mutated)] ^= flip
    for candidate in (data, valid[:cut], bytes(mutated)):
        try:
            clocks = read_update_clocks(candidate)
        except CrdtSyncError as exc:
            assert isinstance(exc, InvalidMessage)
        else:
            clocks.missing({})
