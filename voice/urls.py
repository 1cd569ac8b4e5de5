from django.urls import URLPattern, path

from voice import views

app_name = "voice"
urlpatterns: list[URLPattern] = [
    path("api/realtime/", views.token, name="token"),
]
