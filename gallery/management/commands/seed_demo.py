"""A demo account and a public "Lobby" terminal with pictures, so the site is alive at once."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from gallery import generation
from gallery.models import Image, Terminal

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-gallery-2026"  # noqa: S105 - a published demo login, not a secret
LOBBY_SLUG = "lobby"
# (prompt, style, seed): fixed seeds, so every fresh demo shows the same pictures.
DEMO_IMAGES: list[tuple[str, str, int]] = [
    ("a red fox under a blue moon", "", 11),
    ("snowy mountains above a quiet lake at sunset", "", 12),
    ("a small house by the sea with a sailing boat, clouds and birds", "", 13),
    ("a black cat among pine trees on a snowy night", "", 14),
    ("a golden sun over a meadow of pink flowers", "watercolour", 15),
    ("a purple city skyline at night with stars", "neon", 16),
    ("a white boat on a turquoise sea under the sun", "pixel", 17),
    ("a fox in an orange forest at dusk", "sketch", 18),
]


class Command(BaseCommand):
    help = (
        "Create the demo login (demo / demo-gallery-2026, a staff superuser so the admin "
        "can be shown — for demos only) and the public Lobby terminal with generated "
        "pictures. Safe to run again: it only adds what is missing. Development only "
        "(DEBUG on): the login is published."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError(
                "seed_demo makes a superuser whose password is published: it runs only "
                "with DEBUG on (make run writes a .env that turns it on)."
            )
        user = self._demo_user()
        terminal, _ = Terminal.objects.get_or_create(
            slug=LOBBY_SLUG, defaults={"name": "Lobby", "owner": user, "is_public": True}
        )
        made = 0
        for prompt, style, seed in DEMO_IMAGES:
            image = Image.objects.filter(terminal=terminal, prompt=prompt, style=style).first()
            if image is not None and image.status == Image.Status.READY and _stored(image):
                continue
            if image is None:
                image = Image.objects.create(
                    owner=user,
                    terminal=terminal,
                    prompt=prompt,
                    style=style,
                    seed=seed,
                    provider="local",
                    status=Image.Status.QUEUED,
                )
            else:
                Image.objects.filter(pk=image.pk).update(
                    status=Image.Status.QUEUED, provider="local", error="", attempts=0
                )
            # Drawn here, in this process, so the pictures exist before the site starts.
            generation.image_render(image_id=image.pk)
            made += 1
        ready = terminal.images.filter(status=Image.Status.READY).count()
        self.stdout.write(
            f"Lobby terminal “{terminal.name}” has {ready} pictures ({made} new). "
            f"Demo login: {DEMO_USERNAME} / {DEMO_PASSWORD}"
        )

    def _demo_user(self) -> Any:
        """The demo login, made if missing. One that exists keeps what staff made of it:
        deactivated or stripped of its rights, it stays so (and an account that took the
        name by signing up is never made a superuser); only a live demo superuser whose
        password was changed gets the published one back, so the printed login works."""
        user_model = get_user_model()
        with transaction.atomic():
            user, created = user_model.objects.select_for_update().get_or_create(
                username=DEMO_USERNAME,
                defaults={"is_staff": True, "is_superuser": True, "is_active": True},
            )
            if created:
                user.set_password(DEMO_PASSWORD)
                user.save()
            elif not (user.is_active and user.is_superuser):
                self.stderr.write(
                    f"The account “{DEMO_USERNAME}” is not the live demo superuser "
                    "(deactivated, or without its rights): left as it is."
                )
            elif not user.check_password(DEMO_PASSWORD):
                user.set_password(DEMO_PASSWORD)
                user.save(update_fields=["password"])
        return user


def _stored(image: Image) -> bool:
    """Whether both files of a ready picture are still in storage."""
    return all(
        stored.name and stored.storage.exists(stored.name)
        for stored in (image.file, image.thumbnail)
    )
