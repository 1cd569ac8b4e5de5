from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import URLPattern, URLResolver, include, path

urlpatterns: list[URLPattern | URLResolver] = [
    path("admin/", admin.site.urls),
    path("accounts/", include("artterminal.accounts")),
    path("engine/v1/", include("voice.engine.urls")),
    path("", include("voice.urls")),
    path("", include("gallery.urls")),
]

# Development only (static() is empty when DEBUG is off): in production the reverse
# proxy serves MEDIA_ROOT.
urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
