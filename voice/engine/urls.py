"""The engine's API under /engine/v1/, mirroring OpenAI's /v1/realtime paths."""

from django.urls import URLPattern, path

from voice.engine import views

app_name = "engine"
urlpatterns: list[URLPattern] = [
    path("realtime/client_secrets", views.client_secrets, name="client_secrets"),
    path("realtime/calls", views.calls, name="calls"),
    path("realtime/calls/<str:call_id>/hangup", views.hangup, name="hangup"),
]
