"""Prefect blocks: configuration and secrets only (no deploy logic).

AWS credentials reuse ``prefect_aws.AwsCredentials`` (a local endpoint goes in its
``aws_client_parameters.endpoint_url``). Register with ``prefect block register -m blocks``.

Each name is imported from its module on first use: Prefect computes a block class's schema when the class is
defined, so a Lambda release does not pay for the container and policy blocks.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ArtifactStoreBlock": "blocks.slipway_blocks",
    "LambdaTargetBlock": "blocks.slipway_blocks",
    "aws_clients": "blocks.slipway_blocks",
    "DockerHostBlock": "blocks.container_blocks",
    "EcsTargetBlock": "blocks.container_blocks",
    "RegistryBlock": "blocks.container_blocks",
    "parse_port_range": "blocks.container_blocks",
    "FreezeWindowsBlock": "blocks.policy_blocks",
    "PrometheusBlock": "blocks.policy_blocks",
}

__all__ = ["ArtifactStoreBlock", "DockerHostBlock", "EcsTargetBlock", "FreezeWindowsBlock", "LambdaTargetBlock", "PrometheusBlock",
           "RegistryBlock", "aws_clients", "parse_port_range"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'blocks' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:  # `prefect block register -m blocks` lists the module's members
    return sorted([*globals(), *__all__])
