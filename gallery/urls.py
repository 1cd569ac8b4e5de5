from django.urls import URLPattern

app_name = "gallery"
urlpatterns: list[URLPattern] = []
