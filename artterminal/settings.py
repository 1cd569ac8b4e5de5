"""Art Terminal settings: every value comes from the environment, read here and only here.

`.env.example` documents each variable. With no environment at all the site runs on
SQLite and the in-memory channel layer; DATABASE_URL and REDIS_URL switch the same code
to PostgreSQL and Redis.
"""

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


class _Env(environ.Env):
    """django-environ, naming the variable when its value is not what it should be:
    "PORT=abc" stops the site with "PORT: invalid literal for int()…", not a bare
    ValueError from somewhere in the settings."""

    def get_value(
        self,
        var: str,
        cast: Any = None,
        default: Any = environ.Env.NOTSET,
        parse_default: bool = False,
    ) -> Any:
        try:
            return super().get_value(var, cast=cast, default=default, parse_default=parse_default)
        except ValueError as error:
            raise ImproperlyConfigured(f"{var}: {error}") from None


env = _Env()
# A developer's .env (written by `make run`); real deployments set the environment.
# ENV_FILE names another file, or none when empty: the tests' and benchmarks' own
# processes, which a developer's .env must not change.
_env_file = os.environ.get("ENV_FILE", str(BASE_DIR / ".env"))
if _env_file:
    env.read_env(_env_file, overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

_INSECURE_KEY = "django-insecure-development-only-key-never-use-in-production"
SECRET_KEY = env.str("SECRET_KEY", default=_INSECURE_KEY if DEBUG else "")
if not DEBUG and (len(SECRET_KEY) < 50 or SECRET_KEY.startswith("django-insecure")):
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a random value of at least 50 characters when DEBUG is off."
    )


def _listed(name: str, default: list[str]) -> list[str]:
    # "a.com, b.com" is how people write lists; django-environ keeps the space, which
    # made " b.com" a host no request has (and a broken CSP source).
    return [item.strip() for item in env.list(name, default=default) if item.strip()]


ALLOWED_HOSTS = _listed("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = _listed("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "django_tasks",
    "django_tasks_db",
    "csp",
    "artterminal",
    "gallery",
    "voice",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "artterminal.urls"
ASGI_APPLICATION = "artterminal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the single writer; IMMEDIATE takes the write lock at
    # BEGIN so two writers queue on the busy timeout instead of failing mid-transaction.
    # Queues a process's write transactions fairly before they contend in SQLite.
    DATABASES["default"]["ENGINE"] = "artterminal.sqlite"
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": env.int("SQLITE_BUSY_TIMEOUT", default=20),
    }
    # Sockets' database calls share one thread, and requests borrow threads from a pool
    # (artterminal.request_threads): keeping each thread's connection saves a connect
    # (and the PRAGMAs above) per call.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("SQLITE_CONN_MAX_AGE", default=60)
else:
    # Django advises CONN_MAX_AGE=0 under ASGI, where each request would open its own.
    # Here requests reuse pooled threads (artterminal.request_threads), so a positive
    # value keeps a connection per thread: up to IDLE_THREADS a process, mind
    # PostgreSQL's max_connections. PgBouncer in front is the other way.
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channels and cache ---------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
if REDIS_URL:
    from redis.connection import parse_url as parse_redis_url

    CHANNEL_LAYERS = {
        "default": {
            # channels_redis's pub/sub layer, whose receivers hear of an outage.
            "BACKEND": "artterminal.layers.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 15}],
                # Pub/sub channels are shared by every database of a Redis server.
                "prefix": f"artterminal{parse_redis_url(REDIS_URL).get('db', 0)}.",
            },
        }
    }
    CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}
    }
    # Sessions read from the shared cache and survive its flush through the database
    # (Django's cached_db, still answering while Redis is down).
    SESSION_ENGINE = "artterminal.sessions"
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "artterminal.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Background tasks -----------------------------------------------------------------
TASKS = {
    "default": {"BACKEND": env.str("TASKS_BACKEND", default="django_tasks_db.DatabaseBackend")}
}

# --- Auth -----------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "gallery:index"
LOGOUT_REDIRECT_URL = "gallery:index"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media files -----------------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(BASE_DIR / "media")))

# --- Security -------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False  # the voice client reads it to POST the token request
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if not DEBUG:
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=60 * 60 * 24 * 365)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)

# Wrong passwords for one username before it is refused for the rest of the window.
LOGIN_FAILURES_PER_WINDOW = env.int("LOGIN_FAILURES_PER_WINDOW", default=10)
LOGIN_FAILURE_WINDOW_SECONDS = env.int("LOGIN_FAILURE_WINDOW_SECONDS", default=15 * 60)
# Per client address and hour: every account brings its own picture and voice
# allowances. Submissions of the sign-up form (accepted or not), and accounts made.
# 0 sets no limit.
SIGNUP_ATTEMPTS_PER_ADDRESS_PER_HOUR = env.int("SIGNUP_ATTEMPTS_PER_ADDRESS_PER_HOUR", default=30)
SIGNUPS_PER_ADDRESS_PER_HOUR = env.int("SIGNUPS_PER_ADDRESS_PER_HOUR", default=10)

# --- Images ---------------------------------------------------------------------------
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="https://api.openai.com/v1")
IMAGE_PROVIDER = env.str("IMAGE_PROVIDER", default="openai" if OPENAI_API_KEY else "local")
OPENAI_IMAGE_MODEL = env.str("OPENAI_IMAGE_MODEL", default="gpt-image-1")
OPENAI_TIMEOUT_SECONDS = env.float("OPENAI_TIMEOUT_SECONDS", default=120.0)
IMAGE_SIZE = env.int("IMAGE_SIZE", default=768)
# A job still "generating" after this long is taken as lost with its worker.
IMAGE_JOB_TIMEOUT_SECONDS = env.int("IMAGE_JOB_TIMEOUT_SECONDS", default=300)
# Pictures (new ones and edits, by form or by voice) one user may ask for in an hour:
# each one drawn by OpenAI is paid for. 0 sets no limit.
IMAGES_PER_HOUR = env.int("IMAGES_PER_HOUR", default=60)

