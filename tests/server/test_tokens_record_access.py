"""Tokens with record-level access: where/claims round-trip, malformed ones are refused,
and a filter needing a claim the token lacks grants no record (fails closed)."""

from __future__ import annotations

import datetime as dt

import pytest
from crdt_sync.server.cli import main, parse_where_option
from crdt_sync.server.record_access import resolved_scope, write_refusal
from crdt_sync.server.tokens import mint, verify

from crdt_sync.errors import AuthError
from crdt_sync.query import And, Claim, Eq, Or, field, matches

SECRET = "s3cret"
NOW = dt.datetime(2026, 12, 2, tzinfo=dt.UTC)


def test_where_and_claims_round_trip() -> None:
    where = {"jobs": field("assigned_to").eq(Claim("sub")) & field("region").is_in(["n", "s"])}
    grant = verify(
        SECRET, mint(SECRET, "acme", ["jobs", "contacts"], 60, where=where, claims={"sub": "amy"})
    )
    assert grant.scopes == where and grant.claims == {"sub": "amy"}
    scope = resolved_scope(grant, "jobs", NOW)
    assert scope is not None
    assert matches(scope, {"assigned_to": "amy", "region": "n"})
    assert not matches(scope, {"assigned_to": "bob", "region": "n"})
    assert resolved_scope(grant, "contacts", NOW) is None


def test_a_missing_claim_grants_nothing() -> None:
    grant = verify(
        SECRET, mint(SECRET, "acme", ["jobs"], 60, where={"jobs": Eq("assigned_to", Claim("sub"))})
    )
    assert grant.scope("jobs") == Or(())
    scope = resolved_scope(grant, "jobs", NOW)
    assert write_refusal(scope, None, {"assigned_to": "amy"}) is not None


def test_malformed_record_access_is_a_bad_token() -> None:
    import base64
    import hashlib
    import hmac
    import json

    def forged(payload: dict[str, object]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
        sig = hmac.new(SECRET.encode(), f"v1.{body}".encode(), hashlib.sha256).digest()
        return f"v1.{body}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"

    base = {"tenant": "acme", "collections": ["jobs"], "exp": 2**40}
    for bad in ({"where": {"jobs": ["nope"]}}, {"where": []}, {"claims": {"sub": [1]}}):
        with pytest.raises(AuthError, match=r"malformed"):
            verify(SECRET, forged({**base, **bad}))


def test_mint_refuses_filters_on_collections_not_granted() -> None:
    with pytest.raises(ValueError, match="does not grant"):
        mint(SECRET, "acme", ["jobs"], 60, where={"contacts": Eq("a", 1)})


def test_write_refusals() -> None:
    scope = Eq("owner", "amy")
    assert write_refusal(scope, {"owner": "amy"}, {"owner": "amy", "x": 1}) is None
    assert write_refusal(scope, None, {"owner": "amy"}) is None
    assert "outside" in (write_refusal(scope, {"owner": "bob"}, {"owner": "amy"}) or "")
    assert "move" in (write_refusal(scope, {"owner": "amy"}, {"owner": "bob"}) or "")
    assert write_refusal(None, {"owner": "bob"}, {}) is None


def test_cli_where_option(capsys: pytest.CaptureFixture[str]) -> None:
    collection, where = parse_where_option('jobs={"assigned_to": {"claim": "sub"}, "s": [1, 2]}')
    assert collection == "jobs"
    assert isinstance(where, And) and where.parts[0] == Eq("assigned_to", Claim("sub"))
    assert parse_where_option('jobs=["eq", "a", 1]') == ("jobs", Eq("a", 1))
    with pytest.raises(ValueError):
        parse_where_option("jobs")
    with pytest.raises(ValueError):
        parse_where_option('jobs=["nope"]')
    code = main(
        [
            "token",
            "--tenant",
            "acme",
            "--collections",
            "jobs",
            "--secret",
            SECRET,
            "--where",
            'jobs={"assigned_to": {"claim": "sub"}}',
            "--claim",
            "sub=amy",
        ]
    )
    assert code == 0
    grant = verify(SECRET, capsys.readouterr().out.strip())
    assert grant.claims == {"sub": "amy"} and "jobs" in grant.scopes
    assert (
        main(
            [
                "token",
                "--tenant",
                "acme",
                "--collections",
                "jobs",
                "--secret",
                SECRET,
                "--where",
                "jobs=nope",
            ]
        )
        == 2
    )
