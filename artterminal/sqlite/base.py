"""SQLite whose write transactions queue in their process before asking SQLite.

SQLite's busy handler is unfair: a waiting writer sleeps in growing steps (up to 100 ms)
while a newcomer polls after 1 ms, so under steady load the oldest waiter keeps losing and
can wait past any busy timeout ("database is locked"). Every transaction here is
IMMEDIATE, hence a writer; each first takes a process-wide lock, whose waiters block in
the kernel and take turns, so only one transaction per process contends in SQLite.
Django's private transaction hooks are the only place to do this; the stubs omit them.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db.backends.sqlite3 import base
from django.db.utils import OperationalError

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _write_lock(name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(name, threading.Lock())


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: threading.Lock | None = None

    def _start_transaction_under_autocommit(self) -> None:
        if self._held is None and not self.is_in_memory_db():
            lock = _write_lock(str(self.settings_dict["NAME"]))
            # The same patience SQLite's own busy timeout gives a writer.
            timeout = float(self.settings_dict["OPTIONS"].get("timeout", 5))
            if not lock.acquire(timeout=timeout):
                raise OperationalError("database is locked (this process's writers queued)")
            self._held = lock
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]
        except BaseException:
            self._release()
            raise

    def _release(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            held.release()

    def _commit(self) -> None:
        try:
            super()._commit()  # type: ignore[misc]
        finally:
            self._release()

    def _rollback(self) -> None:
        try:
            super()._rollback()  # type: ignore[misc]
        finally:
            self._release()

    def _close(self) -> None:
        try:
            super()._close()  # type: ignore[misc]
        finally:
            self._release()
