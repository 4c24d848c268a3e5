"""A writer process for test_crash_safety.py: edits records until it is killed.

Usage: python crash_writer.py DB START. Prints each edit number after ``edit()`` returned.
Every 25 edits it acknowledges the whole outbox (as a relay would) and compacts.
"""

from __future__ import annotations

import asyncio
import sys

from crdt_sync.store.sqlite import LocalStore


async def main(path: str, start: int) -> None:
    store = await LocalStore.open(path, lww={"jobs": ["status"]})
    i = start
    while True:
        async with store.edit("jobs", f"r{i % 7}") as job:
            job[f"f{i}"] = i
            job["status"] = f"s{i}"
            job.text("log").append(f"{i}é;")
        print(i, flush=True)
        if i % 25 == 24:
            await store.outbox.acknowledge_upto(10**9)
            await store.compact_all()
        i += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
