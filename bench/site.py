"""Django-side steps of the benchmarks, run in a subprocess on a site's database:
`python -m bench.site <command> '<json arguments>'` prints one JSON line.

Rows are written with bulk inserts (a benchmark's setup is not what it measures), and
logged-in users get a session and a CSRF secret directly, as a login would leave them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "artterminal.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import (  # noqa: E402
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
)
from django.contrib.auth.hashers import UNUSABLE_PASSWORD_PREFIX  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils.crypto import get_random_string  # noqa: E402

from gallery.models import Image, Terminal, TerminalMembership  # noqa: E402

User = get_user_model()
# What set_unusable_password() stores, written in bulk: these users only have sessions.
UNUSABLE_PASSWORD = UNUSABLE_PASSWORD_PREFIX
PROMPT_WORDS = ("amber", "harbour", "fox", "violet", "mountain", "lantern", "teal", "orchard")


def _login(user: Any) -> dict[str, str]:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return {
        settings.SESSION_COOKIE_NAME: session.session_key or "",
        settings.CSRF_COOKIE_NAME: get_random_string(32),
    }


def seed_terminal(
    *, slug: str = "bench", images: int = 20, controllers: int = 0, start: str = "middle"
) -> dict[str, Any]:
    """A public terminal owned by a logged-in user, with `images` ready images and
    `controllers` more logged-in users allowed to drive it."""
    owner = User.objects.create_user(username=f"{slug}-owner", password=None)
    terminal = Terminal.objects.create(slug=slug, name=f"Bench {slug}", owner=owner)
    rows = []
    for number in range(images):
        words = [PROMPT_WORDS[(number + k) % len(PROMPT_WORDS)] for k in range(3)]
        rows.append(
            Image(
                owner=owner,
                terminal=terminal,
                prompt=f"{' '.join(words)} number {number}",
                title=f"Picture {number}",
                provider="local",
                status=Image.Status.READY,
                progress=100,
                file=f"images/bench/{number}.png",
                thumbnail=f"thumbnails/bench/{number}.png",
                width=768,
                height=768,
            )
        )
    Image.objects.bulk_create(rows, batch_size=2000)
    shown = Image.objects.filter(terminal=terminal).order_by("id")
    if images:
        terminal.current_image = shown[images // 2] if start == "middle" else shown.first()
        terminal.save(update_fields=["current_image"])
    User.objects.bulk_create(
        [
            User(username=f"{slug}-controller-{n}", password=UNUSABLE_PASSWORD)
            for n in range(controllers)
        ],
        batch_size=2000,
    )
    users = list(User.objects.filter(username__startswith=f"{slug}-controller-"))
    TerminalMembership.objects.bulk_create(
        [
            TerminalMembership(
                terminal=terminal, user=user, role=TerminalMembership.Role.CONTROLLER
            )
            for user in users
        ]
    )
    return {
        "slug": terminal.slug,
        "terminal_id": terminal.pk,
        "owner": _login(owner),
        "controllers": [_login(user) for user in users],
    }


def count_queries(*, paths: list[str]) -> dict[str, int]:
    """SQL queries each page costs an anonymous visitor, rendered by Django's test client
    against this database (the second request, so per-process caches are warm)."""
    client = Client()
    counts: dict[str, int] = {}
    for path in paths:
        client.get(path)
        with CaptureQueriesContext(connection) as queries:
            response = client.get(path)
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}")
        counts[path] = len(queries)
    return counts


def mint_body(*, slug: str) -> dict[str, Any]:
    """The body the token endpoint posts to the engine's client_secrets for `slug`."""
    from voice import clients, services

    config = clients.realtime_config()
    terminal = Terminal.objects.select_related("current_image").get(slug=slug)
    return {
        "expires_after": {"anchor": "created_at", "seconds": config.token_ttl_seconds},
        "session": services.voice_session_config(terminal=terminal, config=config),
    }


COMMANDS: dict[str, Callable[..., Any]] = {
    "seed_terminal": seed_terminal,
    "mint_body": mint_body,
    "count_queries": count_queries,
}


def main(argv: list[str]) -> None:
    command, arguments = argv[1], json.loads(argv[2]) if len(argv) > 2 else {}
    print(json.dumps(COMMANDS[command](**arguments)))


if __name__ == "__main__":
    main(sys.argv)
