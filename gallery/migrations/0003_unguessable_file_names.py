"""Pictures stored before their names carried a random part (gallery.generation.stored_name)
move to such names: media is served without a rights check, so `image-<id>.png` let
anyone fetch a private terminal's pictures by counting."""

import re
import secrets

from django.db import migrations

GUESSABLE = re.compile(r"^(?P<folder>(?:.*/)?)image-(?P<pk>\d+)\.(?P<extension>png|webp)$")


def rename(apps, schema_editor):
    Image = apps.get_model("gallery", "Image")
    for image in Image.objects.exclude(file="").iterator():
        stem = f"image-{image.pk}-{secrets.token_urlsafe(16)}"
        changed = []
        for field in ("file", "thumbnail"):
            stored = getattr(image, field)
            found = GUESSABLE.match(stored.name or "")
            if found is None or int(found["pk"]) != image.pk:
                continue
            storage = stored.storage
            if not storage.exists(stored.name):
                continue
            with storage.open(stored.name, "rb") as old:
                new_name = storage.save(
                    f"{found['folder']}{stem}.{found['extension']}", old
                )
            storage.delete(stored.name)
            stored.name = new_name
            changed.append(field)
        if changed:
            image.save(update_fields=changed)


class Migration(migrations.Migration):
    dependencies = [("gallery", "0002_image_grid_indexes")]

    operations = [migrations.RunPython(rename, migrations.RunPython.noop)]
