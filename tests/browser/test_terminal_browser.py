"""The terminal page in real Chromium against a real Daphne: what one controller does,
every other window shows, live and without a reload."""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.conftest import LiveSite, SeededTerminal

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

pytestmark = pytest.mark.browser

CURRENT = "#terminal-current"


def open_terminal(page: Any, terminal: SeededTerminal) -> Any:
    page.goto(terminal.path)
    expect(page.locator("#terminal")).to_have_attribute("data-connection", "open")
    return page


def current_in_database(site: LiveSite, terminal: SeededTerminal) -> tuple[int, int]:
    [(image_id, version)] = site.query(
        "SELECT current_image_id, version FROM gallery_terminal WHERE id = ?", terminal.id
    )
    return int(image_id), int(version)


def test_arrow_key_of_a_controller_moves_an_anonymous_viewer_without_reload(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("arrow-keys", images=4)
    first, second, *_, last = terminal.image_ids
    controller = open_terminal(new_page("controller"), terminal)
    viewer = open_terminal(new_page(), terminal)
    expect(viewer.locator(CURRENT)).to_have_attribute("data-image-id", str(first))
    expect(viewer.locator("#terminal-viewers")).to_have_text("2")
    # Survives only if the page is never reloaded.
    viewer.evaluate("window.sameDocument = true")

    controller.keyboard.press("ArrowRight")

    expect(viewer.locator(CURRENT)).to_have_attribute("data-image-id", str(second))
    expect(viewer.locator(CURRENT)).to_have_attribute("data-version", "1")
    expect(viewer.locator("#terminal-position")).to_have_text("2 of 4")
    expect(viewer.locator("#terminal-picture")).to_have_attribute("alt", "Study 2")
    expect(viewer.locator('.strip__item[aria-current="true"]')).to_have_count(1)
    assert viewer.evaluate("window.sameDocument") is True
    expect(controller.locator(CURRENT)).to_have_attribute("data-image-id", str(second))
    assert current_in_database(live_site, terminal) == (second, 1)

    controller.keyboard.press("End")
    expect(viewer.locator(CURRENT)).to_have_attribute("data-image-id", str(last))
    controller.keyboard.press("Home")
    expect(viewer.locator(CURRENT)).to_have_attribute("data-image-id", str(first))
    assert viewer.evaluate("window.sameDocument") is True


def test_a_viewer_without_control_rights_has_no_controls_and_keys_do_nothing(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("just-watching", images=3)
    viewer = open_terminal(new_page("viewer"), terminal)

    expect(viewer.locator("#terminal-controls")).to_be_hidden()
    viewer.keyboard.press("ArrowRight")
    viewer.keyboard.press("End")
    # The page sends nothing, so the server's state stays where it was.
    viewer.wait_for_timeout(500)
    assert current_in_database(live_site, terminal) == (terminal.image_ids[0], 0)
    expect(viewer.locator(CURRENT)).to_have_attribute("data-image-id", str(terminal.image_ids[0]))


def test_buttons_and_thumbnails_navigate_for_a_controller(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("buttons", images=4)
    controller = open_terminal(new_page("controller"), terminal)
    viewer = open_terminal(new_page(), terminal)

    controller.get_by_role("button", name="Previous").click()
    expect(viewer.locator(CURRENT)).to_have_attribute(
        "data-image-id",
        str(terminal.image_ids[-1]),  # a shared display wraps around
    )
    controller.get_by_role("button", name="Show Study 2 (number 2)").click()
    expect(viewer.locator(CURRENT)).to_have_attribute("data-image-id", str(terminal.image_ids[1]))


def test_private_terminal_is_not_shown_to_anonymous_visitors(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("backroom", images=1, public=False)
    page = new_page()

    response = page.goto(terminal.path)

    assert response is not None and response.status == 404
    expect(page.locator(CURRENT)).to_have_count(0)


def test_viewer_says_reconnecting_while_the_server_is_down_then_catches_up(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("power-cut", images=3)
    viewer = open_terminal(new_page(), terminal)
    banner = viewer.locator("#terminal-banner")
    expect(banner).to_be_hidden()

    live_site.stop()
    expect(banner).to_be_visible()
    expect(banner).to_have_text("Reconnecting…")
    expect(viewer.locator("#terminal")).to_have_attribute("data-connection", "offline")
    # Changes the viewer cannot hear about while the server is away.
    with sqlite3.connect(live_site.database, timeout=20) as connection:
        connection.execute(
            "UPDATE gallery_terminal SET current_image_id = ?, version = version + 5 WHERE id = ?",
            (terminal.image_ids[2], terminal.id),
        )
    live_site.start()

    expect(viewer.locator("#terminal")).to_have_attribute("data-connection", "open", timeout=30_000)
    expect(banner).to_be_hidden()
    expect(viewer.locator(CURRENT)).to_have_attribute("data-image-id", str(terminal.image_ids[2]))
    expect(viewer.locator(CURRENT)).to_have_attribute("data-version", "5")


def test_a_refused_navigation_is_explained_politely(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("moved-out", images=3)
    controller = open_terminal(new_page("controller"), terminal)
    # Taken off the terminal after the page drew its thumbnail.
    with sqlite3.connect(live_site.database, timeout=20) as connection:
        connection.execute(
            "UPDATE gallery_image SET terminal_id = NULL WHERE id = ?", (terminal.image_ids[1],)
        )

    controller.get_by_role("button", name="Show Study 2 (number 2)").click()

    notice = controller.locator("#terminal-notice")
    expect(notice).to_be_visible()
    expect(notice).to_have_text("That image is not on this terminal.")
    assert current_in_database(live_site, terminal) == (terminal.image_ids[0], 0)


def test_empty_terminal_invites_a_picture_and_shows_controls_once_the_first_arrives(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("bare-walls", images=0)
    controller = open_terminal(new_page("controller"), terminal)
    viewer = open_terminal(new_page(), terminal)

    for page in (controller, viewer):
        expect(page.locator("#terminal-empty")).to_contain_text("No pictures yet")
        expect(page.locator("#terminal-controls")).to_be_hidden()
    expect(viewer.get_by_role("link", name="Create one")).to_be_hidden()
    expect(viewer.locator("#terminal-empty")).to_contain_text("as soon as someone makes one")
    controller.keyboard.press("ArrowRight")  # nothing to step through: nothing is sent
    expect(controller.locator("#terminal-notice")).to_be_hidden()

    # What a worker leaves behind when it finishes the terminal's first picture: the
    # picture, and the terminal showing it. The page hears of it over its socket.
    [made] = live_site.seed_terminal("studio", images=1).image_ids
    with sqlite3.connect(live_site.database, timeout=20) as connection:
        connection.execute(
            "UPDATE gallery_image SET terminal_id = ?, "
            "updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now', '+1 second') WHERE id = ?",
            (terminal.id, made),
        )
        connection.execute(
            "UPDATE gallery_terminal SET current_image_id = ?, version = 1 WHERE id = ?",
            (made, terminal.id),
        )

    for page in (controller, viewer):
        expect(page.locator(CURRENT)).to_have_attribute("data-image-id", str(made))
        expect(page.locator("#terminal-empty")).to_be_hidden()
    expect(controller.locator("#terminal-controls")).to_be_visible()
    expect(controller.get_by_role("button", name="Next")).to_be_enabled()
    expect(viewer.locator("#terminal-controls")).to_be_hidden()


def test_focus_stays_on_a_control_while_the_server_restarts(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("steady-hands", images=3)
    controller = open_terminal(new_page("controller"), terminal)
    following = controller.get_by_role("button", name="Next")
    following.focus()

    live_site.stop()
    expect(controller.locator("#terminal")).to_have_attribute("data-connection", "offline")
    # Unusable and said so, but the keyboard stays where it was (a disabled button
    # would drop the focus to the page).
    expect(following).to_have_attribute("aria-disabled", "true")
    expect(following).to_be_focused()
    controller.keyboard.press("Enter")
    expect(controller.locator("#terminal-notice")).to_contain_text("Not connected")
    live_site.start()

    expect(controller.locator("#terminal")).to_have_attribute(
        "data-connection", "open", timeout=30_000
    )
    expect(following).to_be_focused()
    controller.keyboard.press("Enter")
    expect(controller.locator(CURRENT)).to_have_attribute(
        "data-image-id", str(terminal.image_ids[1])
    )


def test_a_terminal_made_private_while_the_viewer_was_away_stops_retrying(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("going-private", images=2)
    viewer = open_terminal(new_page(), terminal)
    live_site.stop()
    expect(viewer.locator("#terminal")).to_have_attribute("data-connection", "offline")
    with sqlite3.connect(live_site.database, timeout=20) as connection:
        connection.execute("UPDATE gallery_terminal SET is_public = 0 WHERE id = ?", (terminal.id,))
    live_site.start()

    # Refused outright, the handshake looked like a dropped connection: "Reconnecting…"
    # for ever. Now the server says why and closes with 4003.
    expect(viewer.locator("#terminal")).to_have_attribute(
        "data-connection", "closed", timeout=30_000
    )
    expect(viewer.locator("#terminal-banner")).to_contain_text("no longer available")


def test_a_server_that_takes_the_socket_only_to_say_it_is_busy_is_asked_less_and_less(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("busy-signal", images=2)
    page = new_page()
    handshakes: list[float] = []

    def busy(socket: Any) -> None:
        # What the server answers while its database or channel layer is down.
        handshakes.append(time.monotonic())
        socket.send(
            json.dumps({"type": "error", "code": "unavailable", "message": "The server is busy."})
        )
        socket.close(code=4503, reason="")

    page.route_web_socket(f"**/ws/terminals/{terminal.slug}/", busy)
    page.goto(terminal.path)
    expect(page.locator("#terminal")).to_have_attribute("data-connection", "offline")
    page.wait_for_timeout(6_000)
    # Backoff from 500 ms, doubling (with jitter, from half of each ceiling): at most
    # five tries in six seconds. Reset at every open, it was a try every 0.25–0.5 s.
    assert 3 <= len(handshakes) <= 5, [round(t - handshakes[0], 2) for t in handshakes]
    gaps = [later - earlier for earlier, later in itertools.pairwise(handshakes)]
    assert gaps[-1] > gaps[0]


def test_jobs_that_ended_while_the_viewer_was_away_are_brought_up_to_date(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("night-shift", images=3)
    made, failed = terminal.image_ids[1], terminal.image_ids[2]
    # Two pictures still being made when the viewer opens the page.
    with sqlite3.connect(live_site.database, timeout=20) as connection:
        connection.execute(
            "UPDATE gallery_image SET status = 'generating', progress = 40 WHERE id IN (?, ?)",
            (made, failed),
        )
    viewer = open_terminal(new_page(), terminal)
    for job_id in (made, failed):
        expect(viewer.locator(f'[data-job-id="{job_id}"]')).to_contain_text("Generating")

    # The viewer's socket drops (here: the server restarts) and the worker ends both
    # meanwhile: their news reaches no socket of this page.
    live_site.stop()
    expect(viewer.locator("#terminal")).to_have_attribute("data-connection", "offline")
    with sqlite3.connect(live_site.database, timeout=20) as connection:
        connection.execute(
            "UPDATE gallery_image SET status = 'ready', progress = 100, "
            "updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE id = ?",
            (made,),
        )
        connection.execute(
            "UPDATE gallery_image SET status = 'failed', error = 'The painter gave up.', "
            "updated_at = strftime('%Y-%m-%d %H:%M:%f', 'now') WHERE id = ?",
            (failed,),
        )
    live_site.start()
    expect(viewer.locator("#terminal")).to_have_attribute("data-connection", "open", timeout=30_000)

    # Back online: the finished one is no longer said to be in the works, and the
    # failed one says why, as it would have had the page heard it live.
    expect(viewer.locator(f'[data-job-id="{made}"]')).to_have_count(0)
    expect(viewer.locator(f'[data-job-id="{failed}"]')).to_contain_text("The painter gave up.")


def test_keyboard_focus_on_a_thumbnail_survives_the_strip_moving_on(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("long-wall", images=10)
    controller = open_terminal(new_page("controller"), terminal)
    # A keyboard user tabs into the strip (its first thumbnail) and steps with the arrows.
    first = controller.get_by_role("button", name="Show Study 1 (number 1)")
    first.focus()
    expect(first).to_be_focused()

    for number in range(2, 6):
        controller.keyboard.press("ArrowRight")
        expect(controller.locator("#terminal-position")).to_have_text(f"{number} of 10")

    # The strip (three either side) no longer holds Study 1: the focus moves to the
    # thumbnail of the picture shown, rather than falling to the top of the page.
    expect(controller.get_by_role("button", name="Show Study 5 (number 5)")).to_be_focused()
