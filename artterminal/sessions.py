"""Sessions in the shared cache, written through to the database (Django's cached_db),
that keep working while the cache's Redis is down or restarting.

Django's cached_db already reads the database when the cache cannot answer, but then
writes the session back to the cache unguarded: with Redis down, every request and every
websocket handshake of a logged-in browser fails. Here that refill is skipped (with a
warning) and the database answers alone. Saving and deleting still need the cache, so a
session changed or ended during an outage can never be left stale in it.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.sessions.backends import cached_db
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore

from artterminal.layers import LAYER_ERRORS, layer_failure

logger = logging.getLogger(__name__)


class SessionStore(cached_db.SessionStore):
    def load(self) -> dict[str, Any]:
        try:
            return dict(super().load())
        except LAYER_ERRORS as error:
            logger.warning(
                "Session cache unavailable (%s); reading the database", layer_failure(error)
            )
            return dict(DatabaseSessionStore.load(self))

    async def aload(self) -> dict[str, Any]:
        try:
            return dict(await super().aload())
        except LAYER_ERRORS as error:
            logger.warning(
                "Session cache unavailable (%s); reading the database", layer_failure(error)
            )
            return dict(await DatabaseSessionStore.aload(self))
