"""Voice control end to end: Chromium with a recorded microphone talks over WebRTC to the
built-in engine in a live Daphne, and the picture changes for everyone watching."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import LiveSite, login_page
from tests.browser.voice_fixtures import (  # noqa: F401  (fixtures used by name)
    STAFF,
    launch_chromium,
    silence,
    utterance,
    voice_site,
)

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PANEL = "[data-voice-panel]"
STATUS = "[data-voice-status]"


def current_image_id(site: LiveSite, slug: str) -> int:
    [(image_id,)] = site.query("SELECT current_image_id FROM gallery_terminal WHERE slug = ?", slug)
    return int(image_id)


def next_image_id(site: LiveSite, slug: str) -> int:
    """What "next" shows: the terminal's following picture by id, wrapping around."""
    current = current_image_id(site, slug)
    rows = site.query(
        "SELECT i.id FROM gallery_image i JOIN gallery_terminal t ON i.terminal_id = t.id "
        "WHERE t.slug = ? AND i.status = 'ready' ORDER BY i.id",
        slug,
    )
    ids = [int(row[0]) for row in rows]
    return next((pk for pk in ids if pk > current), ids[0])


def open_viewer(browser: Any, site: LiveSite, slug: str) -> Any:
    """A second window on the terminal: an anonymous viewer of the public terminal."""
    page = browser.new_context(base_url=site.url).new_page()
    page.goto(f"/terminals/{slug}/")
    expect(page.locator("#terminal-current")).to_have_attribute(
        "data-image-id", str(current_image_id(site, slug))
    )
    return page


def logged_in_page(browser: Any, site: LiveSite, who: str = "controller") -> Any:
    """A page in its own context, logged in through the site's form, microphone allowed."""
    context = browser.new_context(base_url=site.url)
    context.grant_permissions(["microphone"], origin=site.url)
    page = context.new_page()
    login_page(page, who)
    return page


def open_panel(browser: Any, site: LiveSite, slug: str) -> Any:
    page = logged_in_page(browser, site)
    page.goto(f"/terminals/{slug}/")
    expect(page.locator(PANEL)).to_be_visible()
    return page


def sessions_on(site: LiveSite, slug: str) -> list[tuple[int, str]]:
    return [
        (int(pk), status)
        for pk, status in site.query(
            "SELECT s.id, s.status FROM voice_voicesession s "
            "JOIN gallery_terminal t ON s.terminal_id = t.id WHERE t.slug = ? ORDER BY s.id",
            slug,
        )
    ]


def mirrored_types(site: LiveSite, slug: str) -> list[str]:
    return [
        f"{direction}:{kind}"
        for direction, kind in site.query(
            "SELECT e.direction, e.type FROM voice_voiceevent e "
            "JOIN voice_voicesession s ON e.session_id = s.id "
            "JOIN gallery_terminal t ON s.terminal_id = t.id WHERE t.slug = ? ORDER BY e.id",
            slug,
        )
    ]


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"Timed out after {timeout:.0f} s waiting for {what}")


