from django.urls import URLPattern

app_name = "engine"
urlpatterns: list[URLPattern] = []
