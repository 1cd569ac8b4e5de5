"""`seed_demo`: a demo login and a Lobby full of pictures, and safe to run again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import authenticate, get_user_model
from django.core.management import CommandError, call_command

from gallery.models import Image, Terminal


@pytest.fixture(autouse=True)
def development(settings: Any) -> None:
    """As `make run` runs it: DEBUG on (its .env), small pictures to keep the test quick."""
    settings.DEBUG = True
    settings.IMAGE_SIZE = 96


def test_seed_demo_creates_the_login_and_a_lobby_with_pictures(db: None, capsys: Any) -> None:
    call_command("seed_demo")
    out = capsys.readouterr().out
    assert "demo / demo-gallery-2026" in out

    user = authenticate(username="demo", password="demo-gallery-2026")
    assert user is not None and user.is_staff and user.is_superuser

    lobby = Terminal.objects.get(slug="lobby")
    assert (lobby.name, lobby.owner_id, lobby.is_public) == ("Lobby", user.pk, True)
    images = list(lobby.images.all())
    assert len(images) >= 6
    assert {i.status for i in images} == {Image.Status.READY}
    assert len({i.prompt for i in images}) == len(images)
    for image in images:
        assert Path(image.file.path).is_file() and Path(image.thumbnail.path).is_file()
        assert image.title and image.description
    assert lobby.current_image_id in {i.pk for i in images}
    assert lobby.version == 1


def test_seed_demo_is_idempotent_and_only_redraws_what_is_missing(db: None, capsys: Any) -> None:
    call_command("seed_demo")
    lobby = Terminal.objects.get(slug="lobby")
    first = {i.pk: i.file.name for i in lobby.images.all()}
    broken = lobby.images.order_by("id").last()
    assert broken is not None
    Image.objects.filter(pk=broken.pk).update(status=Image.Status.FAILED, error="lost")
    user = get_user_model().objects.get(username="demo")
    user.set_password("changed-by-someone")
    user.save()

    call_command("seed_demo")
    assert "(1 new)" in capsys.readouterr().out.splitlines()[-1]
    after = {i.pk: i.file.name for i in Terminal.objects.get(slug="lobby").images.all()}
    assert set(after) == set(first)
    assert all(after[pk] == name for pk, name in first.items() if pk != broken.pk)
    broken.refresh_from_db()
    assert broken.status == Image.Status.READY
    assert Terminal.objects.count() == 1
    assert get_user_model().objects.filter(username="demo").count() == 1
    assert authenticate(username="demo", password="demo-gallery-2026") is not None

    call_command("seed_demo")
    assert "(0 new)" in capsys.readouterr().out


def test_seed_demo_redraws_pictures_whose_files_are_gone(db: None, capsys: Any) -> None:
    call_command("seed_demo")
    lobby = Terminal.objects.get(slug="lobby")
    lost = lobby.images.order_by("id").first()
    assert lost is not None
    Path(lost.file.path).unlink()  # a media folder wiped, the database kept

    call_command("seed_demo")

    assert "(1 new)" in capsys.readouterr().out.splitlines()[-1]
    lost.refresh_from_db()
    assert Path(lost.file.path).is_file()


def test_seed_demo_leaves_a_demo_account_staff_locked_down(
    db: None, capsys: Any, make_user: Any
) -> None:
    call_command("seed_demo")
    user = get_user_model().objects.get(username="demo")
    user.is_active = False
    user.save()

    call_command("seed_demo")

    user.refresh_from_db()
    assert not user.is_active
    assert "left as it is" in capsys.readouterr().err


def test_seed_demo_never_makes_a_signed_up_demo_account_a_superuser(
    db: None, make_user: Any
) -> None:
    make_user("demo", password="their-own-long-password")

    call_command("seed_demo")

    user = get_user_model().objects.get(username="demo")
    assert not user.is_staff and not user.is_superuser
    assert user.check_password("their-own-long-password")


def test_seed_demo_refuses_with_debug_off(db: None, settings: Any) -> None:
    settings.DEBUG = False
    with pytest.raises(CommandError, match="runs only with DEBUG on"):
        call_command("seed_demo")
    assert not get_user_model().objects.filter(username="demo").exists()
