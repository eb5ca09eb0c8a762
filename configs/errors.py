"""The user-error types, on the ground floor: every layer (configs, dataset, models, losses, tools, cctv)
raises them without importing anything above it.

A module that reports a user mistake (a config typo, a bad label cell, a missing weight file, an
unreadable video) raises a subclass of ``UserError``; run.py prints it as one line and exits 2.
Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; ``str()`` names the thing and the fix in one line."""


class ConfigError(UserError, ValueError):
    """A configuration mistake; the message names the key and the fix."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """What run.py reports as one line: every ``UserError`` plus MemoryError (CUDA OOM hints)."""
    return (UserError, MemoryError)
