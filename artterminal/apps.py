from django.apps import AppConfig


class ArtTerminalConfig(AppConfig):
    """The project package as an app: its system checks and the signals that close a
    user's sockets register at startup."""

    name = "artterminal"
    verbose_name = "Art Terminal"

    def ready(self) -> None:
        from artterminal import checks  # noqa: F401  (registers the checks)
        from artterminal.sockets import connect_signals

        connect_signals()
