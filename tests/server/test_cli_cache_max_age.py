"""``crdt-sync serve --cache-max-age`` / ``--tenant-cache-max-age``: the per-tenant maximum age
of replicas' offline caches, sent in ``welcome``."""

from __future__ import annotations

from pathlib import Path

import pytest
from crdt_sync.server.cli import _parser, relay_config
from crdt_sync.server.config import RelayConfig


def test_flags_map_onto_the_config(tmp_path: Path) -> None:
    args = _parser().parse_args(
        ["serve", "--data", str(tmp_path), "--secret", "s", "--cache-max-age", "86400",
         "--tenant-cache-max-age", "acme=1.5", "--tenant-cache-max-age", "globex=0"]
    )  # fmt: skip
    config = relay_config(args)
    assert config.cache_max_age == 86400.0
    assert config.tenant_cache_max_age == {"acme": 1.5, "globex": None}
    assert config.cache_max_age_for("acme") == 1.5
    assert config.cache_max_age_for("globex") is None  # 0: no expiry for that tenant
    assert config.cache_max_age_for("initech") == 86400.0


def test_no_expiry_by_default(tmp_path: Path) -> None:
    config = relay_config(_parser().parse_args(["serve", "--data", str(tmp_path), "--secret", "s"]))
    assert config.cache_max_age is None and config.cache_max_age_for("acme") is None
    assert RelayConfig().cache_max_age_for("acme") is None


@pytest.mark.parametrize("bad", ["acme", "=5", "acme=-1", "acme=x"])
def test_bad_tenant_values_are_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--tenant-cache-max-age", bad])
    assert "--tenant-cache-max-age" in capsys.readouterr().err
