"""A live site for the voice browser tests: Daphne in a subprocess serving the site and its
built-in engine, a database file both it and the tests read, and Chromium with a recorded
utterance as its microphone.

The site runs as in production: its own process, its own SQLite file, no OpenAI key, so
the browser talks to the built-in engine exactly as it would talk to OpenAI.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WAV_RATE = 16_000
# The fake microphone starts at getUserMedia, before the call is up: lead with silence
# long enough for the call to connect, and trail with enough for VAD to see the end.
LEADING_SILENCE_S = 4.0
TRAILING_SILENCE_S = 2.0
PASSWORD = "a-long-test-password"

# Runs inside the site's environment (its settings, its database): makes the people,
# terminals and pictures the tests use, and a logged-in session for each person.
_SEED_SCRIPT = r"""
import io, json, sys
import django
django.setup()
from django.contrib.auth import get_user_model, BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.core.files.base import ContentFile
from PIL import Image as PILImage
from gallery.models import Image, Terminal, TerminalMembership

spec = json.loads(sys.argv[1])
User = get_user_model()
owner = User.objects.create_user("voice-owner", password=spec["password"])
staff = User.objects.create_superuser("voice-staff", password=spec["password"])
colours = ["crimson", "teal", "gold", "violet"]
terminals = {}
for slug in spec["terminals"]:
    terminal = Terminal.objects.create(slug=slug, name=slug.title(), owner=owner, is_public=True)
    images = []
    for number, colour in enumerate(colours, start=1):
        buffer = io.BytesIO()
        PILImage.new("RGB", (96, 64), colour).save(buffer, "PNG")
        image = Image(owner=owner, terminal=terminal, prompt=f"a {colour} field number {number}",
                      title=f"{colour.title()} field", provider="local", status=Image.Status.READY,
                      progress=100, width=96, height=64)
        image.file.save(f"{slug}-{number}.png", ContentFile(buffer.getvalue()), save=False)
        image.thumbnail.save(f"{slug}-{number}-t.png", ContentFile(buffer.getvalue()), save=False)
        image.save()
        images.append(image)
    terminal.current_image = images[0]
    terminal.save(update_fields=["current_image"])
    terminals[slug] = terminal.pk

def session_for(user):
    store = SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return store.session_key

sessions = {"owner": session_for(owner), "staff": session_for(staff)}
print(json.dumps({"terminals": terminals, **sessions}))
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveSite:
    """The site in a Daphne subprocess; `restart()` kills it and starts it on the same port."""

    root: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    sessions: dict[str, str] = field(default_factory=dict)
    terminals: dict[str, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def database(self) -> Path:
        return self.root / "site.sqlite3"

    @property
    def log_path(self) -> Path:
        return self.root / "daphne.log"

    def env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "PYTEST", "DATABASE_URL"))
        }
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "artterminal.settings",
                "DEBUG": "true",
                "SECRET_KEY": secrets.token_urlsafe(50),
                "DATABASE_URL": f"sqlite:///{self.database}",
                "MEDIA_ROOT": str(self.root / "media"),
                "PORT": str(self.port),
                # Explicitly empty so a developer's .env cannot send the tests to OpenAI.
                "OPENAI_API_KEY": "",
                "REALTIME_BASE_URL": "",
                "REDIS_URL": "",
                "ENGINE_API_KEY": "sk-engine-" + secrets.token_urlsafe(24),
                "ENGINE_URL": f"http://127.0.0.1:{self.port}/engine/v1",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=REPO_ROOT,
            env=self._env,
            capture_output=True,
            timeout=180,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            tail = "\n".join(output.splitlines()[-30:])
            raise RuntimeError(f"{args[:2]} failed:\n{tail}")
        return done.stdout.decode()

    def prepare(self, terminals: list[str]) -> None:
        self._env = self.env()
        self._manage("manage.py", "migrate", "--noinput", "-v", "0")
        spec = json.dumps({"terminals": terminals, "password": PASSWORD})
        result = json.loads(self._manage("-c", _SEED_SCRIPT, spec).strip().splitlines()[-1])
        self.terminals = result["terminals"]
        self.sessions = {"owner": result["owner"], "staff": result["staff"]}

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "artterminal.asgi:application",
            ],
            cwd=REPO_ROOT,
            env=self._env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Daphne exited at start:\n{self.log_tail()}")
            try:
                # The URL is always http://127.0.0.1:<port>/, built above.
                with urllib.request.urlopen(f"{self.url}/terminals/", timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.25)
        raise RuntimeError(f"Daphne did not answer within 60 s:\n{self.log_tail()}")

    def kill(self) -> None:
        """A crash, not a shutdown: no close frames, no hang-ups, the peers just vanish."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Reads the site's database directly: what the site stored, not what it says."""
        with sqlite3.connect(self.database, timeout=20) as connection:
            return connection.execute(sql, params).fetchall()


