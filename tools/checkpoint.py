"""Checkpoints: written atomically, read without running pickled code.

A checkpoint is a dict with at least ``model`` (state dict), ``attr_names``, ``groups``
([name, kind, attr...] lists) and ``cfg`` (the full YAML text of the run), so a single file is
enough to rebuild the model for inference.
"""
from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from configs.errors import UserError


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that is missing, damaged or unsafe; the message says what to do."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` via a temp file + fsync + rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a writer killed with SIGKILL
        stale.unlink(missing_ok=True)
    return path


def load_checkpoint(path: str | Path, trusted: bool = False, map_location: str | torch.device = "cpu") -> dict:
    """Load with ``weights_only=True``; a file that needs arbitrary unpickling is refused unless
    ``trusted`` (RELOAD.TRUSTED) is set for a legacy file you trust."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with open(path, "rb") as f:  # torch.save writes a zip archive (legacy: a pickle, b"\x80" first)
        is_zip = zipfile.is_zipfile(f)
        f.seek(0)
        first = f.read(1)
    if not is_zip and first != b"\x80":
        raise CheckpointError(f"{path} is not a readable checkpoint (neither a torch archive nor a pickle)")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if not trusted:
            lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [""]
            why = next((line for line in lines if "GLOBAL" in line), lines[0])[:160]  # torch names the culprit there
            raise CheckpointError(
                f"{path} needs arbitrary code to unpickle (refused for safety: {why}); "
                "if you trust its origin, set RELOAD.TRUSTED True"
            ) from None
        return torch.load(path, map_location=map_location, weights_only=False)
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e)[:160]})") from None
