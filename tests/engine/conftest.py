"""Fixtures shared by the engine tests."""

from tests.engine.server import engine_server
from tests.engine.speech_report import pytest_terminal_summary

__all__ = ["engine_server", "pytest_terminal_summary"]
