"""Behind nginx, as docs/deploy.md runs it: Daphne with --proxy-headers takes the
client address from the X-Forwarded-For nginx sets, and the per-address sign-up limit
counts that address, not the proxy's."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests import live

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def proxied_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("proxied")
    env = live.sqlite_environment(root, SIGNUPS_PER_ADDRESS_PER_HOUR="1")
    live.migrate(env)
    log = root / "daphne.log"
    process, port = live.start_daphne(env=env, log=log, options=("--proxy-headers",))
    url = f"http://127.0.0.1:{port}"
    try:
        live.wait_until(
            live.answering(f"{url}/accounts/signup/", status=200),
            [process],
            logs=lambda: live.log_tail(log),
        )
        yield url
    finally:
        live.stop([process], grace=5)


def sign_up(url: str, username: str, *, forwarded_for: str) -> int:
    """A sign-up through 'nginx': a fresh browser, its address in X-Forwarded-For."""
    headers = {"X-Forwarded-For": forwarded_for}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as browser:
        page = browser.get("/accounts/signup/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token is not None, page
        answer = browser.post(
            "/accounts/signup/",
            data={
                "csrfmiddlewaretoken": token.group(1),
                "username": username,
                "password1": "a-long-pass-phrase-9",
                "password2": "a-long-pass-phrase-9",
            },
        )
        return answer.status_code


def test_each_forwarded_address_has_its_own_signup_allowance(proxied_site: str) -> None:
    assert sign_up(proxied_site, "ana", forwarded_for="203.0.113.5") == 302
    assert sign_up(proxied_site, "ben", forwarded_for="203.0.113.5") == 429
    # Everyone else behind the same proxy still may: the count is not the proxy's.
    assert sign_up(proxied_site, "cai", forwarded_for="198.51.100.7") == 302


def test_daphne_counts_the_first_forwarded_address(proxied_site: str) -> None:
    """Why nginx must set the header, not append to it: with
    `$proxy_add_x_forwarded_for` a client's own "X-Forwarded-For: 192.0.2.x" would come
    first, and each made-up address would be counted as a new client."""
    assert sign_up(proxied_site, "dee", forwarded_for="192.0.2.1, 203.0.113.9") == 302
    assert sign_up(proxied_site, "eve", forwarded_for="192.0.2.2, 203.0.113.9") == 302
