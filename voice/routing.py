from django.urls import URLPattern, path

from voice.consumers import VoiceMirrorConsumer

websocket_urlpatterns: list[URLPattern] = [
    path("ws/voice/<int:session_id>/", VoiceMirrorConsumer.as_asgi()),
]
