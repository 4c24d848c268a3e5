"""Yjs clients through crdt-sync's relay vs the reference y-websocket server, one run.

Both servers run in their own process on 127.0.0.1; the same Node load generator
(``tests/js/bench_yjs_load.mjs``: yjs 13.6 + y-websocket 3.1 clients, installed in
``tests/js/node_modules`` by ``scripts/test`` or ``npm ci --prefix tests/js``) drives each:

1. **Throughput**: ``--rooms`` records, each with ``--writers`` writing connections and one
   reading connection; every writer sends ``--updates`` small updates (one character appended
   to a shared ``Y.Text`` + one map key) as fast as it can; timed from the first send until
   every reader holds every update (updates/s, and deliveries/s to readers).
2. **Latency**: one update at a time every ``--interval`` ms, round-robin over the writers of
   one record; per update the time until the record's reader sees it (p50/p99).

Ours: ``crdt-sync serve`` (default persistence: each update group-committed to SQLite before it
is echoed). Reference: ``@y/websocket-server`` 0.1.1 (``node src/server.js``), **in memory** (no
``YPERSISTENCE``), which is how it is usually benchmarked; the durability differs (see
benchmarks/README.md).

Run ``python benchmarks/bench_yjs.py --help``; ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from crdt_sync.server.tokens import mint

ROOT = Path(__file__).resolve().parent.parent
JS_DIR = ROOT / "tests" / "js"
SECRET = "bench-yjs-secret"
READY = "crdt-sync relay listening on "


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_line(process: subprocess.Popen[str], prefix: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"server exited ({process.poll()}) before printing {prefix!r}")
        if line.startswith(prefix):
            return line
    raise RuntimeError(f"no {prefix!r} line within {timeout}s")


def start_ours(workdir: Path) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "crdt_sync.server", "serve", "--host", "127.0.0.1", "--port", "0",
         "--data", str(workdir / "relay-data"), "--secret", SECRET, "--log-level", "WARNING"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    url = wait_for_line(process, READY)[len(READY) :].strip()
    return process, url


def start_reference() -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port)}
    process = subprocess.Popen(
        ["node", str(JS_DIR / "node_modules/@y/websocket-server/src/server.js")],
        cwd=JS_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    wait_for_line(process, "running at")
    return process, f"ws://127.0.0.1:{port}"


def stop(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def run_load(config: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        ["node", str(JS_DIR / "bench_yjs_load.mjs"), json.dumps(config)],
        cwd=JS_DIR, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"load generator failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def targets(ours_url: str, ref_url: str) -> dict[str, dict[str, Any]]:
    token = mint(SECRET, "bench", ["jobs"], 24 * 3600)
    return {
        "crdt-sync relay (/yjs, SQLite group commit)": {
            "serverUrl": ours_url + "/yjs",
            "params": {"token": token},
        },
        "@y/websocket-server 0.1.1 (in memory)": {"serverUrl": ref_url, "params": {}},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rooms", type=int, default=8, help="records (throughput)")
    parser.add_argument("--writers", type=int, default=2, help="writers per record")
    parser.add_argument("--updates", type=int, default=1000, help="updates per writer")
    parser.add_argument("--latency-updates", type=int, default=500, help="latency samples")
    parser.add_argument("--interval", type=float, default=2.0, help="ms between latency sends")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--quick", action="store_true", help="small sizes, one run")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if args.quick:
        args.rooms, args.updates, args.latency_updates, args.runs = 2, 200, 100, 1
    if shutil.which("node") is None or not (JS_DIR / "node_modules" / "yjs").is_dir():
        print("needs node and tests/js/node_modules (npm ci --prefix tests/js)", file=sys.stderr)
        return 2

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-yjs-") as tmp:
        ours, ours_url = start_ours(Path(tmp))
        ref, ref_url = start_reference()
        try:
            for name, target in targets(ours_url, ref_url).items():
                throughput = []
                latency = []
                for run in range(args.runs):
                    throughput.append(run_load({
                        **target, "mode": "throughput", "tag": f"t{run}", "rooms": args.rooms,
                        "writers": args.writers, "readers": 1, "updates": args.updates,
                    }))  # fmt: skip
                    latency.append(run_load({
                        **target, "mode": "latency", "tag": f"l{run}", "rooms": 1,
                        "writers": args.writers, "readers": 1,
                        "updates": args.latency_updates // args.writers,
                        "interval": args.interval,
                    }))  # fmt: skip
                rows.append({
                    "server": name,
                    "updates": throughput[0]["updates"],
                    "updates_per_s": statistics.median(r["updatesPerSecond"] for r in throughput),
                    "latency_samples": latency[0]["updates"],
                    "p50_ms": statistics.median(r["p50ms"] for r in latency),
                    "p99_ms": statistics.median(r["p99ms"] for r in latency),
                    "runs": args.runs,
                })  # fmt: skip
        finally:
            stop(ours)
            stop(ref)

    print(f"# bench_yjs: {platform.python_version()} / node {node_version()} / "
          f"{os.cpu_count()} cores; rooms={args.rooms} writers={args.writers} "
          f"updates/writer={args.updates}; latency interval={args.interval} ms; "
          f"median of {args.runs}")  # fmt: skip
    print()
    print("| server | updates | updates/s | latency samples | p50 ms | p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        cells = [
            row["server"],
            f"{row['updates']:,}",
            f"{row['updates_per_s']:,.0f}",
            str(row["latency_samples"]),
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
        ]
        print("| " + " | ".join(cells) + " |")
    if len(rows) == 2:
        ratio = rows[0]["updates_per_s"] / rows[1]["updates_per_s"]
        print(f"\nthroughput ours/reference: {ratio:.2f}x; "
              f"p50 ours/reference: {rows[0]['p50_ms'] / rows[1]['p50_ms']:.2f}x")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def node_version() -> str:
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
