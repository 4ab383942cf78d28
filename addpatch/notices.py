"""Notices the library gives while it works, for a front end to show (the library never prints).

`lock_wait` is called once when a catalog connection starts waiting for another process's
DuckDB lock; the CLI prints it on stderr at once, so a wait is never silent.
"""

from __future__ import annotations

from collections.abc import Callable


def _ignore(_: str) -> None:
    return None


lock_wait: Callable[[str], None] = _ignore


def on_lock_wait(notice: Callable[[str], None]) -> None:
    global lock_wait
    lock_wait = notice
