"""Fixtures shared by the engine tests."""

from tests.engine.server import engine_server

__all__ = ["engine_server"]