def test_spoken_command_moves_the_picture_for_every_viewer(
    voice_site: LiveSite,  # noqa: F811
    launch_chromium: Callable[..., Any],  # noqa: F811
    utterance: Path,  # noqa: F811
) -> None:
    site = voice_site
    browser = launch_chromium(wav=utterance)
    expected = next_image_id(site, "spoken")
    viewer = open_viewer(browser, site, "spoken")
    page = open_panel(browser, site, "spoken")

    toggle = page.locator("[data-voice-toggle]")
    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(toggle).to_have_text("Stop voice")
    expect(page.locator(STATUS)).to_contain_text("Listening", timeout=20_000)

    # The recorded "show the next picture" plays into the call; the other window follows.
    try:
        expect(viewer.locator("#terminal-current")).to_have_attribute(
            "data-image-id", str(expected), timeout=45_000
        )
    except AssertionError as missed:
        raise AssertionError(
            f"The spoken command did not move the picture.\n"
            f"Panel: {page.locator(PANEL).inner_text()!r}\n"
            f"Mirrored events: {mirrored_types(site, 'spoken')}"
        ) from missed
    transcript = page.locator("[data-transcript]")
    expect(transcript.locator("[data-role='user']").first).to_contain_text(
        re.compile("next", re.I), timeout=10_000
    )
    expect(transcript.locator("[data-role='assistant']").first).not_to_be_empty(timeout=20_000)
    # Screen readers hear each finished line once, whole, from the panel's live region.
    expect(page.locator("[data-voice-announce]")).to_have_text(re.compile(r"^\w+: .+"))
    expect(transcript.locator(".voice-line--tool-ok").first).to_be_visible()
    # The assistant's voice arrived as audio, not only as transcript text. Transcript
    # events lead the audio they describe, so wait for the played energy to show.
    wait_for(
        lambda: (
            page.evaluate(
                "() => document.querySelector('[data-voice-panel]').voiceSession.audioEnergy()"
            )
            > 0
        ),
        timeout=15,
        what="the assistant's audio to play",
    )

    [(session_id, status)] = sessions_on(site, "spoken")
    assert status == "active"
    event_types = {
        (direction, kind)
        for direction, kind in site.query(
            "SELECT direction, type FROM voice_voiceevent WHERE session_id = ?", session_id
        )
    }
    assert ("received", "response.function_call_arguments.done") in event_types
    assert ("sent", "conversation.item.create") in event_types
    assert ("received", "response.output_audio.delta") not in event_types
    [(tool_name, tool_status)] = site.query(
        "SELECT name, status FROM voice_toolcall WHERE session_id = ?", session_id
    )
    assert (tool_name, tool_status) == ("navigate_gallery", "succeeded")

    toggle.click()
    expect(toggle).to_have_text("Start voice")
    expect(page.locator(STATUS)).to_contain_text("Voice is off")
    wait_for(
        lambda: sessions_on(site, "spoken") == [(session_id, "ended")],
        timeout=15,
        what="the hang-up to end the session",
    )


def test_typed_command_opens_a_call_and_moves_the_picture(
    voice_site: LiveSite,  # noqa: F811
    launch_chromium: Callable[..., Any],  # noqa: F811
    silence: Path,  # noqa: F811
) -> None:
    site = voice_site
    browser = launch_chromium(wav=silence)
    expected = next_image_id(site, "typed")
    viewer = open_viewer(browser, site, "typed")
    page = open_panel(browser, site, "typed")

    # Typing with no call open opens one, then sends the command once it is up.
    page.get_by_label("Type a command").fill("next image")
    page.get_by_label("Type a command").press("Enter")
    transcript = page.locator("[data-transcript]")
    expect(transcript.locator("[data-role='user']").first).to_have_text(re.compile("next image"))
    expect(viewer.locator("#terminal-current")).to_have_attribute(
        "data-image-id", str(expected), timeout=30_000
    )
    expect(transcript.locator("[data-role='assistant']").first).not_to_be_empty(timeout=20_000)
    expect(page.locator("[data-voice-toggle]")).to_have_attribute("aria-pressed", "true")
    [(session_id, _status)] = sessions_on(site, "typed")
    sent = site.query(
        "SELECT payload FROM voice_voiceevent WHERE session_id = ? AND direction = 'sent' "
        "AND type = 'conversation.item.create'",
        session_id,
    )
    assert any("next image" in payload for (payload,) in sent)
    # The whole call is in the timeline, from its first event: the command went out as
    # the data channel opened, the engine's greeting came in after it.
    types = [
        kind
        for (kind,) in site.query(
            "SELECT type FROM voice_voiceevent WHERE session_id = ? ORDER BY seq", session_id
        )
    ]
    assert types[:3] == ["conversation.item.create", "response.create", "session.created"]
    page.locator("[data-voice-toggle]").click()
    expect(page.locator(STATUS)).to_contain_text("Voice is off")
    wait_for(
        lambda: sessions_on(site, "typed") == [(session_id, "ended")],
        timeout=15,
        what="the hang-up to end the session",
    )

    # Staff see the session and its event timeline in the admin.
    staff = logged_in_page(browser, site, STAFF)
    staff.goto(f"/admin/voice/voicesession/{session_id}/change/")
    expect(staff.locator("body")).to_contain_text("response.function_call_arguments.done")
    expect(staff.locator("body")).to_contain_text("navigate_gallery")
    expect(staff.locator("body")).to_contain_text("next image")


