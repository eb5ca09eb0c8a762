"""One base class for 'the user's input is wrong': run.py prints such errors as one line, exit 2.

Every module that reports a user mistake (a config typo, a bad label cell, a missing weight file,
an unreadable video) raises a subclass of ``UserError``; anything else is a bug and keeps its
traceback. The module imports nothing, so any layer of the project can use it without a cycle.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; ``str()`` names the thing and the fix in one line."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """What run.py reports as one line: every ``UserError`` plus MemoryError (CUDA OOM hints)."""
    return (UserError, MemoryError)
