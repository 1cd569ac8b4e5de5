from django.urls import path

from gallery import views

app_name = "gallery"
urlpatterns = [
    path("", views.index, name="index"),
    path("me/images/", views.mine, name="mine"),
    path("images/new/", views.image_create, name="create"),
    path("images/<int:pk>/", views.image_detail, name="image-detail"),
    path("images/<int:pk>/status/", views.image_status, name="image-status"),
    path("terminals/", views.terminal_list, name="terminal-list"),
    path("terminals/<slug:slug>/", views.terminal_detail, name="terminal-detail"),
]
