"""Gallery pages: parse the request, authorize, call a selector or service, render."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Page, Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods

from gallery import broadcast, selectors, services
from gallery.forms import STYLE_CHOICES, ImageCreateForm
from gallery.models import Image, Terminal

IMAGES_PER_PAGE = 24
MAX_QUERY_LENGTH = 200


def _search_query(request: HttpRequest) -> str:
    return " ".join(request.GET.get("q", "").split())[:MAX_QUERY_LENGTH]


def _page(request: HttpRequest, images: QuerySet[Image]) -> Page:
    # get_page turns a missing, malformed or out-of-range number into a valid page.
    return Paginator(images, IMAGES_PER_PAGE).get_page(request.GET.get("page"))


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    query = _search_query(request)
    images = selectors.images_visible_to(
        user=request.user, images=selectors.gallery_images(query=query)
    )
    return render(
        request,
        "gallery/index.html",
        {"page_obj": _page(request, images), "query": query},
    )


@require_GET
@login_required
def mine(request: HttpRequest) -> HttpResponse:
    query = _search_query(request)
    images = selectors.gallery_images(query=query, owner=request.user)
    return render(
        request,
        "gallery/mine.html",
        {"page_obj": _page(request, images), "query": query},
    )


def _viewable_image(request: HttpRequest, pk: int) -> Image:
    image = get_object_or_404(Image.objects.select_related("owner", "terminal", "source"), pk=pk)
    # Not found rather than forbidden: a private terminal's images should not be probed.
    if not selectors.image_can_view(user=request.user, image=image):
        raise Http404("No such image.")
    return image


def image_status_payload(image: Image) -> dict[str, Any]:
    return {
        "id": image.pk,
        "status": image.status,
        "progress": image.progress,
        "error": image.error,
        "title": str(image),
        "image_url": image.file.url if image.file else "",
        "thumbnail_url": image.thumbnail.url if image.thumbnail else "",
        "width": image.width,
        "height": image.height,
    }


@require_GET
def image_detail(request: HttpRequest, pk: int) -> HttpResponse:
    image = _viewable_image(request, pk)
    return render(
        request,
        "gallery/image_detail.html",
        {
            "image": image,
            "status": image_status_payload(image),
            "edits": image.edits.filter(status=Image.Status.READY).order_by("id")[:12],
        },
    )


@require_GET
@never_cache
def image_status(request: HttpRequest, pk: int) -> JsonResponse:
    """Polled by the image page while the picture is queued or generating. It reads the
    database, so it sees progress written by a worker in any process."""
    return JsonResponse(image_status_payload(_viewable_image(request, pk)))


def _create_initial(request: HttpRequest) -> dict[str, Any]:
    """Pre-fills the form from links like "Create a picture for this terminal" and "Try
    again": a terminal the user may not control, or an unknown style, is left out."""
    if request.method != "GET":
        return {}
    initial: dict[str, Any] = {}
    prompt = " ".join(request.GET.get("prompt", "").split())[: services.MAX_PROMPT_LENGTH]
    if prompt:
        initial["prompt"] = prompt
    style = request.GET.get("style", "")
    if style in {value for value, _label in STYLE_CHOICES}:
        initial["style"] = style
    slug = request.GET.get("terminal", "")[:50]
    if slug:
        terminal = selectors.terminals_controlled_by(user=request.user).filter(slug=slug).first()
        if terminal is not None:
            initial["terminal"] = terminal.pk
    return initial


@require_http_methods(["GET", "POST"])
@login_required
def image_create(request: HttpRequest) -> HttpResponse:
    form = ImageCreateForm(
        request.POST or None, user=request.user, initial=_create_initial(request)
    )
    if request.method == "POST" and form.is_valid():
        try:
            image = services.image_generate(
                owner=request.user,
                prompt=form.cleaned_data["prompt"],
                style=form.cleaned_data["style"],
                terminal=form.cleaned_data["terminal"],
            )
        except services.GalleryError as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, "Your picture is on its way.")
            return redirect(image)
    return render(
        request, "gallery/image_form.html", {"form": form}, status=400 if form.errors else 200
    )


@require_GET
def terminal_list(request: HttpRequest) -> HttpResponse:
    terminals = selectors.terminals_visible_to(user=request.user).select_related("owner")
    return render(request, "gallery/terminal_list.html", {"terminals": terminals})


def terminal_page_state(*, terminal: Terminal, can_control: bool) -> dict[str, Any]:
    """The socket's `terminal.state` as this user would receive it, so the page shows
    the picture before the socket connects and the script renders both the same way.
    The viewer count lives with the sockets; the page shows it once connected."""
    return {
        **selectors.terminal_state(terminal=terminal),
        "viewers": None,
        "can_control": can_control,
    }


@require_GET
def terminal_detail(request: HttpRequest, slug: str) -> HttpResponse:
    terminal = get_object_or_404(
        Terminal.objects.select_related("current_image", "owner"), slug=slug
    )
    # Both rights in at most one query, rather than one query for each.
    rights = selectors.terminal_rights(user=request.user, terminal=terminal)
    if not rights.can_watch:
        raise Http404("No such terminal.")
    state = terminal_page_state(terminal=terminal, can_control=rights.can_control)
    jobs = [
        broadcast.image_progress_payload(image)
        for image in selectors.terminal_images_in_progress(terminal=terminal)
    ]
    return render(
        request,
        "gallery/terminal_detail.html",
        {"terminal": terminal, "state": state, "can_control": rights.can_control, "jobs": jobs},
    )
