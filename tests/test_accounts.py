"""Logging in, on the site and the admin: wrong passwords for one username are refused
past a limit, so a password cannot be guessed at request speed. Signing up: one client
address may make only so many accounts, and submit the form only so often, an hour."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
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


def sign_up(username: str, address: str, *, forwarded_for: str | None = None) -> Any:
    """A sign-up from `address`, as Daphne reports it, maybe with an X-Forwarded-For of
    the client's own making."""
    meta: dict[str, Any] = {"REMOTE_ADDR": address}
    if forwarded_for is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return Client().post(
        "/accounts/signup/",
        {"username": username, "password1": PASSWORD, "password2": PASSWORD},
        **meta,
    )


def assert_refused_keeping_the_username(response: Any, username: str) -> None:
    page = response.content.decode()
    assert response.status_code == 429
    assert re.search(
        r"Too many sign-ups from your network this hour\. "
        r"Try again in \d+ minutes?\.",
        page,
    ), page
    assert f'value="{username}"' in page
    assert PASSWORD not in page
    assert "_auth_user_id" not in response.client.session


def test_an_address_past_its_signups_is_refused_with_the_wait(settings: Any) -> None:
    settings.SIGNUPS_PER_ADDRESS_PER_HOUR = 2
    assert sign_up("first", "203.0.113.7").status_code == 302
    assert sign_up("second", "203.0.113.7").status_code == 302

    refused = sign_up("third", "203.0.113.7")

    assert_refused_keeping_the_username(refused, "third")
    assert not get_user_model().objects.filter(username="third").exists()
    # Another address has its own allowance.
    assert sign_up("fourth", "198.51.100.20").status_code == 302


def test_the_address_comes_from_the_server_not_from_x_forwarded_for(settings: Any) -> None:
    """Daphne's --proxy-headers turns the proxy's header into REMOTE_ADDR; a header the
    client wrote itself must not buy it a fresh allowance."""
    settings.SIGNUPS_PER_ADDRESS_PER_HOUR = 1
    assert sign_up("first", "203.0.113.7", forwarded_for="192.0.2.1").status_code == 302

    refused = sign_up("second", "203.0.113.7", forwarded_for="192.0.2.2")

    assert_refused_keeping_the_username(refused, "second")


def test_one_ipv6_network_shares_one_allowance(settings: Any) -> None:
    settings.SIGNUPS_PER_ADDRESS_PER_HOUR = 1
    assert sign_up("first", "2001:db8:1:2::10").status_code == 302

    assert_refused_keeping_the_username(sign_up("second", "2001:db8:1:2::99"), "second")
    assert sign_up("third", "2001:db8:1:3::10").status_code == 302


def test_attempts_are_limited_too_and_past_them_the_form_says_nothing_more(
    settings: Any, make_user: Callable[..., Any]
) -> None:
    settings.SIGNUP_ATTEMPTS_PER_ADDRESS_PER_HOUR = 3
    make_user("taken")
    for _ in range(3):
        probe = sign_up("taken", "203.0.113.7")
        assert probe.status_code == 400
        assert "A user with that username already exists." in probe.content.decode()

    refused = sign_up("taken", "203.0.113.7")

    assert_refused_keeping_the_username(refused, "taken")
    assert "already exists" not in refused.content.decode()
    # Even a form that would be accepted.
    assert_refused_keeping_the_username(sign_up("fresh", "203.0.113.7"), "fresh")
    assert sign_up("fresh", "198.51.100.20").status_code == 302


def test_zero_sets_no_limit(settings: Any) -> None:
    settings.SIGNUPS_PER_ADDRESS_PER_HOUR = 0
    settings.SIGNUP_ATTEMPTS_PER_ADDRESS_PER_HOUR = 0
    for index in range(12):
        assert sign_up(f"visitor{index}", "203.0.113.7").status_code == 302
