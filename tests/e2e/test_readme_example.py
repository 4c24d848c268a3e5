"""The README's client example and docs/example_client.py run as written against a relay
started the way ``scripts/serve`` starts it (the script itself, on a free port).

The README block is extracted from under the heading ``## Client example``. If the block only
defines ``main(url, token)``, the test calls it; if it runs itself (``asyncio.run(...)``), it
gets the URL and token from ``CRDT_SYNC_URL`` and ``CRDT_SYNC_TOKEN``.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.replicas import open_replica, until

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
EXAMPLE = ROOT / "docs" / "example_client.py"
READY = "crdt-sync relay listening on "
SECRET = "readme-example-secret"
BIN = Path(sys.executable).parent

RUNNER = """
import asyncio, os, runpy, sys
path = sys.argv[1]
source = open(path, encoding="utf-8").read()
namespace = runpy.run_path(path, run_name="__main__")
if "asyncio.run(" not in source:
    asyncio.run(namespace["main"](os.environ["CRDT_SYNC_URL"], os.environ["CRDT_SYNC_TOKEN"]))
"""


def readme_client_example() -> str:
    """The first ```python block under ``## Client example`` in README.md."""
    text = README.read_text(encoding="utf-8")
    section = re.search(r"^## Client example\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "README.md has no '## Client example' section"
    block = re.search(r"```python\n(.*?)```", section.group(1), re.S)
    assert block, "the '## Client example' section has no ```python block"
    return block.group(1)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """``scripts/serve --port 0 --data DIR`` with the secret in ``CRDT_SYNC_SECRET``; its URL."""
    env = {**os.environ, "CRDT_SYNC_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [str(ROOT / "scripts" / "serve"), "--port", "0", "--data", str(tmp_path / "relay-data")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while True:
            line = lines.get(timeout=60)
            assert line is not None, "scripts/serve exited before listening"
            if line.startswith(READY):
                break
        yield line[len(READY) :].strip()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        reader.join(5)
        assert process.stdout is not None
        process.stdout.close()


def _token() -> str:
    result = subprocess.run(
        [str(BIN / "crdt-sync"), "token", "--tenant", "acme", "--collections", "jobs,contacts"],
        env={**os.environ, "CRDT_SYNC_SECRET": SECRET},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


def _run_example(source: str, url: str, token: str, workdir: Path) -> str:
    workdir.mkdir()
    (workdir / "example.py").write_text(source, encoding="utf-8")
    (workdir / "runner.py").write_text(RUNNER, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "runner.py", "example.py"],
        cwd=workdir,  # not the checkout: its crdt_sync/ folder would shadow the package
        env={**os.environ, "CRDT_SYNC_URL": url, "CRDT_SYNC_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (workdir / "acme-tech-17.db").exists()
    return result.stdout


async def _relay_has_job(tmp_path: Path, url: str, token: str) -> None:
    async with open_replica(tmp_path, "checker", url, token=token, collections=["jobs"]) as r:
        await r.wait_synced()
        await until(lambda: r.exists("jobs", "job-42"), [r], what="job-42 on the relay")
        job = await r.get("jobs", "job-42")
        assert job["status"] == "in_progress"
        assert "Arrived on site" in job["notes"]


@pytest.mark.asyncio
async def test_readme_client_example_runs_as_written(tmp_path: Path, served: str) -> None:
    token = _token()
    output = _run_example(readme_client_example(), served, token, tmp_path / "readme")
    assert "in_progress" in output
    await _relay_has_job(tmp_path, served, token)


@pytest.mark.asyncio
async def test_docs_example_client_runs_and_reports_status(tmp_path: Path, served: str) -> None:
    token = _token()
    output = _run_example(EXAMPLE.read_text(encoding="utf-8"), served, token, tmp_path / "docs")
    assert "1 edit(s) waiting to upload" in output
    statuses = [line for line in output.splitlines() if line.startswith("status:")]
    assert statuses[0].startswith("status: offline")
    assert statuses[-1] == "status: online"
    assert any(line.startswith("status: syncing") for line in statuses)
    assert "in_progress Arrived on site. Zoë let me in ☕" in output
    await _relay_has_job(tmp_path, served, token)
