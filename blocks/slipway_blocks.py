"""Slipway's own block types."""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field, field_validator

from slipway.aws import make_client


def aws_clients(credentials: AwsCredentials, *services: str, region: str | None = None, read_timeout: float = 60) -> list[Any]:
    """boto3 clients from an AwsCredentials block: its session, endpoint and client parameters, our retries."""
    from botocore.exceptions import BotoCoreError, ClientError

    from slipway.aws import translate
    from slipway.errors import CredentialsError

    try:
        session = credentials.get_boto3_session()
    except (BotoCoreError, ClientError) as exc:  # unknown profile, refused assume-role
        raise translate(exc, CredentialsError, "open an AWS session") from exc
    params = credentials.aws_client_parameters.get_params_override()
    params.pop("config", None)  # botocore retries/timeouts are Slipway's (slipway.aws.client_config)
    endpoint = params.pop("endpoint_url", None)
    return [
        make_client(session, svc, region=region or credentials.region_name, endpoint_url=endpoint, read_timeout=read_timeout, extra=params)
        for svc in services
    ]


class ArtifactStoreBlock(Block):
    """Where artifacts, provenance manifests and the ledger live (an S3 bucket).

    Example:
        ```python
        from blocks import ArtifactStoreBlock
        store = ArtifactStoreBlock.load("default")
        ```
    """

    _block_type_name: ClassVar[str] = "Slipway Artifact Store"
    _block_type_slug: ClassVar[str] = "slipway-artifact-store"
    _description: ClassVar[str] = "S3 bucket holding Slipway's immutable artifacts, their provenance and the release ledger."

    bucket: str = Field(title="Bucket", description="S3 bucket name (versioning recommended).")
    prefix: str = Field(default="slipway", title="Key prefix", description="Prefix for every key Slipway writes.")
    kms_key_id: str | None = Field(default=None, title="KMS key", description="Optional KMS key id/ARN for server-side encryption.")
    credentials: AwsCredentials = Field(title="AWS credentials", description="Credentials (and endpoint) used to reach the bucket.")

    @field_validator("bucket")
    @classmethod
    def bucket_name_is_valid(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value):
            raise ValueError(f"{value!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, dots, dashes)")
        return value


class LambdaTargetBlock(Block):
    """How to reach and shape the Lambda functions of one environment (or of all, as 'default').

    Example:
        ```python
        from blocks import LambdaTargetBlock
        target = LambdaTargetBlock.load("prod")
        ```
    """

    _block_type_name: ClassVar[str] = "Slipway Lambda Target"
    _block_type_slug: ClassVar[str] = "slipway-lambda-target"
    _description: ClassVar[str] = "AWS account, region and execution role for an environment's Lambda functions."

    credentials: AwsCredentials = Field(title="AWS credentials", description="Credentials (and endpoint) for Lambda in this environment.")
    region: str | None = Field(default=None, title="Region", description="Overrides the credentials' region.")
    role_arn: str = Field(title="Execution role ARN", description="IAM role the functions run as.")
    function_name_template: str = Field(
        default="{app}-{env}", title="Function name template", description="Python format string with {app} and {env}."
    )

    @field_validator("role_arn")
    @classmethod
    def role_arn_is_an_iam_role(cls, value: str) -> str:
        if not value.startswith("arn:") or ":role/" not in value:
            raise ValueError(f"{value!r} is not an IAM role ARN; expected arn:aws:iam::ACCOUNT:role/NAME")
        return value

    @field_validator("function_name_template")
    @classmethod
    def template_names_app_and_env(cls, value: str) -> str:
        try:
            value.format(app="a", env="e")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"function_name_template {value!r} may only use {{app}} and {{env}}") from exc
        return value
