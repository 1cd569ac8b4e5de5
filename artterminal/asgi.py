"""ASGI entry point: HTTP through Django, websockets through Channels routing."""

import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "artterminal.settings")
# Django must be set up before anything imports models (the consumers do).
django.setup(set_prefix=False)

from artterminal.request_threads import PooledThreadsASGIHandler  # noqa: E402

# As get_asgi_application(), with request threads kept between requests.
django_asgi_app = PooledThreadsASGIHandler()

from channels.auth import AuthMiddleware  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from channels.sessions import CookieMiddleware  # noqa: E402
from django.conf import settings  # noqa: E402

from artterminal import eager_writes  # noqa: E402
from artterminal.sockets import SocketSessionMiddleware  # noqa: E402
from gallery.routing import websocket_urlpatterns as gallery_websockets  # noqa: E402
from voice.routing import websocket_urlpatterns as voice_websockets  # noqa: E402

# Daphne serves on Twisted: its sockets send at once when nothing is queued.
eager_writes.install()

http_app: Any = django_asgi_app
if settings.DEBUG:
    # Daphne serves no static files itself; in development the site does.
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    http_app = ASGIStaticFilesHandler(django_asgi_app)

application = ProtocolTypeRouter(
    {
        "http": http_app,
        # channels' AuthMiddlewareStack, with a session middleware that leaves sends alone.
        "websocket": AllowedHostsOriginValidator(
            CookieMiddleware(
                SocketSessionMiddleware(
                    AuthMiddleware(URLRouter([*gallery_websockets, *voice_websockets]))
                )
            )
        ),
    }
)
