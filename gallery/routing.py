from django.urls import path

from gallery.consumers import TerminalConsumer

websocket_urlpatterns = [
    path("ws/terminals/<slug:slug>/", TerminalConsumer.as_asgi()),
]
