"""Signed access tokens: what a replica may touch on the relay, and who vouches for it.

A token is ``v1.<payload>.<signature>``: ``payload`` is the base64url (unpadded) JSON object
``{"tenant": str, "collections": [str, ...], "exp": int}`` (``exp`` in Unix seconds) and
``signature`` the base64url HMAC-SHA256 of the ASCII text ``v1.<payload>`` under the relay
secret. Two optional keys restrict the grant to records (record-level access):
``"where": {collection: filter}`` (a filter's wire form, :func:`crdt_sync.query.to_wire`)
and ``"claims": {name: value}``, the values its ``{"claim": name}`` operands take (e.g.
``{"sub": "amy"}`` for ``assigned_to = <the token's user>``). Signatures are compared in
constant time. The relay only needs :func:`verify`; apps that issue tokens elsewhere (their own
auth service) plug a :data:`Verifier` instead, returning a :class:`Grant` with ``scopes`` and
``claims`` for the same effect.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crdt_sync.errors import AuthError, InvalidQuery
from crdt_sync.query import Filter, Or, from_wire, resolve, to_wire

TOKEN_VERSION = "v1"


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified token allows.

    Attributes:
        tenant: the tenant whose records the replica reads and writes; never another's.
        collections: the collections of that tenant the replica may read and write.
        expires_at: Unix time (seconds) after which the token is refused.
    """

    tenant: str
    collections: frozenset[str]
    expires_at: float
    #: Per collection, the filter a record must match to be read or written (record-level
    #: access); a collection without one is granted whole.
    scopes: Mapping[str, Filter] = field(default_factory=dict)
    #: The values of the filters' ``Claim`` operands (e.g. ``{"sub": "amy"}``).
    claims: Mapping[str, Any] = field(default_factory=dict)

    def allows(self, collection: str) -> bool:
        """Whether the grant covers ``collection``."""
        return collection in self.collections

    def scope(self, collection: str) -> Filter | None:
        """The record filter of ``collection``, its claims bound (windows stay), or None.

        If the filter needs a claim the grant lacks, it matches no record (fails closed)."""
        where = self.scopes.get(collection)
        if where is None:
            return None
        try:
            return _bind_claims(where, self.claims)
        except InvalidQuery:  # a claim the filter needs is missing: no record is granted
            return Or(())


def _bind_claims(where: Filter, claims: Mapping[str, Any]) -> Filter:
    # resolve() binds claims and turns windows into ranges; a grant's windows (if any) are
    # resolved again at each use, so only the claims are bound here.
    from crdt_sync.query import And, Or, Window

    if isinstance(where, Window):
        return where
    if isinstance(where, And | Or):
        return type(where)(tuple(_bind_claims(p, claims) for p in where.parts))
    return resolve(where, claims=claims)


Verifier = Callable[[str], "Grant | Awaitable[Grant]"]
"""A token check: ``verifier(token) -> Grant`` (or an awaitable of one).

It raises :class:`crdt_sync.errors.AuthError` with code ``bad_token`` or ``token_expired``
to refuse; any other exception is treated by the relay as ``bad_token`` and logged.
"""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, signed_part: str) -> bytes:
    return hmac.new(secret, signed_part.encode("ascii"), hashlib.sha256).digest()


def _secret_bytes(secret: str | bytes) -> bytes:
    key = secret.encode("utf-8") if isinstance(secret, str) else secret
    if not key:
        raise ValueError("the token secret must not be empty")
    return key


