"""Slipway's blocks shared by many apps' policies: freeze windows and the Prometheus server canary metrics query
(imported only where used)."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from slipway.spec.schema import FreezeWindow


class FreezeWindowsBlock(Block):
    """Freeze windows shared by many apps (a company-wide weekend or holiday freeze): an environment names this block
    with ``freeze_block:`` in slipway.yaml, and its windows apply as if written in the spec.

    Example:
        ```python
        from blocks import FreezeWindowsBlock
        FreezeWindowsBlock(windows=[{"reason": "weekend", "cron": "0 18 * * FRI", "duration": "62h",
                                     "timezone": "Europe/Berlin"}]).save("company")
        windows = FreezeWindowsBlock.load("company").windows
        ```
    """

    _block_type_name: ClassVar[str] = "Slipway Freeze Windows"
    _block_type_slug: ClassVar[str] = "slipway-freeze-windows"
    _description: ClassVar[str] = "Times when environments that name this block take no release (recurring with cron, or dated)."

    windows: list[FreezeWindow] = Field(default_factory=list, title="Windows",
                                        description="Recurring (cron, duration, timezone) or dated (start, end), each with a reason.")


class PrometheusBlock(Block):
    """A Prometheus server that canaries are judged on: slipway.yaml's ``analysis.metrics`` entries with
    ``prometheus: {query, server: NAME}`` are read from the block named NAME (default ``default``). The URL lives
    here, with the operator, not in an app's repository.

    Example:
        ```python
        from blocks import PrometheusBlock
        PrometheusBlock(url="http://prometheus.internal:9090").save("default")
        url = PrometheusBlock.load("default").url
        ```
    """

    _block_type_name: ClassVar[str] = "Slipway Prometheus"
    _block_type_slug: ClassVar[str] = "slipway-prometheus"
    _description: ClassVar[str] = "A Prometheus HTTP API that canary analysis queries (analysis.metrics in slipway.yaml)."

    url: str = Field(title="URL", description="Base URL of the Prometheus HTTP API, e.g. http://prometheus:9090")
    token: SecretStr | None = Field(default=None, title="Bearer token", description="Sent as Authorization: Bearer, if the server needs one.")
    timeout_s: float = Field(default=10, gt=0, le=120, title="Timeout", description="Seconds per query.")

    @field_validator("url")
    @classmethod
    def http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")) or any(c.isspace() for c in value):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")
