"""Browser tests: the real site in a Daphne subprocess, driven by Debian's Chromium.

Fixtures for any browser test:
- `live_site` — Daphne serving the site on a free 127.0.0.1 port, with its own SQLite
  file and MEDIA_ROOT, migrated; `live_site.seed_terminal()` adds a terminal with
  pictures, `live_site.query()` reads what the site stored.
- `live_server_url` — its base URL.
- `browser` — headless Chromium (Playwright's sync API); `new_page(who=None)` opens a
  page in a fresh context, anonymous or logged in as a seeded user.
- `login(page, username)` — logs a page in through the login form.
The tests skip with a reason when Chromium or Playwright is missing (`make browser`).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import live

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "a-long-browser-test-password"
USERS = ("controller", "viewer")

# Runs inside the site's environment (its settings, its database). Reads a JSON spec
# from argv and prints one JSON line back.
_SEED_USERS = r"""
import json, sys
import django
django.setup()
from django.contrib.auth import get_user_model
spec = json.loads(sys.argv[1])
User = get_user_model()
for name in spec["users"]:
    User.objects.create_user(name, password=spec["password"])
print(json.dumps({"ok": True}))
"""

_SEED_TERMINAL = r"""
import io, json, sys
import django
django.setup()
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from PIL import Image as PILImage, ImageDraw
from gallery.models import Image, Terminal

spec = json.loads(sys.argv[1])
owner = get_user_model().objects.get(username=spec["owner"])
terminal = Terminal.objects.create(
    slug=spec["slug"], name=spec["slug"].replace("-", " ").title(), owner=owner,
    is_public=spec["public"],
)
palette = [("#c2410c", "#fde68a"), ("#0f766e", "#99f6e4"), ("#6d28d9", "#ddd6fe"),
           ("#be123c", "#fecdd3"), ("#1d4ed8", "#bfdbfe"), ("#4d7c0f", "#d9f99d")]
ids = []
for number in range(1, spec["images"] + 1):
    dark, light = palette[(number - 1) % len(palette)]
    picture = PILImage.new("RGB", (320, 240), dark)
    ImageDraw.Draw(picture).ellipse((110, 70, 210, 170), fill=light)
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    image = Image(owner=owner, terminal=terminal, prompt=f"study number {number}",
                  title=f"Study {number}", provider="local", status=Image.Status.READY,
                  progress=100, width=320, height=240)
    name = f"{spec['slug']}-{number}"
    image.file.save(f"{name}.png", ContentFile(buffer.getvalue()), save=False)
    image.thumbnail.save(f"{name}-t.png", ContentFile(buffer.getvalue()), save=False)
    image.save()
    ids.append(image.pk)
if ids:
    terminal.current_image_id = ids[0]
    terminal.save(update_fields=["current_image"])
print(json.dumps({"id": terminal.pk, "slug": terminal.slug, "image_ids": ids}))
"""


@dataclass
class SeededTerminal:
    id: int
    slug: str
    image_ids: list[int]

    @property
    def path(self) -> str:
        return f"/terminals/{self.slug}/"


@dataclass
class LiveSite:
    """The site as it runs in production: its own process, database file and media."""

    root: Path
    port: int = field(default_factory=live.free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.root / "site.sqlite3"

    @property
    def log_path(self) -> Path:
        return self.root / "daphne.log"

    def __post_init__(self) -> None:
        # Built once: the secret key (and so every session) must survive a restart.
        self._env = live.sqlite_environment(self.root, PORT=str(self.port), **self.extra_env)

    def env(self) -> dict[str, str]:
        return dict(self._env)

    def run_python(self, script: str, spec: dict[str, Any]) -> Any:
        """Runs `script` with the site's settings and database; returns its JSON answer."""
        done = subprocess.run(
            [sys.executable, "-c", script, json.dumps(spec)],
            cwd=live.ROOT,
            env=self.env(),
            capture_output=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"Seeding failed:\n{done.stderr.decode(errors='replace')}")
        return json.loads(done.stdout.decode().strip().splitlines()[-1])

    def prepare(self) -> None:
        live.migrate(self.env())
        self.run_python(_SEED_USERS, {"users": list(USERS), "password": PASSWORD})

    def seed_terminal(
        self, slug: str, *, images: int = 4, owner: str = "controller", public: bool = True
    ) -> SeededTerminal:
        made = self.run_python(
            _SEED_TERMINAL, {"slug": slug, "images": images, "owner": owner, "public": public}
        )
        return SeededTerminal(id=made["id"], slug=made["slug"], image_ids=made["image_ids"])

    def start(self) -> None:
        """Starts Daphne on the site's port (the same one after a restart) and waits for
        the terminal list to answer."""
        self.process, _ = live.start_daphne(env=self.env(), log=self.log_path, port=self.port)
        listing = f"{self.url}/terminals/"
        live.wait_until(
            live.answering(listing, status=200, timeout=2),
            [self.process],
            logs=self.log_tail,
        )

    def stop(self) -> None:
        """Kills the server outright: sockets drop without close frames, as in a crash."""
        if self.process is not None:
            live.kill(self.process)
        self.process = None

    def log_tail(self, lines: int = 60) -> str:
        return live.log_tail(self.log_path, lines)

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Reads the site's database directly: what it stored, not what it says."""
        with sqlite3.connect(self.database, timeout=20) as connection:
            return connection.execute(sql, params).fetchall()


def _require_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")


@pytest.fixture(scope="module")
def live_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSite]:
    _require_chromium()
    site = LiveSite(root=tmp_path_factory.mktemp("live-site"))
    site.prepare()
    site.start()
    try:
        yield site
    finally:
        site.stop()


@pytest.fixture(scope="module")
def live_server_url(live_site: LiveSite) -> str:
    return live_site.url


@pytest.fixture(scope="module")
def playwright_sync() -> Iterator[Any]:
    _require_chromium()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright_sync: Any) -> Iterator[Any]:
    launched = playwright_sync.chromium.launch(
        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
    )
    try:
        yield launched
    finally:
        launched.close()


def login_page(page: Any, username: str, password: str = PASSWORD) -> None:
    """Logs `page` in through the site's own login form."""
    page.goto("/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/accounts/login/" not in url)


@pytest.fixture
def login() -> Callable[..., None]:
    return login_page


@pytest.fixture
def new_page(browser: Any, live_site: LiveSite) -> Iterator[Callable[..., Any]]:
    """Opens a page in its own browser context (its own cookies), logged in as `who`."""
    contexts: list[Any] = []

    def open_page(who: str | None = None, **options: Any) -> Any:
        context = browser.new_context(base_url=live_site.url, **options)
        contexts.append(context)
        page = context.new_page()
        if who is not None:
            login_page(page, who)
        return page

    yield open_page
    for context in contexts:
        context.close()
