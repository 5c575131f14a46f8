"""Slipway's blocks for container releases: the registry, a Docker host, an ECS service (imported only by the
releases that use them: Prefect builds each block class's schema when the class is defined)."""

from __future__ import annotations

from typing import ClassVar, Literal

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field, SecretStr, field_validator, model_validator


class RegistryBlock(Block):
    """A container registry that images are pushed to (by digest): a generic OCI registry or Amazon ECR.

    Example:
        ```python
        from blocks import RegistryBlock
        registry = RegistryBlock.load("default")
        ```
    """

    _block_type_name: ClassVar[str] = "Slipway Registry"
    _block_type_slug: ClassVar[str] = "slipway-registry"
    _description: ClassVar[str] = "OCI registry (optional username/password) or ECR (auth token from AWS credentials)."

    kind: Literal["oci", "ecr"] = Field(default="oci", title="Kind", description="oci: any registry v2; ecr: Amazon ECR.")
    url: str | None = Field(default=None, title="Registry", description="host[:port]; for ECR the account's registry is used when empty.")
    namespace: str = Field(default="", title="Namespace", description="Repository prefix, e.g. 'team' for team/APP.")
    username: str | None = Field(default=None, title="Username", description="OCI registries only.")
    password: SecretStr | None = Field(default=None, title="Password or token", description="OCI registries only.")
    credentials: AwsCredentials | None = Field(default=None, title="AWS credentials", description="ECR only.")

    @model_validator(mode="after")
    def ecr_needs_credentials_and_oci_needs_a_url(self) -> "RegistryBlock":
        if self.kind == "ecr" and self.credentials is None:
            raise ValueError("an ecr registry needs credentials (an aws-credentials block)")
        if self.kind == "oci" and not self.url:
            raise ValueError("an oci registry needs url (host[:port])")
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        return self


class DockerHostBlock(Block):
    """A Docker engine on this machine that runs releases as containers behind a Slipway-managed nginx.

    Containers use host networking and bind 127.0.0.1 on a port from ``container_ports``; each environment
    gets a stable port from ``stable_ports`` (recorded in the ledger) where nginx serves the live release.

    Example:
        ```python
        from blocks import DockerHostBlock
        host = DockerHostBlock.load("default")
        ```
    """

    _block_type_name: ClassVar[str] = "Slipway Docker Host"
    _block_type_slug: ClassVar[str] = "slipway-docker-host"
    _description: ClassVar[str] = "Docker engine, port ranges and proxy directory for blue/green container releases."

    engine_url: str | None = Field(default=None, title="Engine URL", description="e.g. unix:///var/run/docker.sock; empty: DOCKER_HOST or the local socket.")
    container_ports: str = Field(default="20000-20999", title="Container ports", description="Range the release containers bind on 127.0.0.1.")
    stable_ports: str = Field(default="18000-18099", title="Stable ports", description="Range nginx listens on, one port per app+environment.")
    proxy_root: str = Field(default="~/.slipway/proxy", title="Proxy directory", description="Where Slipway's nginx keeps its config and logs.")
    nginx_binary: str = Field(default="nginx", title="nginx", description="Path of the nginx binary.")
    health_timeout: float = Field(default=60, title="Health timeout", description="Seconds a new container has to answer its health path.")

    @field_validator("container_ports", "stable_ports")
    @classmethod
    def range_is_low_dash_high(cls, value: str) -> str:
        parse_port_range(value)
        return value


def parse_port_range(value: str) -> tuple[int, int]:
    try:
        low, high = (int(part) for part in value.split("-", 1))
    except ValueError:
        raise ValueError(f"{value!r} is not a port range like 20000-20999") from None
    if not (1024 <= low <= high <= 65535):
        raise ValueError(f"{value!r} must be within 1024-65535, low to high")
    return low, high


class EcsTargetBlock(Block):
    """An ECS cluster whose services run an app's environments.

    Example:
        ```python
        from blocks import EcsTargetBlock
        target = EcsTargetBlock.load("prod")
        ```
    """

    _block_type_name: ClassVar[str] = "Slipway ECS Target"
    _block_type_slug: ClassVar[str] = "slipway-ecs-target"
    _description: ClassVar[str] = "ECS cluster, service naming and the endpoint smoke checks are sent to."

    credentials: AwsCredentials = Field(title="AWS credentials", description="Credentials (and endpoint) for ECS.")
    region: str | None = Field(default=None, title="Region", description="Overrides the credentials' region.")
    cluster: str = Field(title="Cluster", description="ECS cluster name or ARN.")
    service_template: str = Field(default="{app}-{env}", title="Service name template", description="With {app} and {env}.")
    container_name: str = Field(default="app", title="Container name", description="The container in the task definition that runs the image.")
    endpoint_template: str | None = Field(
        default=None, title="Endpoint", description="Base URL smoke checks are sent to, with {app} and {env}, e.g. https://{env}.example.com."
    )
    wait_timeout: float = Field(default=600, title="Stability timeout", description="Seconds to wait for the service to become stable.")