def test_denied_microphone_is_explained(
    voice_site: LiveSite,  # noqa: F811
    launch_chromium: Callable[..., Any],  # noqa: F811
) -> None:
    site = voice_site
    # No fake-UI flag and no granted permission: Chromium refuses the microphone.
    browser = launch_chromium(wav=None, fake_ui=False)
    page = browser.new_context(base_url=site.url).new_page()
    login_page(page, "controller")
    page.goto("/terminals/denied/")
    page.locator("[data-voice-toggle]").click()

    status = page.locator(STATUS)
    expect(status).to_contain_text("Voice error", timeout=15_000)
    expect(status).to_contain_text("Microphone access was denied")
    expect(status).to_contain_text("Allow the microphone")
    expect(page.locator("[data-voice-toggle]")).to_have_text("Start voice")
    # The microphone is asked first, so no voice session was started for nothing.
    assert sessions_on(site, "denied") == []


def test_mute_pressed_while_the_browser_asks_for_the_microphone_holds(
    voice_site: LiveSite,  # noqa: F811
    launch_chromium: Callable[..., Any],  # noqa: F811
    silence: Path,  # noqa: F811
) -> None:
    site = voice_site
    site.seed_terminal("hushed")
    browser = launch_chromium(wav=silence)
    page = logged_in_page(browser, site)
    # The time a person takes to answer the permission prompt.
    page.add_init_script(
        """
        const ask = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
        navigator.mediaDevices.getUserMedia = (constraints) =>
          new Promise((resolve) => setTimeout(resolve, 2000)).then(() => ask(constraints));
        """
    )
    page.goto("/terminals/hushed/")
    page.locator("[data-voice-toggle]").click()
    mute = page.locator("[data-voice-mute]")
    mute.click()
    expect(mute).to_have_attribute("aria-pressed", "true")
    expect(page.locator(STATUS)).to_contain_text("Listening", timeout=30_000)

    # Before, the button said muted while the microphone opened live.
    live = "document.querySelector('[data-voice-panel]').voiceSession.stream" + (
        ".getAudioTracks().filter((track) => track.enabled).length"
    )
    assert page.evaluate(live) == 0
    expect(mute).to_have_text("Unmute")
    mute.click()
    assert page.evaluate(live) == 1
    page.locator("[data-voice-toggle]").click()
    expect(mute).to_have_attribute("aria-pressed", "false")


def test_server_restart_is_survived(
    voice_site: LiveSite,  # noqa: F811
    launch_chromium: Callable[..., Any],  # noqa: F811
    silence: Path,  # noqa: F811
) -> None:
    site = voice_site
    browser = launch_chromium(wav=silence)
    page = open_panel(browser, site, "restart")
    page.locator("[data-voice-toggle]").click()
    status = page.locator(STATUS)
    expect(status).to_contain_text("Listening", timeout=20_000)
    [(first_session, _)] = sessions_on(site, "restart")

    site.stop()
    expect(status).to_contain_text("Reconnecting", timeout=15_000)
    site.start()
    expect(status).to_contain_text("Listening", timeout=60_000)
    expect(status).to_contain_text("Reconnected")

    # A fresh session on the restarted server, and it works. "Reconnected" may be the
    # mirror's, back at once with a server that restarts fast, while the call to the
    # dead engine is only given up once Chromium calls it disconnected (about 6 s
    # without answers to its consent checks) and the page's 4 s grace has passed.
    wait_for(
        lambda: len(sessions_on(site, "restart")) >= 2,
        timeout=30,
        what="a second voice session after the restart",
    )
    expected = next_image_id(site, "restart")
    page.get_by_label("Type a command").fill("next image")
    page.get_by_label("Type a command").press("Enter")
    wait_for(
        lambda: current_image_id(site, "restart") == expected,
        timeout=30,
        what="the typed command after the restart",
    )
    page.locator("[data-voice-toggle]").click()
    expect(status).to_contain_text("Voice is off")
    # The session of the dead call was ended by the panel's hang-up, not left open.
    wait_for(
        lambda: dict(sessions_on(site, "restart")).get(first_session) == "ended",
        timeout=20,
        what="the lost call's session to be ended",
    )
