"""Signed access tokens: what a replica may touch on the relay, and who vouches for it.

A token is ``v1.<payload>.<signature>``: ``payload`` is the base64url (unpadded) JSON object
``{"tenant": str, "collections": [str, ...], "exp": int}`` (``exp`` in Unix seconds) and
``signature`` the base64url HMAC-SHA256 of the ASCII text ``v1.<payload>`` under the relay
secret. Signatures are compared in constant time. The relay only needs :func:`verify`; apps
that issue tokens elsewhere (their own auth service) plug a :data:`Verifier` instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from crdt_sync.errors import AuthError

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

    def allows(self, collection: str) -> bool:
        """Whether the grant covers ``collection``."""
        return collection in self.collections


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
) -> str:
    """Create a token granting ``tenant``'s ``collections`` for ``ttl`` seconds.

    Args:
        secret: the relay secret (non-empty).
        tenant: tenant name (non-empty).
        collections: collection names the holder may read and write.
        ttl: lifetime in seconds from ``now``.
        now: Unix time used as the start (defaults to the current time).

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
    payload = {"tenant": tenant, "collections": names, "exp": int(start + ttl)}
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
    current = time.time() if now is None else now
    if current >= expires_at:
        raise AuthError("token_expired", "token expired")
    return Grant(tenant=tenant, collections=frozenset(collections), expires_at=float(expires_at))


def secret_verifier(secret: str | bytes) -> Callable[[str], Grant]:
    """The default :data:`Verifier`: :func:`verify` under ``secret`` at the current time."""
    key = _secret_bytes(secret)

    def check(token: str) -> Grant:
        return verify(key, token)

    return check
