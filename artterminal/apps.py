from django.apps import AppConfig


class ArtTerminalConfig(AppConfig):
    """The project package as an app: its system checks, the signals that close a
    user's sockets, and the admin's throttled login register at startup."""

    name = "artterminal"
    verbose_name = "Art Terminal"

    def ready(self) -> None:
        from django.contrib import admin

        from artterminal import checks  # noqa: F401  (registers the checks)
        from artterminal.accounts import ThrottledAdminAuthenticationForm
        from artterminal.sockets import connect_signals

        connect_signals()
        admin.site.login_form = ThrottledAdminAuthenticationForm
