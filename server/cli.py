"""``crdt-sync`` command line: ``serve`` runs the relay, ``token`` mints a development token.

``main(argv) -> int`` is the console-script entry (also ``python -m crdt_sync.server``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import sys
from pathlib import Path

from crdt_sync.errors import InvalidQuery
from crdt_sync.protocol import DEFAULT_MAX_FRAME, DEFAULT_MAX_ITEMS, DEFAULT_RATE
from crdt_sync.query import And, Claim, Filter, from_wire
from crdt_sync.query import field as query_field

from . import tokens
from .config import DEFAULT_TOMBSTONE_TTL
from .relay import RelayConfig, serve_until_signalled
from .relay_clock import TEST_NOW_ENV, relay_clock
from .storage import DEFAULT_FORGET_ORIGINS_AFTER, DEFAULT_STATE_CACHE_BYTES
from .validation import load_object

DEFAULT_DATA = "./relay-data"
SECRET_ENV = "CRDT_SYNC_SECRET"
SECRET_FILENAME = "secret"


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _tenant_seconds(text: str) -> tuple[str, float | None]:
    tenant, sep, seconds = text.partition("=")
    if not sep or not tenant:
        raise argparse.ArgumentTypeError(f"expected TENANT=SECONDS, got {text}")
    value = _non_negative_float(seconds)
    return tenant, value or None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crdt-sync", description="crdt-sync relay server and tools."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the relay",
        description="Run the crdt-sync relay (websocket endpoint, /healthz and /metrics on the "
        "same port). Prints 'crdt-sync relay listening on ws://HOST:PORT' once ready.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default %(default)s)"
    )
    serve.add_argument(
        "--port", type=int, default=8765, help="TCP port; 0 picks a free one (default %(default)s)"
    )
    serve.add_argument(
        "--data",
        default=DEFAULT_DATA,
        metavar="DIR",
        help="data directory holding the SQLite database (WAL) (default %(default)s)",
    )
    serve.add_argument(
        "--secret",
        help=f"token signing secret (default: ${SECRET_ENV}; else, for development only, a "
        f"secret generated once and kept in DIR/{SECRET_FILENAME}, with a warning)",
    )
    serve.add_argument(
        "--durable",
        action="store_true",
        help="commit with synchronous=FULL: acknowledged updates survive power loss, not only "
        "a killed process (group commit keeps throughput)",
    )
    serve.add_argument(
        "--early-fanout",
        action="store_true",
        help="send accepted updates to the other subscribers before their commit (lower "
        "latency; acks still wait for the commit). Off by default: if the relay dies before "
        "the commit and the sender never comes back, subscribers keep an update the relay "
        "lost (docs/relay.md)",
    )
    serve.add_argument(
        "--max-frame-bytes",
        type=_positive_int,
        default=DEFAULT_MAX_FRAME,
        metavar="N",
        help="largest frame a client may send; bigger ones get error too_big and a close "
        "(default %(default)s)",
    )
    serve.add_argument(
        "--max-items",
        type=_positive_int,
        default=DEFAULT_MAX_ITEMS,
        metavar="N",
        help="most items (records) per push/sv frame; more get error too_many_items "
        "(default %(default)s)",
    )
    serve.add_argument(
        "--rate-limit",
        type=_non_negative_float,
        default=DEFAULT_RATE,
        metavar="MSGS_PER_S",
        help="messages per second per connection, Yjs and Hocuspocus ones included (token "
        "bucket, burst = 2 s worth); excess gets error rate_limited (Yjs: close 1008); 0 "
        "disables (default %(default)s)",
    )
    serve.add_argument(
        "--state-cache-mb",
        type=_non_negative_float,
        default=DEFAULT_STATE_CACHE_BYTES / 2**20,
        metavar="MB",
        help="memory for merged record states kept to answer catch-ups without reading the "
        "database (least recently used out first); 0 disables (default %(default)g)",
    )
    serve.add_argument(
        "--forget-origins-after",
        type=_non_negative_int,
        default=DEFAULT_FORGET_ORIGINS_AFTER,
        metavar="N",
        help="changes of a tenant after which the relay forgets which replica made a change "
        "(keeps its change index about one row per record; a replica offline for longer gets "
        "its own older changes in its catch-up too); 0 never (default %(default)s)",
    )
    serve.add_argument(
        "--tombstone-ttl",
        type=_non_negative_float,
        default=DEFAULT_TOMBSTONE_TTL / 86400,
        metavar="DAYS",
        help="days a deleted record's tombstone is kept before the relay purges the record "
        '(its rows go; replicas offline for longer still converge: docs/relay.md, "Deletion '
        'and purge"); fractions allowed; 0 never purges (default %(default)g)',
    )
    serve.add_argument(
        "--cache-max-age",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="the longest a replica may keep its offline cache after its last completed sync, "
        "for every tenant (sent to replicas in welcome; they warn ahead, then clear what is "
        "synced, never unsynced changes); 0: no expiry (default %(default)g)",
    )
    serve.add_argument(
        "--tenant-cache-max-age",
        type=_tenant_seconds,
        action="append",
        default=[],
        metavar="TENANT=SECONDS",
        help="--cache-max-age for one tenant (0: no expiry for it); repeatable",
    )
    serve.add_argument(
        "--verifier",
        metavar="MODULE:FUNCTION",
        help="custom token verifier: FUNCTION(token) -> crdt_sync.server.tokens.Grant (or an "
        "awaitable of one), raising crdt_sync.errors.AuthError to refuse; replaces the secret",
    )
    serve.add_argument(
        "--validator",
        metavar="MODULE:FUNCTION",
        help="validation hook: FUNCTION(collection, record_id, update, current_state, grant) "
        "raising crdt_sync.server.UpdateRejected(reason) to reject a pushed update",
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default %(default)s)",
    )

    token = commands.add_parser(
        "token",
        help="print a signed token",
        description="Print a token granting a tenant's collections (development, tests, scripts).",
    )
    token.add_argument("--tenant", required=True, help="tenant the token belongs to")
    token.add_argument(
        "--collections", required=True, help="comma-separated collections, e.g. jobs,contacts"
    )
    token.add_argument(
        "--secret",
        help=f"signing secret (default: ${SECRET_ENV}, else the one kept in DIR/{SECRET_FILENAME})",
    )
    token.add_argument(
        "--data", default=DEFAULT_DATA, metavar="DIR", help="data directory (default %(default)s)"
    )
    token.add_argument(
        "--ttl", type=float, default=3600.0, help="lifetime in seconds (default %(default)s)"
    )
    token.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="COLLECTION=JSON",
        help="record-level access: the holder reads and writes only the records of COLLECTION "
        'matching JSON, a {"field": value} object (a value {"claim": NAME} takes the '
        "token's claim NAME) or a filter's wire form, e.g. "
        'jobs=\'{"assigned_to": {"claim": "sub"}}\' (repeatable)',
    )
    token.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a claim the --where filters use, e.g. sub=amy (repeatable)",
    )
    return parser


def parse_where_option(text: str) -> tuple[str, Filter]:
    """``COLLECTION=JSON`` of ``crdt-sync token --where`` as ``(collection, filter)``.

    Raises:
        ValueError: not ``COLLECTION=JSON``, or JSON that is not a filter.
    """
    collection, sep, body = text.partition("=")
    if not sep or not collection:
        raise ValueError(f"--where wants COLLECTION=JSON, got {text!r}")
    try:
        data = json.loads(body)
        if isinstance(data, dict):
            parts: list[Filter] = []
            for name, value in data.items():
                if isinstance(value, dict) and set(value) == {"claim"}:
                    value = Claim(value["claim"])
                ref = query_field(name)
                parts.append(ref.is_in(value) if isinstance(value, list) else ref.eq(value))
            if not parts:
                raise ValueError(f"--where {collection}: an empty object filters nothing")
            return collection, parts[0] if len(parts) == 1 else And(tuple(parts))
        return collection, from_wire(data)
    except (json.JSONDecodeError, InvalidQuery) as exc:
        raise ValueError(f"--where {collection}: {exc}") from None


def resolve_secret(explicit: str | None, data_dir: Path, *, create: bool) -> str | None:
    """The secret to sign with: ``--secret``, else ``$CRDT_SYNC_SECRET``, else the data dir's.

    With ``create``, a missing data-dir secret is generated (``secrets.token_urlsafe``) and
    written with mode 0600, and a warning is printed: that is for development only.
    """
    if explicit:
        return explicit
    from_env = os.environ.get(SECRET_ENV)
    if from_env:
        return from_env
    path = data_dir / SECRET_FILENAME
    if path.exists():
        stored = path.read_text().strip()
        if stored:
            return stored
    if not create:
        return None
    data_dir.mkdir(parents=True, exist_ok=True)
    generated = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(generated + "\n")
    return generated


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    asyncio.run(serve_until_signalled(relay_config(args)))
    return 0


def relay_config(args: argparse.Namespace) -> RelayConfig:
    """The :class:`RelayConfig` of parsed ``serve`` arguments (resolves the secret: a
    development secret is created in the data directory when none is given)."""
    data_dir = Path(args.data)
    if args.verifier:
        verifier: tokens.Verifier = load_object(args.verifier)
    else:
        had_secret = bool(args.secret or os.environ.get(SECRET_ENV))
        secret = resolve_secret(args.secret, data_dir, create=True)
        assert secret is not None
        if not had_secret:
            print(
                f"crdt-sync: WARNING: no --secret or ${SECRET_ENV}; using the development "
                f"secret kept in {data_dir / SECRET_FILENAME} (do not use in production)",
                file=sys.stderr,
                flush=True,
            )
        verifier = tokens.secret_verifier(secret)
    validator = load_object(args.validator) if args.validator else None
    return RelayConfig(
        host=args.host,
        port=args.port,
        data_dir=data_dir,
        verifier=verifier,
        validator=validator,
        durable=args.durable,
        early_fanout=args.early_fanout,
        max_frame=args.max_frame_bytes,
        max_items=args.max_items,
        rate_limit=args.rate_limit,
        state_cache_bytes=int(args.state_cache_mb * 2**20),
        forget_origins_after=args.forget_origins_after,
        tombstone_ttl=args.tombstone_ttl * 86400,
        cache_max_age=args.cache_max_age or None,
        tenant_cache_max_age=dict(args.tenant_cache_max_age),
        clock=relay_clock(os.environ.get(TEST_NOW_ENV)),
    )


def _token(args: argparse.Namespace) -> int:
    secret = resolve_secret(args.secret, Path(args.data), create=False)
    if secret is None:
        print(
            f"crdt-sync token: no secret (give --secret, set ${SECRET_ENV}, or run "
            f"`crdt-sync serve --data {args.data}` once to create a development secret)",
            file=sys.stderr,
        )
        return 2
    collections = [name.strip() for name in args.collections.split(",") if name.strip()]
    try:
        where = dict(parse_where_option(text) for text in args.where)
        claims = {}
        for text in args.claim:
            name, sep, value = text.partition("=")
            if not sep or not name:
                raise ValueError(f"--claim wants NAME=VALUE, got {text!r}")
            claims[name] = value
        token = tokens.mint(secret, args.tenant, collections, args.ttl, where=where, claims=claims)
    except ValueError as exc:
        print(f"crdt-sync token: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``crdt-sync`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _token(args)
