"""The user-error types, on the ground floor: every layer (configs, dataset, models, losses, tools, cctv)
raises them without importing anything above it.

A module that reports a user mistake (a config typo, a bad label cell, a missing weight file, an
unreadable video) raises a subclass of ``UserError``; run.py prints it as one line and exits 2.
Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Callable


class UserError(Exception):
    """A mistake in the user's input; ``str()`` names the thing and the fix in one line."""


class ConfigError(UserError, ValueError):
    """A configuration mistake; the message names the key and the fix."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """What run.py reports as one line: every ``UserError`` plus MemoryError (CUDA OOM hints)."""
    return (UserError, MemoryError)


def exit_code_of(main: Callable[[], Any]) -> int:
    """Run a command's ``main`` the way every command line of the project ends: a user mistake is one line on
    stderr and exit code 2, Ctrl-C is exit code 130, anything else (a bug) keeps its traceback."""
    try:
        rc = main()
    except KeyboardInterrupt as e:
        print(f"\ninterrupted: {e}" if str(e) else "\ninterrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not isinstance(e, user_error_types()):
            raise
        logging.getLogger("run").debug("details", exc_info=True)
        print(f"error: {e}" if str(e) else f"error: {type(e).__name__}", file=sys.stderr)
        return 2
    return rc if isinstance(rc, int) else 0
