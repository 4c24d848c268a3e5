"""Token minting and verification (server/tokens.py)."""

from __future__ import annotations

import pytest
from crdt_sync.server.tokens import Grant, mint, secret_verifier, verify
from hypothesis import given, settings
from hypothesis import strategies as st

from crdt_sync.errors import AuthError

SECRET = "s3cret"


def test_round_trip_carries_tenant_collections_expiry() -> None:
    token = mint(SECRET, "acme", ["jobs", "contacts"], ttl=60, now=1000.0)
    grant = verify(SECRET, token, now=1030.0)
    assert grant == Grant("acme", frozenset({"jobs", "contacts"}), 1060.0)
    assert grant.allows("jobs") and not grant.allows("invoices")


def test_expired_token_is_refused_with_token_expired() -> None:
    token = mint(SECRET, "acme", ["jobs"], ttl=60, now=1000.0)
    with pytest.raises(AuthError) as info:
        verify(SECRET, token, now=1060.0)
    assert info.value.code == "token_expired"


def test_wrong_secret_is_bad_token() -> None:
    token = mint("other", "acme", ["jobs"], ttl=60)
    with pytest.raises(AuthError) as info:
        verify(SECRET, token)
    assert info.value.code == "bad_token"


def test_tampered_payload_is_bad_token() -> None:
    import base64
    import json

    token = mint(SECRET, "acme", ["jobs"], ttl=60)
    version, body, signature = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["tenant"] = "globex"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthError) as info:
        verify(SECRET, f"{version}.{forged}.{signature}")
    assert info.value.code == "bad_token"


@pytest.mark.parametrize("token", ["", "v1", "v1.a", "v2.a.b", "v1.a.b.c", "v1.!!.??", "x.y.z"])
def test_malformed_tokens_are_bad_token(token: str) -> None:
    with pytest.raises(AuthError) as info:
        verify(SECRET, token)
    assert info.value.code == "bad_token"


def test_empty_secret_and_tenant_are_refused_at_mint() -> None:
    with pytest.raises(ValueError):
        mint("", "acme", ["jobs"], ttl=60)
    with pytest.raises(ValueError):
        mint(SECRET, "", ["jobs"], ttl=60)


def test_secret_verifier_uses_current_time() -> None:
    check = secret_verifier(SECRET)
    assert check(mint(SECRET, "acme", ["jobs"], ttl=60)).tenant == "acme"
    with pytest.raises(AuthError):
        check(mint(SECRET, "acme", ["jobs"], ttl=-1))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_verifies_nor_crashes(token: str) -> None:
    with pytest.raises(AuthError):
        verify(SECRET, token)


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_is_refused(position: int, value: int) -> None:
    token = mint(SECRET, "acme", ["jobs"], ttl=600)
    position %= len(token)
    mutated = token[:position] + chr(value) + token[position + 1 :]
    if mutated == token:
        return
    try:
        grant = verify(SECRET, mutated)
    except AuthError:
        return
    # base64 padding bits can absorb a change of the last character: the grant is unchanged.
    assert grant == verify(SECRET, token)
