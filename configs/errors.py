"""The configuration error type (its own module: losses and tools raise it without importing the loader)."""
from __future__ import annotations

from tools.errors import UserError


class ConfigError(UserError, ValueError):
    """A configuration mistake; the message names the key and the fix."""
