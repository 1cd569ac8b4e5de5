"""Settings from the environment: production refuses to start unsafe, the deploy check
passes on a real configuration, the scaling check speaks up, and pages carry a CSP."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.test import Client

from artterminal.checks import SCALING_TAG

ROOT = Path(__file__).resolve().parent.parent
# Everything settings.py reads that could leak in from the developer's shell.
_SETTINGS_VARIABLES = (
    "DEBUG",
    "SECRET_KEY",
    "ALLOWED_HOSTS",
    "DATABASE_URL",
    "REDIS_URL",
    "WEB_CONCURRENCY",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "REALTIME_BASE_URL",
    "SECURE_SSL_REDIRECT",
)


def _run(args: list[str], **environment: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _SETTINGS_VARIABLES}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["ENV_FILE"] = ""  # a developer's .env (after make run) holds a SECRET_KEY
    env.update(environment)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def _deploy_check(**environment: str) -> subprocess.CompletedProcess[str]:
    """The issue's command: `DEBUG=false SECRET_KEY=… ALLOWED_HOSTS=art.example.com
    python manage.py check --deploy --fail-level WARNING`."""
    return _run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(60),
        ALLOWED_HOSTS="art.example.com",
        **environment,
    )


def test_the_deploy_check_passes_with_only_a_secret_key_and_a_host() -> None:
    result = _deploy_check()

    assert result.returncode == 0, result.stdout + result.stderr
    # One process on the in-memory layer is allowed, but said out loud.
    assert "artterminal.I001" in result.stdout + result.stderr


def test_the_deploy_check_fails_when_several_processes_share_no_channel_layer() -> None:
    result = _deploy_check(WEB_CONCURRENCY="4")

    assert result.returncode != 0
    assert "artterminal.W001" in result.stderr
    assert "REDIS_URL" in result.stderr


def test_the_deploy_check_passes_for_several_processes_on_redis() -> None:
    result = _deploy_check(WEB_CONCURRENCY="4", REDIS_URL="redis://127.0.0.1:6379/0")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "artterminal." not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "secret_key",
    [None, "", "too-short", "django-insecure-" + "x" * 60],
    ids=["unset", "empty", "short", "django-insecure"],
)
def test_production_refuses_to_start_without_a_real_secret_key(secret_key: str | None) -> None:
    environment = {"DEBUG": "false", "ALLOWED_HOSTS": "art.example.com"}
    if secret_key is not None:
        environment["SECRET_KEY"] = secret_key

    result = _run(["manage.py", "check"], **environment)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY must be set" in result.stderr


def test_development_starts_without_a_secret_key() -> None:
    result = _run(["manage.py", "check"], DEBUG="true")

    assert result.returncode == 0, result.stderr


class TestChannelLayerCheck:
    """Registered through the project's app config and run by `manage.py check`."""

    def test_warns_for_several_processes_on_the_in_memory_layer(self, settings: Any) -> None:
        settings.DEBUG = False
        settings.WEB_CONCURRENCY = 2

        messages = run_checks(tags=[SCALING_TAG])

        assert [m.id for m in messages] == ["artterminal.W001"]
        assert messages[0].is_serious() is False  # a warning: fails only --fail-level WARNING
        assert "WEB_CONCURRENCY is 2" in messages[0].msg

    def test_informs_for_one_process_on_the_in_memory_layer(self, settings: Any) -> None:
        settings.DEBUG = False
        settings.WEB_CONCURRENCY = 1

        assert [m.id for m in run_checks(tags=[SCALING_TAG])] == ["artterminal.I001"]

    def test_is_silent_on_the_redis_layer(self, settings: Any) -> None:
        settings.DEBUG = False
        settings.WEB_CONCURRENCY = 8
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "artterminal.layers.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]},
            }
        }

        assert run_checks(tags=[SCALING_TAG]) == []

    def test_is_silent_in_development(self, settings: Any) -> None:
        settings.DEBUG = True
        settings.WEB_CONCURRENCY = 8

        assert run_checks(tags=[SCALING_TAG]) == []


def _policy(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_pages_carry_the_content_security_policy(client: Client, path: str) -> None:
    response = client.get(path)

    assert response.status_code == 200
    policy = _policy(response["Content-Security-Policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["img-src"] == ["'self'", "data:", "blob:"]
    assert policy["media-src"] == ["'self'", "blob:"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["base-uri"] == ["'self'"]
    assert policy["form-action"] == ["'self'"]
    assert policy["connect-src"][0] == "'self'"
    assert "'unsafe-inline'" not in response["Content-Security-Policy"]
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"


_PRINT_CONNECT_SRC = (
    "import django; django.setup(); from csp.utils import build_policy; "
    "print([p for p in build_policy().split('; ') if p.startswith('connect-src')][0])"
)


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        (
            {"DEBUG": "false", "ALLOWED_HOSTS": "art.example.com,.example.org"},
            "connect-src 'self' wss://art.example.com wss://*.example.org wss://example.org",
        ),
        (
            {
                "DEBUG": "false",
                "ALLOWED_HOSTS": "art.example.com",
                "OPENAI_API_KEY": "sk-test-not-a-real-key",
            },
            "connect-src 'self' wss://art.example.com https://api.openai.com",
        ),
        (
            {
                "DEBUG": "false",
                "ALLOWED_HOSTS": "art.example.com",
                "OPENAI_API_KEY": "sk-test-not-a-real-key",
                "REALTIME_BASE_URL": "https://voice.example.net:8443/v1",
            },
            "connect-src 'self' wss://art.example.com https://voice.example.net:8443",
        ),
        (
            {"DEBUG": "true", "ALLOWED_HOSTS": "localhost"},
            "connect-src 'self' ws://localhost:* wss://localhost:*",
        ),
    ],
    ids=["engine-on-this-site", "openai", "realtime-base-url", "development"],
)
def test_connect_src_allows_the_site_websockets_and_the_realtime_upstream(
    environment: dict[str, str], expected: str
) -> None:
    result = _run(
        ["-c", _PRINT_CONNECT_SRC],
        DJANGO_SETTINGS_MODULE="artterminal.settings",
        SECRET_KEY=secrets.token_urlsafe(60),
        **environment,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_redis_url_switches_layer_cache_and_sessions_together() -> None:
    probe = (
        "import django; django.setup(); from django.conf import settings as s; "
        "print(s.CHANNEL_LAYERS['default']['BACKEND'], s.CACHES['default']['BACKEND'], "
        "s.SESSION_ENGINE, s.DATABASES['default']['ENGINE'], "
        "s.DATABASES['default']['CONN_HEALTH_CHECKS'], "
        # Pub/sub channels are shared by a server's databases: each its own names.
        "s.CHANNEL_LAYERS['default']['CONFIG']['prefix'])"
    )
    result = _run(
        ["-c", probe],
        DJANGO_SETTINGS_MODULE="artterminal.settings",
        DEBUG="true",
        REDIS_URL="redis://127.0.0.1:6379/3",
        DATABASE_URL="postgres://art@db.example.com:5432/art",
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "artterminal.layers.RedisPubSubChannelLayer",
        "django.core.cache.backends.redis.RedisCache",
        "artterminal.sessions",
        "django.db.backends.postgresql",
        "True",
        "artterminal3.",
    ]


def test_hosts_listed_with_spaces_are_each_served() -> None:
    """ "a.com, b.com" is how people write lists: before, " b.com" matched no request and
    made a broken CSP source."""
    probe = (
        "import django; django.setup(); from django.test import Client; "
        "from django.conf import settings; from csp.utils import build_policy; "
        "print(settings.ALLOWED_HOSTS, settings.CSRF_TRUSTED_ORIGINS); "
        "print(Client().get('/accounts/login/', HTTP_HOST='www.example.com', "
        "HTTP_X_FORWARDED_PROTO='https').status_code); "
        "print([p for p in build_policy().split('; ') if p.startswith('connect-src')][0])"
    )
    result = _run(
        ["-c", probe],
        DJANGO_SETTINGS_MODULE="artterminal.settings",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(60),
        ALLOWED_HOSTS="art.example.com, www.example.com,",
        CSRF_TRUSTED_ORIGINS=" https://art.example.com , https://www.example.com",
    )
    assert result.returncode == 0, result.stderr
    listed, status, connect_src = result.stdout.strip().splitlines()
    assert listed == (
        # and the engine's loopback name (ENGINE_URL)
        "['art.example.com', 'www.example.com', '127.0.0.1'] "
        "['https://art.example.com', 'https://www.example.com']"
    )
    assert status == "200"
    assert "wss://www.example.com" in connect_src.split()
    assert "wss://" not in connect_src.split()


def test_in_production_the_site_reaches_its_own_engine_over_loopback() -> None:
    """The deploy guide's settings with the built-in engine: the site's server side
    mints keys at ENGINE_URL straight from Daphne, with the loopback host and no
    X-Forwarded-Proto (voice.clients does not follow redirects). Before, that was a 400
    (DisallowedHost) or, with the host allowed, a 301 to https: no call could start."""
    mint = (
        "import django; django.setup(); from django.test import Client; "
        "from urllib.parse import urlsplit; from django.conf import settings as s; "
        "url = urlsplit(s.ENGINE_URL); "
        "site = Client(raise_request_exception=False); "
        "r = site.post(url.path + '/realtime/client_secrets', {'session': {'type': 'realtime'}}, "
        "content_type='application/json', HTTP_HOST=url.netloc, "
        "HTTP_AUTHORIZATION='Bearer ' + s.ENGINE_API_KEY); "
        "print(r.status_code, sorted(r.json())); "
        # Everything else still goes to https, and only by the site's own names.
        "print(site.get('/terminals/', HTTP_HOST='art.example.com').status_code); "
        "print(site.get('/terminals/', HTTP_HOST='evil.example.com').status_code)"
    )
    result = _run(
        ["-c", mint],
        DJANGO_SETTINGS_MODULE="artterminal.settings",
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(60),
        ALLOWED_HOSTS="art.example.com",
        CSRF_TRUSTED_ORIGINS="https://art.example.com",
        ENGINE_API_KEY="sk-engine-" + secrets.token_urlsafe(32),
        ENGINE_URL="http://127.0.0.1:8001/engine/v1",
    )
    assert result.returncode == 0, result.stderr[-600:]
    minted, public, foreign = result.stdout.strip().splitlines()
    assert minted == "200 ['expires_at', 'session', 'value']"
    assert public == "301"
    assert foreign == "400"


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "eight thousand"),
        ("IMAGES_PER_HOUR", "1.5"),
        ("SIGNUPS_PER_ADDRESS_PER_HOUR", "ten"),
    ],
)
def test_a_malformed_setting_is_named_when_the_site_refuses_to_start(
    variable: str, value: str
) -> None:
    result = _run(
        ["-c", "import django; django.setup()"],
        DJANGO_SETTINGS_MODULE="artterminal.settings",
        DEBUG="true",
        **{variable: value},
    )
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"django.core.exceptions.ImproperlyConfigured: {variable}: "), last
    assert repr(value) in last


def test_every_variable_the_settings_read_is_documented_in_env_example() -> None:
    source = (ROOT / "artterminal" / "settings.py").read_text()
    read = set(re.findall(r'(?:env\.\w+|_listed)\(\s*"([A-Z][A-Z0-9_]*)"', source))
    documented = set(re.findall(r"^([A-Z][A-Z0-9_]*)=", (ROOT / ".env.example").read_text(), re.M))

    assert {"SIGNUPS_PER_ADDRESS_PER_HOUR", "SIGNUP_ATTEMPTS_PER_ADDRESS_PER_HOUR"} <= read
    assert read - documented == set()


def test_the_documented_deployment_passes_on_the_address_nginx_saw() -> None:
    """The sign-up limit counts REMOTE_ADDR: behind nginx, Daphne must take it from
    X-Forwarded-For (--proxy-headers), and nginx must overwrite that header, since
    Daphne reads its first address and a client can send one of its own."""
    deploy = (ROOT / "docs" / "deploy.md").read_text().replace("\\\n", " ")
    daphnes = re.findall(r"daphne --bind 127\.0\.0\.1 .*", deploy)
    forwarded = re.findall(r"proxy_set_header X-Forwarded-For (\S+);", deploy)

    assert len(daphnes) == 4  # the systemd unit and the Procfile's three
    assert all("--proxy-headers" in command for command in daphnes), daphnes
    assert forwarded and set(forwarded) == {"$remote_addr"}, forwarded


def test_env_file_names_the_file_read_for_unset_variables(tmp_path: Path) -> None:
    env_file = tmp_path / "site.env"
    env_file.write_text(f"SECRET_KEY={secrets.token_urlsafe(60)}\nALLOWED_HOSTS=art.example.com\n")

    named = _run(["manage.py", "check"], DEBUG="false", ENV_FILE=str(env_file))
    none = _run(["manage.py", "check"], DEBUG="false", ENV_FILE="")

    assert named.returncode == 0, named.stderr
    # The tests' own processes run so: a developer's .env cannot set what they check.
    assert none.returncode != 0
    assert "SECRET_KEY must be set" in none.stderr
