"""Subscriptions evaluated by a real relay process: a replica keeps a rolling window of
appointments, pinned jobs and whole contacts; records that leave its subscriptions are dropped,
new ones come in, live and across an offline period that spans a window change (the relay's
clock is moved by restarting it with ``$CRDT_SYNC_TEST_NOW``, docs/relay.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from crdt_sync.client import Subscription
from helpers.relay import RelayProcess, start_relay
from helpers.replicas import open_replica, until

from crdt_sync.query import field

PARIS = "Europe/Paris"
DAY_1 = "2026-12-02T09:00:00+01:00"  # the window (0..3 days) is 12-02..12-05
DAY_3 = "2026-12-04T09:00:00+01:00"  # now it is 12-04..12-07

SUBSCRIPTIONS = [
    Subscription("appointments", where=field("date").window(0, 3, tz=PARIS)),
    Subscription("jobs", ids=["job-1"]),
    "contacts",
]


def _relay(data: Path, now: str, port: int = 0, secret: str | None = None) -> RelayProcess:
    options: dict[str, Any] = {"env": {"CRDT_SYNC_TEST_NOW": now}, "port": port}
    if secret is not None:
        options["secret"] = secret
    return start_relay(data, **options)


async def _ids(replica: Any, collection: str) -> set[str]:
    return set(await replica.store.ids(collection))


async def _holds(replica: Any, collection: str, ids: set[str]) -> None:
    async def check() -> bool:
        return await _ids(replica, collection) == ids

    await until(check, [replica], what=f"{collection} to be exactly {sorted(ids)}")


@pytest.mark.asyncio
async def test_a_replica_offline_across_a_window_change_converges(tmp_path: Path) -> None:
    relay = _relay(tmp_path / "relay", DAY_1)
    collections = ("appointments", "jobs", "contacts")
    try:
        async with open_replica(tmp_path, "office", relay, collections=collections) as office:
            for day in range(1, 9):
                async with office.edit("appointments", f"a{day}") as a:
                    a["date"] = f"2026-12-{day:02}"
                    a["who"] = f"client {day}"
            for job in ("job-1", "job-2"):
                async with office.edit("jobs", job) as j:
                    j["status"] = "open"
            async with office.edit("contacts", "c1") as c:
                c["name"] = "Ada"
            await office.wait_synced()

            token = relay.token("acme", collections)
            tech_options = dict(token=token, collections=None, subscriptions=SUBSCRIPTIONS)
            async with open_replica(tmp_path, "tech", relay, **tech_options) as tech:
                await tech.wait_synced()
                assert await _ids(tech, "appointments") == {"a2", "a3", "a4", "a5"}
                assert await _ids(tech, "jobs") == {"job-1"}
                assert await _ids(tech, "contacts") == {"c1"}

                # Live: a record moved out of the window is dropped, one moved in arrives.
                async with office.edit("appointments", "a3") as a:
                    a["date"] = "2026-12-30"
                async with office.edit("appointments", "a8") as a:
                    a["date"] = "2026-12-03"
                await _holds(tech, "appointments", {"a2", "a4", "a5", "a8"})
                assert (await tech.get("appointments", "a8"))["who"] == "client 8"

                # Offline across a window change: the tech edits a2 (which leaves the
                # window), the office moves a5 out and a7 in.
                await tech.go_offline()
                async with tech.edit("appointments", "a2") as a:
                    a["notes"] = "customer was out"
                async with office.edit("appointments", "a5") as a:
                    a["date"] = "2026-12-20"
                async with office.edit("appointments", "a7") as a:
                    a["date"] = "2026-12-04"
                await office.wait_synced()

                relay.stop()
                relay = _relay(tmp_path / "relay", DAY_3, port=relay.port, secret=relay.secret)
                tech.go_online()
                await tech.wait_synced()
                # 12-04..12-07: a4, a6 (came in by time alone), a7 (moved in); a2 (left by
                # time, its edit acknowledged first), a5, a8 (left by time) are dropped.
                await _holds(tech, "appointments", {"a4", "a6", "a7"})
                assert await tech.outbox.count() == 0
                await office.wait_synced()

                async def office_has_note() -> bool:
                    return (await office.get("appointments", "a2")).get("notes") == (
                        "customer was out"
                    )

                await until(office_has_note, [office], what="the tech's note on a2")
    finally:
        relay.kill()


@pytest.mark.asyncio
async def test_changing_subscriptions_resyncs_and_drops_what_is_no_longer_kept(
    tmp_path: Path, relay: RelayProcess
) -> None:
    async with open_replica(tmp_path, "office", relay, collections=("jobs",)) as office:
        for n in range(1, 5):
            async with office.edit("jobs", f"job-{n}") as j:
                j["status"] = "open" if n % 2 else "done"
        await office.wait_synced()
    token = relay.token("acme", ["jobs"])
    first = [Subscription("jobs", where={"status": "open"})]
    async with open_replica(
        tmp_path, "tech", relay, token=token, collections=None, subscriptions=first
    ) as tech:
        await tech.wait_synced()
        assert await _ids(tech, "jobs") == {"job-1", "job-3"}
        async with tech.edit("jobs", "job-9") as j:  # a local record, kept while pending
            j["status"] = "draft"
    second = [Subscription("jobs", ids=["job-2"])]
    async with open_replica(
        tmp_path, "tech", relay, token=token, collections=None, subscriptions=second
    ) as tech:
        await tech.wait_synced()
        # job-9 was pushed (acknowledged) then dropped: it is not in the subscription.
        await _holds(tech, "jobs", {"job-2"})
