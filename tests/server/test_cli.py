"""The ``crdt-sync`` command line: help, token, serve's development secret."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from crdt_sync.server.tokens import verify
from helpers.relay import READY_PREFIX, RelayClient

from crdt_sync.protocol import Welcomed

CLI = Path(sys.executable).parent / "crdt-sync"


def _run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "CRDT_SYNC_SECRET"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "crdt_sync.server", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_serve_help_documents_every_flag(tmp_path: Path) -> None:
    result = _run(["serve", "--help"], tmp_path)
    assert result.returncode == 0
    flags = ["--host", "--port", "--data", "--secret", "--durable", "--max-frame-bytes",
             "--max-items", "--rate-limit", "--state-cache-mb", "--early-fanout", "--verifier",
             "--validator", "--log-level", "--forget-origins-after"]  # fmt: skip
    for flag in flags:
        assert flag in result.stdout, flag
    assert "CRDT_SYNC_SECRET" in result.stdout


def test_console_script_is_installed(tmp_path: Path) -> None:
    result = subprocess.run([str(CLI), "--help"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, check=False)  # fmt: skip
    assert result.returncode == 0 and "serve" in result.stdout and "token" in result.stdout


def test_token_prints_a_token_for_the_grant(tmp_path: Path) -> None:
    result = _run(["token", "--tenant", "acme", "--collections", "jobs,contacts",
                   "--secret", "s3", "--ttl", "120"], tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    grant = verify("s3", result.stdout.strip())
    assert grant.tenant == "acme" and grant.collections == {"jobs", "contacts"}
    from_env = _run(["token", "--tenant", "t", "--collections", "jobs"], tmp_path,
                    {"CRDT_SYNC_SECRET": "env-secret"})  # fmt: skip
    assert verify("env-secret", from_env.stdout.strip()).tenant == "t"


def test_token_without_any_secret_fails_clearly(tmp_path: Path) -> None:
    result = _run(["token", "--tenant", "t", "--collections", "jobs", "--data", "none"], tmp_path)
    assert result.returncode == 2
    assert "no secret" in result.stderr


async def _welcome_tenant(url: str, token: str) -> str:
    async with RelayClient.open(url, token, "r", welcome=False) as client:
        return (await client.next_event(Welcomed)).tenant


def test_serve_without_secret_uses_a_persisted_development_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CRDT_SYNC_SECRET"}
    process = subprocess.Popen(
        [sys.executable, "-m", "crdt_sync.server", "serve", "--port", "0", "--data", "d"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stderr is not None
        line = process.stdout.readline()
        assert line.startswith(READY_PREFIX), line
        url = line[len(READY_PREFIX) :].strip()
        assert (tmp_path / "d" / "secret").stat().st_mode & 0o077 == 0
        token = _run(["token", "--tenant", "dev", "--collections", "jobs", "--data", "d"], tmp_path)
        assert asyncio.run(_welcome_tenant(url, token.stdout.strip())) == "dev"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "WARNING" in stderr and "development secret" in stderr


def test_serve_flags_map_onto_the_relay_config_and_its_storage(tmp_path: Path) -> None:
    from crdt_sync.server.cli import _parser, relay_config
    from crdt_sync.server.relay import Relay
    from crdt_sync.server.storage import SQLiteRelayStorage

    args = _parser().parse_args(
        ["serve", "--data", str(tmp_path), "--secret", "s", "--port", "0", "--durable",
         "--early-fanout", "--rate-limit", "0", "--state-cache-mb", "0.5", "--max-items", "7",
         "--forget-origins-after", "500"]
    )  # fmt: skip
    config = relay_config(args)
    assert (config.port, config.durable, config.early_fanout) == (0, True, True)
    assert (config.rate_limit, config.max_items) == (0, 7)
    assert config.state_cache_bytes == 512 * 1024
    storage = Relay(config).storage
    assert isinstance(storage, SQLiteRelayStorage)
    assert storage.states.max_bytes == 512 * 1024 and storage.durable
    assert storage.forget_origins_after == 500
    default = relay_config(_parser().parse_args(["serve", "--data", str(tmp_path)]))
    assert default.state_cache_bytes == 64 * 1024 * 1024
