"""Middleware of the site's own."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse


class SyncMiddlewareStack:
    """Innermost in MIDDLEWARE: makes Django run the whole stack in one thread.

    Django's middleware is synchronous code with async adapters. Under ASGI each
    middleware's request and response halves then run as separate hops between the
    event loop and a worker thread: about sixteen a request, most of the cost of a
    small view (make bench --only token). A middleware that can only be synchronous,
    innermost, makes Django build every outer one synchronously too: a request crosses
    to a worker thread once, and back to the loop once to reach its view, which is
    run the way it is written (async views on the loop, sync views in the thread).
    """

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)
