from django.apps import AppConfig


class ArtTerminalConfig(AppConfig):
    """The project package as an app, so its system checks register at startup."""

    name = "artterminal"
    verbose_name = "Art Terminal"

    def ready(self) -> None:
        from artterminal import checks  # noqa: F401  (registers the checks)
