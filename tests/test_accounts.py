"""Logging in, on the site and the admin: wrong passwords for one username are refused
past a limit, so a password cannot be guessed at request speed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

PASSWORD = "a-long-test-password"


def attempt(path: str, username: str, password: str) -> Any:
    return Client().post(path, {"username": username, "password": password})


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_a_username_past_its_wrong_passwords_is_refused_even_the_right_one(
    path: str, make_user: Callable[..., Any], settings: Any
) -> None:
    settings.LOGIN_FAILURES_PER_WINDOW = 3
    make_user("keeper", is_staff=True)
    make_user("neighbour", is_staff=True)
    assert attempt(path, "keeper", PASSWORD).status_code == 302  # a right one costs nothing
    for _ in range(3):
        wrong = attempt(path, "keeper", "guess")
        assert wrong.status_code == 200
        assert "Too many failed attempts" not in wrong.content.decode()

    refused = attempt(path, "Keeper", PASSWORD)  # usernames are counted case-blind

    assert refused.status_code == (429 if path.startswith("/accounts/") else 200)
    assert "Too many failed attempts to log in as this user." in refused.content.decode()
    assert "_auth_user_id" not in refused.client.session
    # Others are not held up by someone guessing at this one.
    assert attempt(path, "neighbour", PASSWORD).status_code == 302
