"""Where Slipway keeps its state on this machine: one directory, ``~/.slipway`` or ``$SLIPWAY_HOME``."""

from __future__ import annotations

import os
from pathlib import Path


def slipway_home() -> Path:
    """The state directory (not created here)."""
    return Path(os.environ.get("SLIPWAY_HOME") or Path.home() / ".slipway").expanduser()


def cache_dir(*parts: str) -> Path:
    """A cache sub-directory under the state directory, created on demand."""
    path = slipway_home().joinpath("cache", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
