"""The gallery: generated images, and the terminals that show them."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.urls import reverse


class Image(models.Model):
    """One generated picture. It exists from the moment it is asked for, so a queued,
    generating or failed job is always visible rather than a silent gap."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        GENERATING = "generating", "Generating"
        READY = "ready", "Ready"
        FAILED = "failed", "Failed"

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="images"
    )
    # The terminal the image was made for; its collection is what the terminal shows.
    terminal = models.ForeignKey(
        "Terminal", null=True, blank=True, on_delete=models.SET_NULL, related_name="images"
    )
    # An edit ("make it snowy") is a new image that remembers its source.
    source = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="edits"
    )
    prompt = models.TextField(max_length=1000)
    style = models.CharField(max_length=40, blank=True)
    title = models.CharField(max_length=120, blank=True)
    description = models.TextField(blank=True)
    provider = models.CharField(max_length=20)
    seed = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    file = models.ImageField(upload_to="images/%Y/%m/", blank=True)
    thumbnail = models.ImageField(upload_to="thumbnails/%Y/%m/", blank=True)
    width = models.PositiveIntegerField(null=True, blank=True)
    height = models.PositiveIntegerField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # A terminal's images in display order, and their positions and counts.
            models.Index(fields=["terminal", "status", "id"]),
            # The gallery grid: ready images in `ordering`, read a page at a time.
            models.Index(fields=["status", "-created_at", "-id"]),
            # Covers the grid's count, which filters on both (`images_visible_to`).
            models.Index(fields=["status", "terminal"]),
        ]

    def __str__(self) -> str:
        return self.title or self.prompt[:60]

    def get_absolute_url(self) -> str:
        return reverse("gallery:image-detail", kwargs={"pk": self.pk})

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY


class Terminal(models.Model):
    """A shared display of a collection of images, watched by many at once."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=80)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="owned_terminals"
    )
    is_public = models.BooleanField(
        default=True, help_text="Anyone may watch a public terminal, even without logging in."
    )
    current_image = models.ForeignKey(
        Image, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Bumped on every change of what the terminal shows, so viewers can detect gaps.
    version = models.PositiveBigIntegerField(default=0)
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="TerminalMembership", related_name="terminals"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("gallery:terminal-detail", kwargs={"slug": self.slug})


class TerminalMembership(models.Model):
    class Role(models.TextChoices):
        VIEWER = "viewer", "Viewer"
        CONTROLLER = "controller", "Controller"

    terminal = models.ForeignKey(Terminal, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="terminal_memberships"
    )
    role = models.CharField(max_length=12, choices=Role.choices, default=Role.VIEWER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["terminal", "user"], name="one_membership_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} · {self.terminal} ({self.role})"
