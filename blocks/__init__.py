"""Prefect blocks: configuration and secrets only (no deploy logic).

AWS credentials reuse ``prefect_aws.AwsCredentials`` (a local endpoint goes in its
``aws_client_parameters.endpoint_url``). Register with ``prefect block register -m blocks``.
"""

from blocks.slipway_blocks import (
    ArtifactStoreBlock,
    DockerHostBlock,
    EcsTargetBlock,
    FreezeWindowsBlock,
    LambdaTargetBlock,
    PrometheusBlock,
    RegistryBlock,
    aws_clients,
    parse_port_range,
)

__all__ = ["ArtifactStoreBlock", "DockerHostBlock", "EcsTargetBlock", "FreezeWindowsBlock", "LambdaTargetBlock", "PrometheusBlock", "RegistryBlock", "aws_clients", "parse_port_range"]
