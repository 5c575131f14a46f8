"""Save the blocks that point at the embedded local stack (called by ``slipway local up``)."""

from __future__ import annotations

from prefect_aws import AwsCredentials
from prefect_aws.client_parameters import AwsClientParameters

import shutil

from blocks import ArtifactStoreBlock, DockerHostBlock, LambdaTargetBlock, RegistryBlock

LOCAL_CREDENTIALS = "slipway-local"


def save_local_blocks(
    endpoint: str, bucket: str, role_arn: str, region: str = "us-east-1", *, registry: str | None = None, proxy_root: str | None = None,
    health_timeout: float = 60, stable_ports: str | None = None, container_ports: str | None = None,
) -> list[str]:
    """AwsCredentials ``slipway-local`` (endpoint = the local AWS), artifact store ``default`` and Lambda
    target ``default``. Overwrites earlier local blocks of the same names; returns what was saved. ``stable_ports`` /
    ``container_ports``: the Docker host's port ranges, when not the block's defaults (a second stack on one machine)."""
    creds = AwsCredentials(
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # moto accepts any key; not a secret
        region_name=region,
        aws_client_parameters=AwsClientParameters(endpoint_url=endpoint),
    )
    creds.save(LOCAL_CREDENTIALS, overwrite=True)
    ArtifactStoreBlock(bucket=bucket, prefix="slipway", credentials=creds).save("default", overwrite=True)
    # the local AWS records metrics as invokes happen, at one-second resolution: no delay, 1 s periods
    LambdaTargetBlock(credentials=creds, region=region, role_arn=role_arn, metrics_period_s=1, metrics_delay_s=0).save("default", overwrite=True)
    saved = [f"aws-credentials/{LOCAL_CREDENTIALS}", "slipway-artifact-store/default", "slipway-lambda-target/default"]
    if registry and proxy_root:  # container releases: only when a Docker engine is there
        RegistryBlock(kind="oci", url=registry).save("default", overwrite=True)
        DockerHostBlock(
            proxy_root=proxy_root, nginx_binary=shutil.which("nginx") or "/usr/sbin/nginx", health_timeout=health_timeout,
            **{k: v for k, v in (("stable_ports", stable_ports), ("container_ports", container_ports)) if v},
        ).save("default", overwrite=True)
        saved += ["slipway-registry/default", "slipway-docker-host/default"]
    return saved