# --- Voice ----------------------------------------------------------------------------
# Empty REALTIME_BASE_URL means the built-in engine served by this site at /engine/v1.
REALTIME_BASE_URL = env.str("REALTIME_BASE_URL", default="")
REALTIME_MODEL = env.str("REALTIME_MODEL", default="gpt-realtime")
REALTIME_VOICE = env.str("REALTIME_VOICE", default="verse")
REALTIME_TOKEN_TTL_SECONDS = env.int("REALTIME_TOKEN_TTL_SECONDS", default=60)
ENGINE_API_KEY = env.str("ENGINE_API_KEY", default="")
# Where this site's server side reaches the built-in engine (it runs in the same Daphne).
PORT = env.int("PORT", default=8000)
ENGINE_URL = env.str("ENGINE_URL", default=f"http://127.0.0.1:{PORT}/engine/v1")
# That request goes straight to Daphne over loopback, not through the proxy: it names
# the loopback host, and comes without X-Forwarded-Proto. Without these two, production
# answered it 400 (DisallowedHost) or 301 (to https), and no voice call could start.
# The loopback name only reaches Daphne from this machine; browsers reach /engine/ over
# HTTPS through the proxy, which redirects plain HTTP itself.
# (ALLOWED_HOSTS gains the loopback name at the end, after the CSP is built from the
# site's public names.)
SECURE_REDIRECT_EXEMPT = [r"^engine/"]
ENGINE_MAX_CALLS = env.int("ENGINE_MAX_CALLS", default=16)

# --- Websockets -----------------------------------------------------------------------
WEBSOCKET_MAX_MESSAGE_BYTES = env.int("WEBSOCKET_MAX_MESSAGE_BYTES", default=64 * 1024)
# Messages a socket may send per second, and the burst above that; past it the socket
# closes (4429). The voice mirror gets more: a spoken answer's transcript deltas arrive at
# once, and a reconnect resends everything not yet acknowledged.
WEBSOCKET_MESSAGES_PER_SECOND = env.float("WEBSOCKET_MESSAGES_PER_SECOND", default=20.0)
WEBSOCKET_MESSAGE_BURST = env.int("WEBSOCKET_MESSAGE_BURST", default=40)
VOICE_MIRROR_MESSAGES_PER_SECOND = env.float("VOICE_MIRROR_MESSAGES_PER_SECOND", default=100.0)
VOICE_MIRROR_MESSAGE_BURST = env.int("VOICE_MIRROR_MESSAGE_BURST", default=500)
# Open sockets per logged-in user, over every process when the cache is Redis.
WEBSOCKET_MAX_SOCKETS_PER_USER = env.int("WEBSOCKET_MAX_SOCKETS_PER_USER", default=20)
# How often a long-lived socket re-checks that its login still holds.
WEBSOCKET_SESSION_CHECK_SECONDS = env.float("WEBSOCKET_SESSION_CHECK_SECONDS", default=30.0)

# How many Daphne processes serve this site (the usual WEB_CONCURRENCY convention).
# Declared so the system checks can tell a multi-process deployment that still uses the
# in-memory channel layer, which reaches only the sockets of its own process.
WEB_CONCURRENCY = env.int("WEB_CONCURRENCY", default=1)

# --- Content Security Policy (django-csp) ---------------------------------------------
# Pages load only their own ES modules and styles; data reaches scripts through
# json_script (type application/json, which script-src does not govern).
_websocket_sources: list[str] = []
for _host in ALLOWED_HOSTS:
    # 'self' covers same-origin websockets in current browsers; the explicit sources are
    # for older ones. Wildcards and IPv6 literals have no CSP spelling: 'self' serves them.
    if _host == "*" or _host.startswith("["):
        continue
    _hosts = [f"*{_host}", _host[1:]] if _host.startswith(".") else [_host]
    for _name in _hosts:
        if DEBUG:  # development servers listen on arbitrary ports, often without TLS
            _websocket_sources += [f"ws://{_name}:*", f"wss://{_name}:*"]
        else:
            _websocket_sources.append(f"wss://{_name}")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


# The browser itself posts the SDP offer to the Realtime upstream: the configured base
# URL, else OpenAI when a key is set, else the built-in engine on this same origin.
REALTIME_UPSTREAM_ORIGIN = _origin(REALTIME_BASE_URL) or (
    _origin(OPENAI_BASE_URL) if OPENAI_API_KEY else ""
)
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "img-src": [SELF, "data:", "blob:"],
        "media-src": [SELF, "blob:"],
        "script-src": [SELF],
        "style-src": [SELF],
        "connect-src": [
            SELF,
            *_websocket_sources,
            *([REALTIME_UPSTREAM_ORIGIN] if REALTIME_UPSTREAM_ORIGIN else []),
        ],
        "frame-ancestors": [NONE],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}

# --- The engine's loopback name (see ENGINE_URL) -------------------------------------
_engine_host = urlsplit(ENGINE_URL).hostname or ""
if _engine_host in ("127.0.0.1", "localhost", "::1"):
    _engine_host = f"[{_engine_host}]" if ":" in _engine_host else _engine_host
    if _engine_host not in ALLOWED_HOSTS and "*" not in ALLOWED_HOSTS:
        ALLOWED_HOSTS.append(_engine_host)
