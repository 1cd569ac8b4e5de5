"""What the gallery's hot paths cost the database: how many statements, and that the
number does not grow with a terminal's images (they drive every navigation's fan-out,
the voice tool path and the gallery grid)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import connection
from django.test.utils import CaptureQueriesContext

from gallery import selectors, services
from gallery.models import Image, Terminal
from tests.gallery import state_check

pytestmark = pytest.mark.django_db

# terminal_state: one statement counts the current image's place, two bounded reads
# fetch its strip.
STATE_QUERIES = 3
# terminal_navigate: BEGIN, the locked terminal row, the target, UPDATE, COMMIT, then
# the state (rights cost nothing for an owner).
NAVIGATE_QUERIES = 5 + STATE_QUERIES


def _queries(run: Callable[[], Any]) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        run()
    return [query["sql"] for query in captured.captured_queries]


@pytest.mark.parametrize("images", [1, 12])
def test_terminal_state_costs_three_queries_however_many_images(
    images: int, make_terminal: Callable[..., Terminal]
) -> None:
    terminal = make_terminal(images=images)
    terminal = Terminal.objects.select_related("current_image").get(pk=terminal.pk)
    assert len(_queries(lambda: selectors.terminal_state(terminal=terminal))) == STATE_QUERIES


@pytest.mark.parametrize("action", ["next", "previous", "first", "last"])
def test_navigating_costs_the_same_few_queries_however_many_images(
    action: str, make_terminal: Callable[..., Terminal], owner: Any
) -> None:
    costs = []
    for slug, images in (("small", 3), ("large", 12)):
        terminal = make_terminal(slug=slug, images=images)
        services.terminal_navigate(
            terminal_id=terminal.pk, user=owner, action="position", position=2
        )

        def navigate(terminal: Terminal = terminal) -> None:
            services.terminal_navigate(terminal_id=terminal.pk, user=owner, action=action)

        costs.append(len(_queries(navigate)))
    assert costs == [NAVIGATE_QUERIES, NAVIGATE_QUERIES]


def test_positions_from_the_fewer_queries_match_a_count_of_the_shown_images(
    make_terminal: Callable[..., Terminal], make_image: Callable[..., Image], owner: Any
) -> None:
    terminal = make_terminal(images=5)
    make_image(terminal=terminal, status=Image.Status.FAILED)
    make_image(terminal=terminal)
    shown = list(selectors.terminal_images(terminal=terminal))
    for index, image in enumerate(shown):
        moved = services.terminal_navigate(
            terminal_id=terminal.pk, user=owner, action="goto", image_id=image.pk
        )
        state = selectors.terminal_state(terminal=moved)
        assert (state["image"]["position"], state["image"]["count"]) == (index + 1, len(shown))
        ids = [shown_image.pk for shown_image in shown]
        strip = state["neighbours"]
        assert [n["position"] for n in strip] == [ids.index(n["id"]) + 1 for n in strip]


def test_the_states_own_statements_select_what_terminal_images_does() -> None:
    """The state is read in hand-written SQL (gallery.selectors._strip_sql): with each
    image current in turn, shown or not, its place and strip match terminal_images."""
    terminal = state_check.build_mixed_terminals("mixed")
    assert Image.objects.filter(terminal=terminal).exclude(status=Image.Status.READY).exists()
    assert state_check.state_mismatches(terminal) == []


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's query plans")
def test_the_gallery_grid_count_reads_an_index_not_the_rows(
    make_terminal: Callable[..., Terminal],
) -> None:
    make_terminal(images=3)
    images = selectors.images_visible_to(user=AnonymousUser(), images=selectors.gallery_images())
    count_sql = _queries(images.count)[0]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {count_sql}")
        plan = " ".join(str(row[-1]) for row in cursor.fetchall())
    assert "USING COVERING INDEX" in plan, plan
