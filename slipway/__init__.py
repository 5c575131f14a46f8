"""Slipway's domain logic. No Prefect imports anywhere in this package (tests/unit/test_layering.py)."""

__version__ = "0.1.0"
BUILDER_VERSION = f"slipway-{__version__}/lambda-zip-1"
