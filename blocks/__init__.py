"""Prefect blocks: configuration and secrets only (no deploy logic).

AWS credentials reuse ``prefect_aws.AwsCredentials`` (a local endpoint goes in its
``aws_client_parameters.endpoint_url``). Register with ``prefect block register -m blocks``.
"""

from blocks.slipway_blocks import ArtifactStoreBlock, LambdaTargetBlock, aws_clients

__all__ = ["ArtifactStoreBlock", "LambdaTargetBlock", "aws_clients"]
