"""Staff views of images and terminals, with previews and a way to retry generation."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.widgets import ForeignKeyRawIdWidget
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from gallery import services
from gallery.models import Image, Terminal, TerminalMembership

# Sizes come from a stylesheet: the site's Content-Security-Policy refuses inline styles.
ADMIN_MEDIA_CSS = {"all": ("css/admin.css",)}


def _preview(image: Image | None, *, size: str) -> str:
    if image is None or not image.thumbnail:
        return "—"
    return format_html(
        '<img class="gallery-preview gallery-preview--{}" src="{}" alt="{}">',
        size,
        image.thumbnail.url,
        str(image),
    )


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = (
        "thumbnail_preview",
        "__str__",
        "owner",
        "status",
        "provider",
        "terminal",
        "created_at",
    )
    list_display_links = ("thumbnail_preview", "__str__")
    # Owners of images only, not every account on the site.
    list_filter = ("status", "provider", ("owner", admin.RelatedOnlyFieldListFilter))
    search_fields = ("prompt", "title")
    list_select_related = ("owner", "terminal")
    date_hierarchy = "created_at"
    raw_id_fields = ("owner", "terminal", "source")
    readonly_fields = ("picture_preview", "task_id", "attempts", "created_at", "updated_at")
    actions = ("regenerate",)

    class Media:
        css = ADMIN_MEDIA_CSS

    fieldsets = (
        (None, {"fields": ("picture_preview", "title", "prompt", "style", "description")}),
        ("Where it belongs", {"fields": ("owner", "terminal", "source")}),
        (
            "Generation",
            {
                "fields": (
                    "provider",
                    "seed",
                    "status",
                    "progress",
                    "error",
                    "task_id",
                    "attempts",
                )
            },
        ),
        ("Files", {"fields": ("file", "thumbnail", "width", "height")}),
        ("Dates", {"fields": ("created_at", "updated_at")}),
    )

    @admin.display(description="Preview")
    def thumbnail_preview(self, image: Image) -> str:
        return _preview(image, size="small")

    @admin.display(description="Picture")
    def picture_preview(self, image: Image) -> str:
        if not image.file:
            return "—"
        return format_html(
            '<img class="gallery-preview gallery-preview--full" src="{}" alt="{}">',
            image.file.url,
            str(image),
        )

    # Each picture drawn upstream is paid for: viewing images is not enough.
    @admin.action(description="Regenerate the selected failed images", permissions=["change"])
    def regenerate(self, request: HttpRequest, queryset: QuerySet[Image]) -> None:
        count = skipped = 0
        for image in queryset:
            try:
                services.image_regenerate(image=image)
            except services.InvalidRequest:
                skipped += 1
            else:
                count += 1
        if count or not skipped:
            self.message_user(
                request,
                f"Queued {count} image{'s' if count != 1 else ''} again.",
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                f"Left {skipped} image{'s' if skipped != 1 else ''} alone: only failed "
                "images can be regenerated.",
                messages.WARNING,
            )


class _MemberRawIdWidget(ForeignKeyRawIdWidget):
    """Django's raw-id widget for a membership's user, labelled from the user its row
    already read instead of one query a row to read it again."""

    member: Any = None

    def label_and_url_for_value(self, value: Any) -> tuple[str, str]:
        member = self.member
        if member is None or str(member.pk) != str(value):
            # A new row, or a value typed in a form sent back with errors.
            return super().label_and_url_for_value(value)
        opts = member._meta
        try:
            url = reverse(
                f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_change",
                args=(member.pk,),
            )
        except NoReverseMatch:  # as Django's: no admin for users, no link
            url = ""
        return Truncator(member).words(14), url


class _MembershipForm(forms.ModelForm):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        widget = self.fields["user"].widget
        if isinstance(widget, _MemberRawIdWidget) and self.instance.user_id is not None:
            widget.member = self.instance.user  # loaded with the row (get_queryset)


class TerminalMembershipInline(admin.TabularInline):
    model = TerminalMembership
    form = _MembershipForm
    extra = 1
    raw_id_fields = ("user",)
    fields = ("user", "role")

    def get_queryset(self, request: HttpRequest) -> QuerySet[TerminalMembership]:
        # Each row prints its membership ("user · terminal (role)") and labels its user:
        # both in the one query.
        return super().get_queryset(request).select_related("user", "terminal")

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "user":
            kwargs["widget"] = _MemberRawIdWidget(
                db_field.remote_field, self.admin_site, using=kwargs.get("using")
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(Terminal)
class TerminalAdmin(admin.ModelAdmin):
    list_display = ("current_preview", "name", "slug", "owner", "is_public", "version")
    list_display_links = ("current_preview", "name")
    list_filter = ("is_public",)
    search_fields = ("name", "slug")
    list_select_related = ("owner", "current_image")
    prepopulated_fields = {"slug": ("name",)}
    raw_id_fields = ("owner",)
    # What a terminal shows changes only through navigation, which bumps the version
    # and tells every viewer; an edit here would leave them showing a stale picture.
    readonly_fields = ("current_preview", "current_image", "version", "created_at")
    fields = (
        "name",
        "slug",
        "owner",
        "is_public",
        "current_preview",
        "current_image",
        "version",
        "created_at",
    )
    inlines = (TerminalMembershipInline,)

    class Media:
        css = ADMIN_MEDIA_CSS

    @admin.display(description="Now showing")
    def current_preview(self, terminal: Terminal) -> str:
        return _preview(terminal.current_image, size="medium")


@admin.register(TerminalMembership)
class TerminalMembershipAdmin(admin.ModelAdmin):
    list_display = ("terminal", "user", "role")
    list_filter = ("role", "terminal")
    search_fields = ("terminal__name", "user__username")
    list_select_related = ("terminal", "user")
    raw_id_fields = ("terminal", "user")
