"""The relay's field decoder: a kept document gives the same fields as decoding the whole
state, a forgotten one is decoded again, documents that are not records index nothing."""

from __future__ import annotations

from crdt_sync.server.record_fields import FieldReader, indexed_fields
from helpers.record_updates import RecordWriter
from helpers.yjs_updates import text_edits


def test_kept_documents_give_the_fields_of_the_whole_state() -> None:
    reader = FieldReader(max_docs=2)
    job = RecordWriter("jobs")
    history: list[bytes] = []
    loads = 0

    def load() -> list[bytes]:
        nonlocal loads
        loads += 1
        return list(history)

    for n in range(5):
        update = job.write(status=f"s{n}", n=n, done=n % 2 == 0)
        existed, fields = reader.after(("t", "jobs", "j1"), load, [update])
        history.append(update)
        assert existed == (n > 0)
        assert (
            fields
            == indexed_fields(history)
            == {"status": f"s{n}", "n": n, "done": int(n % 2 == 0)}
        )
    assert loads == 1  # decoded once, then only the new updates are applied
    reader.forget([("t", "jobs", "j1")])
    assert reader.after(("t", "jobs", "j1"), load, [])[1]["status"] == "s4"
    assert loads == 2


def test_least_recently_written_documents_go_first() -> None:
    reader = FieldReader(max_docs=1)
    calls: list[str] = []
    for rid in ("a", "b", "a"):
        reader.after(("t", "jobs", rid), lambda rid=rid: calls.append(rid) or [], [])
    assert calls == ["a", "b", "a"]


def test_documents_that_are_not_records_index_nothing() -> None:
    assert indexed_fields(text_edits(3)) == {}
    assert FieldReader().after(("t", "notes", "n"), list, text_edits(2))[1] == {}
