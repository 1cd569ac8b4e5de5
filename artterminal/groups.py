"""Channel-layer group names: built here from database ids, never from raw input.

Channels allows ASCII letters, digits, hyphens, underscores and periods, under 100 chars.
"""


def terminal_group_name(terminal_id: int) -> str:
    return f"terminal-{int(terminal_id)}"


def voice_session_group_name(session_id: int) -> str:
    return f"voice-session-{int(session_id)}"


def user_group_name(user_id: int) -> str:
    """Every socket of one user, so logout or deactivation can close them all."""
    return f"user-{int(user_id)}"
