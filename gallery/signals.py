"""Rights changes reach the sockets that depend on them.

Terminal sockets cache their rights (watch, control) instead of asking the database on
every broadcast. These receivers tell them, after commit, when those rights may have
changed: a membership added, changed or removed, a terminal made private, given another
owner or deleted, a user gaining or losing staff status. Deactivated or deleted users
are handled by `artterminal.sockets`, which closes their sockets outright. Writes that
bypass signals (`QuerySet.update`) are caught by each socket's periodic re-check.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_save

from gallery import broadcast
from gallery.models import Terminal, TerminalMembership

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


def connect_signals() -> None:
    """Called once from the app's `ready`."""
    user_model = get_user_model()
    pre_save.connect(terminal_access_before_save, sender=Terminal, dispatch_uid="access-t-pre")
    post_save.connect(terminal_access_after_save, sender=Terminal, dispatch_uid="access-t-post")
    post_delete.connect(terminal_deleted, sender=Terminal, dispatch_uid="access-t-delete")
    post_save.connect(membership_changed, sender=TerminalMembership, dispatch_uid="access-m-save")
    post_delete.connect(
        membership_changed, sender=TerminalMembership, dispatch_uid="access-m-delete"
    )
    pre_save.connect(user_access_before_save, sender=user_model, dispatch_uid="access-u-pre")
    post_save.connect(user_access_after_save, sender=user_model, dispatch_uid="access-u-post")
