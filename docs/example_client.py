"""A replica that edits a job offline, then goes online and watches its status while it syncs.

Run it against a relay started with ``scripts/serve``::

    export CRDT_SYNC_TOKEN=$(.venv/bin/crdt-sync token --tenant acme --collections jobs,contacts)
    .venv/bin/python docs/example_client.py          # CRDT_SYNC_URL defaults to ws://127.0.0.1:8765

(``tests/e2e/test_readme_example.py`` runs this file, and the README's client example, against
a real relay, so neither can rot.)
"""

import asyncio
import os

from crdt_sync.client import Replica


async def main(url: str, token: str) -> None:
    async with Replica.open("acme-tech-17.db", url=url, token=token,
                            lww={"jobs": ["status"]}, offline=True) as replica:
        # Sync is switched off (as after replica.go_offline()): editing never waits anyway.
        async with replica.edit("jobs", "job-42") as job:
            job["status"] = "in_progress"
            job.text("notes").append("Arrived on site. Zoë let me in ☕\n")
        print(await replica.outbox.count(), "edit(s) waiting to upload")

        print("status:", replica.status.current)  # offline, 1 pending
        replica.go_online()                     # upload first, then download, then online
        async for status in replica.status.changes():
            print("status:", status)            # connecting, syncing 1/1, online
            if status.state == "online" and status.pending == 0:
                break
        job = await replica.get("jobs", "job-42")
        print(job["status"], job["notes"].strip())


if __name__ == "__main__":
    asyncio.run(main(os.environ.get("CRDT_SYNC_URL", "ws://127.0.0.1:8765"),
                     os.environ["CRDT_SYNC_TOKEN"]))