def make_utterance(path: Path, text: str) -> Path:
    """Speaks `text` with the project's own TTS into a 16 kHz mono 16-bit WAV, padded with
    silence, for Chromium's fake microphone."""
    from voice.engine.tts import Speaker

    pcm, rate = Speaker().synthesize(text)
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    duration = len(samples) / rate
    target = np.arange(0, duration, 1 / WAV_RATE)
    resampled = np.interp(target, np.arange(len(samples)) / rate, samples)
    lead = np.zeros(int(LEADING_SILENCE_S * WAV_RATE))
    tail = np.zeros(int(TRAILING_SILENCE_S * WAV_RATE))
    audio = np.concatenate([lead, resampled, tail])
    write_wav(path, audio)
    return path


def make_silence(path: Path, seconds: float = 120.0) -> Path:
    write_wav(path, np.zeros(int(seconds * WAV_RATE)))
    return path


def write_wav(path: Path, audio: np.ndarray) -> None:
    clipped = np.clip(np.round(audio), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(WAV_RATE)
        out.writeframes(clipped.tobytes())


def chromium_args(*, wav: Path | None, fake_ui: bool = True) -> list[str]:
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--use-fake-device-for-media-stream",
    ]
    if fake_ui:
        args.append("--use-fake-ui-for-media-stream")
    if wav is not None:
        args.append(f"--use-file-for-fake-audio-capture={wav.resolve()}%noloop")
    return args


@pytest.fixture(scope="module")
def voice_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveSite]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (make browser installs Debian's chromium)")
    site = LiveSite(root=tmp_path_factory.mktemp("voice-site"))
    site.prepare(["spoken", "typed", "denied", "restart"])
    site.start()
    try:
        yield site
    finally:
        site.kill()


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def utterance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("audio")
    return make_utterance(folder / "next-picture.wav", "show the next picture")


@pytest.fixture(scope="module")
def silence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_silence(tmp_path_factory.mktemp("audio") / "silence.wav")


@pytest.fixture
def launch_chromium(playwright_driver: Any) -> Iterator[Callable[..., Any]]:
    """Launches Chromium with a given WAV as its microphone; closed after the test."""
    browsers: list[Any] = []

    def launch(*, wav: Path | None, fake_ui: bool = True) -> Any:
        browser = playwright_driver.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=chromium_args(wav=wav, fake_ui=fake_ui)
        )
        browsers.append(browser)
        return browser

    yield launch
    for browser in browsers:
        browser.close()


def logged_in_context(browser: Any, site: LiveSite, who: str = "owner", **options: Any) -> Any:
    """A browser context holding `who`'s session cookie, with the microphone allowed."""
    context = browser.new_context(base_url=site.url, **options)
    context.add_cookies(
        [{"name": "sessionid", "value": site.sessions[who], "url": site.url, "httpOnly": True}]
    )
    context.grant_permissions(["microphone"], origin=site.url)
    return context
