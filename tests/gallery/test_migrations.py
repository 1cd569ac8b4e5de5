"""Data migrations, run forward on rows made as the code before them made them."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command

from gallery.models import Image


@pytest.mark.django_db(transaction=True)
def test_pictures_stored_under_guessable_names_move_to_unguessable_ones(owner: Any) -> None:
    call_command("migrate", "gallery", "0002", verbosity=0)
    try:
        image = Image.objects.create(owner=owner, prompt="a secret", provider="local")
        old_png = default_storage.save(f"images/2026/11/image-{image.pk}.png", ContentFile(b"P"))
        old_webp = default_storage.save(
            f"thumbnails/2026/11/image-{image.pk}.webp", ContentFile(b"W")
        )
        Image.objects.filter(pk=image.pk).update(file=old_png, thumbnail=old_webp)
        # Names that never came from the generator are left as they are.
        other = Image.objects.create(owner=owner, prompt="a seed", provider="local")
        kept = default_storage.save("images/2026/11/lobby-fox.png", ContentFile(b"K"))
        Image.objects.filter(pk=other.pk).update(file=kept)
    finally:
        call_command("migrate", "gallery", verbosity=0)

    image.refresh_from_db()
    png, webp = str(image.file.name), str(image.thumbnail.name)
    assert re.fullmatch(rf"images/2026/11/image-{image.pk}-[\w-]{{22}}\.png", png), png
    assert re.fullmatch(rf"thumbnails/2026/11/image-{image.pk}-[\w-]{{22}}\.webp", webp), webp
    assert [default_storage.open(name).read() for name in (png, webp)] == [b"P", b"W"]
    assert not default_storage.exists(old_png) and not default_storage.exists(old_webp)
    other.refresh_from_db()
    assert other.file.name == kept and default_storage.exists(kept)
