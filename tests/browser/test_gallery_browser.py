"""Making a picture in real Chromium: the form, the image page that follows the job
through the database, and the terminal whose viewers see it queued."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from tests.browser.conftest import LiveSite

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect

pytestmark = pytest.mark.browser


def article_text(page: Any) -> str:
    return str(page.locator("article.image-page").inner_text())


def fresh_load(page: Any) -> Any:
    """The same page as a reload in another tab would show it."""
    other = page.context.new_page()
    other.goto(page.url)
    return other


def test_created_picture_is_followed_from_queued_to_failed_and_seen_by_viewers(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("workshop", images=1)
    viewer = new_page()
    viewer.goto(terminal.path)
    expect(viewer.locator("#terminal")).to_have_attribute("data-connection", "open")
    maker = new_page("controller")

    maker.goto("/images/new/")
    maker.get_by_label("Describe the picture").fill("a lighthouse on a cliff in a storm")
    maker.get_by_label("Show it on a terminal").select_option(label="Workshop")
    maker.get_by_role("button", name="Create picture").click()

    expect(maker).to_have_url(re.compile(r"/images/\d+/$"))
    image_id = int(maker.url.rstrip("/").rsplit("/", 1)[1])
    expect(maker.locator("#image-status-text")).to_contain_text("Queued")
    job = viewer.locator(f'[data-job-id="{image_id}"]')
    expect(job).to_contain_text("Queued “a lighthouse on a cliff in a storm” 0%")
    # A viewer who arrives later sees the job from the page itself.
    late = new_page()
    late.goto(terminal.path)
    expect(late.locator(f'[data-job-id="{image_id}"]')).to_contain_text(
        "Queued “a lighthouse on a cliff in a storm” 0%"
    )
    # Read out once as it starts (the list itself is not live: progress rewrites it);
    # a page that opens on it says nothing.
    news = viewer.locator("#terminal-jobs-announce")
    expect(news).to_have_text("Queued: “a lighthouse on a cliff in a storm”.")
    expect(late.locator("#terminal-jobs-announce")).to_have_text("")

    with sqlite3.connect(live_site.database, timeout=20) as connection:
        connection.execute(
            "UPDATE gallery_image SET status = 'generating', progress = 60 WHERE id = ?",
            (image_id,),
        )
    expect(maker.locator("#image-status-text")).to_have_text("Generating… 60%")
    with sqlite3.connect(live_site.database, timeout=20) as connection:
        connection.execute(
            "UPDATE gallery_image SET status = 'failed', error = ? WHERE id = ?",
            ("The generator ran out of time.", image_id),
        )
    expect(maker.locator("#image-status-text")).to_have_text(
        "This picture could not be made: The generator ran out of time."
    )
    expect(maker.locator("#image-status-badge")).to_have_text("Failed")
    # The finished page is the one a reload shows, with the owner's way to try again.
    assert article_text(maker) == article_text(fresh_load(maker))
    retry = maker.get_by_role("link", name="Try again")
    retry.click()
    expect(maker.get_by_label("Describe the picture")).to_have_value(
        "a lighthouse on a cliff in a storm"
    )
    expect(maker.get_by_label("Show it on a terminal")).to_have_value(str(terminal.id))


def test_image_page_shows_the_picture_once_the_worker_stored_it(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("darkroom", images=1)
    maker = new_page("controller")
    maker.goto("/images/new/")
    maker.get_by_label("Describe the picture").fill("an orchard in spring")
    maker.get_by_role("button", name="Create picture").click()
    expect(maker).to_have_url(re.compile(r"/images/\d+/$"))
    image_id = int(maker.url.rstrip("/").rsplit("/", 1)[1])
    maker.evaluate("window.sameDocument = true")

    # What a worker in another process leaves behind: a stored file and a ready row.
    with sqlite3.connect(live_site.database, timeout=20) as connection:
        connection.execute(
            "UPDATE gallery_image SET status = 'ready', progress = 100, title = 'Orchard', "
            "description = 'Rows of apple trees in white blossom.', width = 320, height = 240, "
            "file = (SELECT file FROM gallery_image WHERE id = ?), "
            "thumbnail = (SELECT thumbnail FROM gallery_image WHERE id = ?) WHERE id = ?",
            (terminal.image_ids[0], terminal.image_ids[0], image_id),
        )

    picture = maker.locator("img.image-page__picture")
    expect(picture).to_have_attribute("alt", "Orchard")
    expect(picture).to_have_attribute("src", re.compile(r"/media/images/.+\.png$"))
    assert maker.evaluate("window.sameDocument") is True
    assert maker.evaluate("document.querySelector('img.image-page__picture').naturalWidth") > 0
    # Everything a finished picture has that a pending one did not, without a reload.
    expect(maker.get_by_role("heading", level=1)).to_have_text("Orchard")
    expect(maker.locator(".image-page__description")).to_have_text(
        "Rows of apple trees in white blossom."
    )
    expect(maker.locator(".facts")).to_contain_text("320 × 240 px")
    expect(maker.get_by_role("link", name="Download")).to_be_visible()
    expect(maker).to_have_title("Orchard · Art Terminal")
    expect(maker.locator("#image-announcement")).to_have_text("The picture is ready.")
    fresh = fresh_load(maker)
    assert article_text(maker) == article_text(fresh)
    assert maker.title() == fresh.title()
    assert maker.evaluate("window.sameDocument") is True


def test_image_page_says_when_it_cannot_hear_the_server(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    maker = new_page("controller")
    maker.goto("/images/new/")
    maker.get_by_label("Describe the picture").fill("a lantern in the fog")
    maker.get_by_role("button", name="Create picture").click()
    expect(maker).to_have_url(re.compile(r"/images/\d+/$"))
    status = maker.locator("#image-status-text")
    expect(status).to_contain_text("Queued")

    # The status answers stop (a dropped connection): the live region says so, rather
    # than leave a percentage that looks stuck.
    maker.route("**/status/", lambda route: route.abort())
    expect(status).to_contain_text("Connection lost — retrying…", timeout=10_000)
    maker.unroute("**/status/")
    expect(status).not_to_contain_text("Connection lost", timeout=15_000)
    expect(status).to_contain_text("Queued")


def test_a_failed_job_is_read_out_once_and_dismissed_from_the_keyboard(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("kiln", images=1)
    viewer = new_page()
    sockets: list[Any] = []

    def relay(socket: Any) -> None:
        socket.connect_to_server()  # the real server, plus what the test adds
        sockets.append(socket)

    viewer.route_web_socket(f"**/ws/terminals/{terminal.slug}/", relay)
    viewer.goto(terminal.path)
    expect(viewer.locator("#terminal")).to_have_attribute("data-connection", "open")
    news = viewer.locator("#terminal-jobs-announce")
    job = {"id": 999_001, "status": "queued", "progress": 0, "prompt": "a vase", "title": ""}

    def progress(**changes: Any) -> None:
        sockets[-1].send(json.dumps({"type": "image.progress", "image": {**job, **changes}}))

    progress()
    expect(news).to_have_text("Queued: “a vase”.")
    for percent in (20, 40, 60):  # progress is not read out
        progress(status="generating", progress=percent)
    expect(viewer.locator('[data-job-id="999001"]')).to_contain_text("60%")
    expect(news).to_have_text("Queued: “a vase”.")
    progress(status="failed", error="The kiln cracked.")
    expect(news).to_have_text("Could not make “a vase”.")

    dismiss = viewer.get_by_role("button", name="Dismiss")
    dismiss.focus()
    viewer.keyboard.press("Enter")
    expect(viewer.locator('[data-job-id="999001"]')).to_have_count(0)
    # Not dropped to the top of the page: the focus stays in the section.
    expect(viewer.locator("#jobs-title")).to_be_focused()


def test_keyboard_focus_in_a_pending_image_page_survives_the_finished_page_swap(
    live_site: LiveSite, new_page: Callable[..., Any]
) -> None:
    terminal = live_site.seed_terminal("slow-kiln", images=2)
    image_id = terminal.image_ids[1]
    with sqlite3.connect(live_site.database, timeout=20) as connection:
        connection.execute(
            "UPDATE gallery_image SET status = 'generating', progress = 30 WHERE id = ?",
            (image_id,),
        )
    page = new_page()
    page.goto(f"/images/{image_id}/")
    expect(page.locator("#image-status-text")).to_contain_text("Generating")
    # A keyboard user waiting on the page rests on a link of the article (its terminal).
    link = page.locator("article.image-page").get_by_role("link", name="Slow Kiln")
    link.focus()
    expect(link).to_be_focused()

    with sqlite3.connect(live_site.database, timeout=20) as connection:
        connection.execute(
            "UPDATE gallery_image SET status = 'ready', progress = 100 WHERE id = ?", (image_id,)
        )
    expect(page.locator("#image-announcement")).to_have_text("The picture is ready.")

    # The whole article is replaced: the same link in the new one takes the focus,
    # rather than the top of the page.
    expect(page.locator("article.image-page").get_by_role("link", name="Slow Kiln")).to_be_focused()