def mint(
    secret: str | bytes,
    tenant: str,
    collections: Iterable[str],
    ttl: float,
    *,
    now: float | None = None,
    where: Mapping[str, Filter] | None = None,
    claims: Mapping[str, Any] | None = None,
) -> str:
    """Create a token granting ``tenant``'s ``collections`` for ``ttl`` seconds.

    Args:
        secret: the relay secret (non-empty).
        tenant: tenant name (non-empty).
        collections: collection names the holder may read and write.
        ttl: lifetime in seconds from ``now``.
        now: Unix time used as the start (defaults to the current time).
        where: per collection, the filter a record must match to be read or written.
        claims: the values of the filters' ``Claim`` operands (JSON scalars).

    Returns:
        The token text.

    Raises:
        ValueError: empty secret or tenant, or an empty collection name.
    """
    if not tenant:
        raise ValueError("tenant must not be empty")
    names = sorted(set(collections))
    if any(not name for name in names):
        raise ValueError("collection names must not be empty")
    start = time.time() if now is None else now
    payload: dict[str, Any] = {"tenant": tenant, "collections": names, "exp": int(start + ttl)}
    if where:
        outside = sorted(set(where) - set(names))
        if outside:
            raise ValueError(f"record filters on collections the token does not grant: {outside}")
        payload["where"] = {c: to_wire(f) for c, f in sorted(where.items())}
    if claims:
        payload["claims"] = dict(claims)
    body = _b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    signed_part = f"{TOKEN_VERSION}.{body}"
    return f"{signed_part}.{_b64encode(_sign(_secret_bytes(secret), signed_part))}"


def verify(secret: str | bytes, token: str, now: float | None = None) -> Grant:
    """Check ``token``'s signature and expiry and return its grant.

    Args:
        secret: the relay secret the token must be signed with.
        token: the token text sent by the replica.
        now: Unix time to judge expiry (defaults to the current time).

    Returns:
        The :class:`Grant` the token carries.

    Raises:
        AuthError: ``bad_token`` (malformed, unknown version, bad signature, bad payload)
            or ``token_expired`` (validly signed, past its expiry).
    """
    key = _secret_bytes(secret)
    if not isinstance(token, str) or not token.isascii():
        raise AuthError("bad_token", "token is not ASCII text")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_VERSION:
        raise AuthError("bad_token", "malformed token")
    signed_part = f"{parts[0]}.{parts[1]}"
    try:
        signature = _b64decode(parts[2])
    except (binascii.Error, ValueError):
        raise AuthError("bad_token", "malformed signature") from None
    if not hmac.compare_digest(signature, _sign(key, signed_part)):
        raise AuthError("bad_token", "bad signature")
    try:
        payload = json.loads(_b64decode(parts[1]))
        tenant = payload["tenant"]
        collections = payload["collections"]
        expires_at = payload["exp"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise AuthError("bad_token", "malformed payload") from None
    if (
        not isinstance(tenant, str)
        or not tenant
        or not isinstance(collections, list)
        or not all(isinstance(name, str) and name for name in collections)
        or not isinstance(expires_at, int | float)
        or isinstance(expires_at, bool)
    ):
        raise AuthError("bad_token", "malformed payload")
    scopes, claims = _record_access(payload)
    current = time.time() if now is None else now
    if current >= expires_at:
        raise AuthError("token_expired", "token expired")
    return Grant(
        tenant=tenant,
        collections=frozenset(collections),
        expires_at=float(expires_at),
        scopes=scopes,
        claims=claims,
    )


def _record_access(payload: dict[str, Any]) -> tuple[dict[str, Filter], dict[str, Any]]:
    """The optional ``where`` and ``claims`` of a token's payload.

    Raises:
        AuthError: ``bad_token`` if they are malformed.
    """
    where = payload.get("where", {})
    claims = payload.get("claims", {})
    if not isinstance(where, dict) or not isinstance(claims, dict):
        raise AuthError("bad_token", "malformed payload: where and claims must be objects")
    scopes: dict[str, Filter] = {}
    try:
        for collection, data in where.items():
            scopes[collection] = from_wire(data)
    except InvalidQuery as exc:
        raise AuthError("bad_token", f"malformed record filter: {exc}") from None
    if not all(isinstance(v, str | int | float | bool) for v in claims.values()):
        raise AuthError("bad_token", "malformed payload: claims must be scalars")
    return scopes, dict(claims)


def secret_verifier(secret: str | bytes) -> Callable[[str], Grant]:
    """The default :data:`Verifier`: :func:`verify` under ``secret`` at the current time."""
    key = _secret_bytes(secret)

    def check(token: str) -> Grant:
        return verify(key, token)

    return check
