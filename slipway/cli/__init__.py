"""The ``slipway`` command (``main``)."""

from slipway.cli.main import main

__all__ = ["main"]
