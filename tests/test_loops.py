"""One object per running event loop."""

from __future__ import annotations

import asyncio

from artterminal.loops import per_loop


def test_each_loop_gets_its_own_and_keeps_it() -> None:
    get = per_loop(object)

    async def twice() -> tuple[object, object]:
        return get(), get()

    first = asyncio.run(twice())
    second = asyncio.run(twice())
    assert first[0] is first[1]
    assert second[0] is second[1]
    assert first[0] is not second[0]
