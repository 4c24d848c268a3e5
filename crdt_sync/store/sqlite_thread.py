"""Running a callable on an aiosqlite connection's own thread: the one bridge to its
private API.

aiosqlite runs every statement on one worker thread per connection, one ``await`` (a thread
hop) each. A body of several statements (a group commit, a batched read) is cheaper as one
hop: :func:`on_thread` hands the callable and the connection's ``sqlite3.Connection`` to that
thread and awaits its result. aiosqlite has no public way to do this; its private
``Connection._execute(fn, *args)`` (present since 0.1x, still in 0.22) is what its own methods
use, and only this module calls it (for the local store and the relay's SQLite storage).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import aiosqlite

__all__ = ["on_thread"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def on_thread(
    conn: aiosqlite.Connection,
    body: Callable[Concatenate[sqlite3.Connection, _P], _T],
    *args: _P.args,
    **kwargs: _P.kwargs,
) -> Coroutine[Any, Any, _T]:
    """Run ``body(connection, *args, **kwargs)`` on ``conn``'s thread, where ``connection`` is
    its ``sqlite3.Connection``; awaiting the coroutine gives the result (or raises its
    exception).

    To queue several at once (they run in order on the thread), wrap each in
    ``asyncio.ensure_future`` before awaiting the first."""
    raw: sqlite3.Connection = conn._conn
    coroutine: Coroutine[Any, Any, _T] = conn._execute(body, raw, *args, **kwargs)  # type: ignore[no-untyped-call]
    return coroutine
