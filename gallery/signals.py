"""Rights changes reach the sockets that depend on them; a deleted image leaves the
terminals that showed it, and its files.

Terminal sockets cache their rights (watch, control) instead of asking the database on
every broadcast. These receivers tell them, after commit, when those rights may have
changed: a membership added, changed or removed, a terminal made private, given another
owner or deleted, a user gaining or losing staff status. Deactivated or deleted users
are handled by `artterminal.sockets`, which closes their sockets outright. Writes that
bypass signals (`QuerySet.update`) are caught by each socket's periodic re-check.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_delete, pre_save

from gallery import broadcast, selectors
from gallery.models import Image, Terminal, TerminalMembership

logger = logging.getLogger(__name__)

# Terminal fields that decide who may watch or drive it.
TERMINAL_ACCESS_FIELDS = ("is_public", "owner_id")
# User fields that decide rights on every terminal (deactivation closes the sockets).
USER_ACCESS_FIELDS = ("is_staff",)


def _changed_fields(sender: Any, instance: Any, fields: tuple[str, ...], **kwargs: Any) -> bool:
    """Whether a save is about to change any of `fields` (read before it runs)."""
    update_fields = kwargs.get("update_fields")
    if instance.pk is None or kwargs.get("raw"):
        return False
    if update_fields is not None and not {f.removesuffix("_id") for f in fields} & {
        f.removesuffix("_id") for f in update_fields
    }:
        return False
    stored = sender.objects.filter(pk=instance.pk).values(*fields).first()
    if stored is None:
        return False
    return any(stored[name] != getattr(instance, name) for name in fields)


def terminal_access_before_save(sender: Any, instance: Terminal, **kwargs: Any) -> None:
    instance._access_changed = _changed_fields(  # type: ignore[attr-defined]
        sender, instance, TERMINAL_ACCESS_FIELDS, **kwargs
    )


def terminal_access_after_save(sender: Any, instance: Terminal, **kwargs: Any) -> None:
    if getattr(instance, "_access_changed", False):
        instance._access_changed = False  # type: ignore[attr-defined]
        terminal_id = instance.pk
        transaction.on_commit(lambda: broadcast.terminal_access_changed(terminal_id=terminal_id))


def terminal_deleted(sender: Any, instance: Terminal, **kwargs: Any) -> None:
    terminal_id = instance.pk
    transaction.on_commit(lambda: broadcast.terminal_access_changed(terminal_id=terminal_id))


def membership_changed(sender: Any, instance: TerminalMembership, **kwargs: Any) -> None:
    user_id, terminal_id = instance.user_id, instance.terminal_id
    transaction.on_commit(
        lambda: broadcast.user_access_changed(user_id=user_id, terminal_id=terminal_id)
    )


def user_access_before_save(sender: Any, instance: Any, **kwargs: Any) -> None:
    instance._access_changed = _changed_fields(sender, instance, USER_ACCESS_FIELDS, **kwargs)


def user_access_after_save(sender: Any, instance: Any, **kwargs: Any) -> None:
    if getattr(instance, "_access_changed", False):
        instance._access_changed = False
        user_id = instance.pk
        transaction.on_commit(lambda: broadcast.user_access_changed(user_id=user_id))


def image_deleted(sender: Any, instance: Image, **kwargs: Any) -> None:
    """An image deleted (in the admin, or with its owner): a terminal that showed it
    moves on to a neighbour and tells its viewers, as a navigation does; its files go
    too, once the delete is committed, so the proxy stops serving them."""
    for terminal in Terminal.objects.select_for_update().filter(
        pk__in=getattr(instance, "_shown_on", ())
    ):
        terminal.current_image = (
            selectors.terminal_images(terminal=terminal).filter(id__gt=instance.pk).first()
            or selectors.terminal_images(terminal=terminal).filter(id__lt=instance.pk).last()
        )
        terminal.version += 1
        terminal.save(update_fields=["current_image", "version"])
        state = selectors.terminal_state(terminal=terminal)
        transaction.on_commit(
            partial(broadcast.terminal_state, terminal_id=terminal.pk, state=state)
        )
    files = [stored for stored in (instance.file, instance.thumbnail) if stored]
    if files:
        transaction.on_commit(lambda: _files_delete(files))


def image_deleting(sender: Any, instance: Image, **kwargs: Any) -> None:
    # Read before the delete nulls them (Terminal.current_image is SET_NULL).
    instance._shown_on = list(  # type: ignore[attr-defined]
        Terminal.objects.filter(current_image=instance).values_list("pk", flat=True)
    )


def _files_delete(files: list[Any]) -> None:
    for stored in files:
        try:
            stored.storage.delete(stored.name)
        except OSError:
            logger.warning("Deleting %s failed; it stays on disk", stored.name)


def connect_signals() -> None:
    """Called once from the app's `ready`."""
    user_model = get_user_model()
    pre_save.connect(terminal_access_before_save, sender=Terminal, dispatch_uid="access-t-pre")
    post_save.connect(terminal_access_after_save, sender=Terminal, dispatch_uid="access-t-post")
    post_delete.connect(terminal_deleted, sender=Terminal, dispatch_uid="access-t-delete")
    pre_delete.connect(image_deleting, sender=Image, dispatch_uid="image-deleting")
    post_delete.connect(image_deleted, sender=Image, dispatch_uid="image-deleted")
    post_save.connect(membership_changed, sender=TerminalMembership, dispatch_uid="access-m-save")
    post_delete.connect(
        membership_changed, sender=TerminalMembership, dispatch_uid="access-m-delete"
    )
    pre_save.connect(user_access_before_save, sender=user_model, dispatch_uid="access-u-pre")
    post_save.connect(user_access_after_save, sender=user_model, dispatch_uid="access-u-post")
