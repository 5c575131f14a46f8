"""Slipway's own block types every release needs: the artifact store, a Lambda target, and the AWS clients made from
credentials blocks. The others are in container_blocks.py and policy_blocks.py."""

from __future__ import annotations

from typing import Any, ClassVar

from prefect.blocks.core import Block
from prefect_aws import AwsCredentials
from pydantic import Field, SecretStr, field_validator

from slipway.core.aws import make_client


def aws_clients(credentials: AwsCredentials, *services: str, region: str | None = None, read_timeout: float = 60) -> list[Any]:
    """boto3 clients from an AwsCredentials block: its session, endpoint and client parameters, our retries.

    Clients are kept for the process, keyed by a digest of the block's values (secrets included, never stored) and the
    client's settings: a release builds about five instead of one per environment and check (~30 ms each). boto3
    clients are thread-safe and refresh temporary credentials themselves; a changed block is a different key."""
    key = (_credentials_digest(credentials), region, read_timeout)
    missing = [svc for svc in dict.fromkeys(services) if (key, svc) not in _CLIENTS]
    if missing:
        for svc, client in zip(missing, _new_clients(credentials, missing, region, read_timeout)):
            _CLIENTS[(key, svc)] = client
        while len(_CLIENTS) > 64:
            _CLIENTS.pop(next(iter(_CLIENTS)))
    return [_CLIENTS[(key, svc)] for svc in services]


_CLIENTS: dict[tuple, Any] = {}
_SESSIONS: dict[str, Any] = {}  # boto3 sessions by credentials digest: the clients of other regions and timeouts share one


def _credentials_digest(credentials: AwsCredentials) -> str:
    import hashlib
    import json

    def plain(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    values = {name: plain(getattr(credentials, name, None)) for name in type(credentials).model_fields}
    values["aws_client_parameters"] = plain(credentials.aws_client_parameters.model_dump())
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=repr).encode()).hexdigest()


def _new_clients(credentials: AwsCredentials, services: list[str], region: str | None, read_timeout: float) -> list[Any]:
    from botocore.exceptions import BotoCoreError, ClientError

    from slipway.core.aws import translate
    from slipway.core.errors import CredentialsError

    digest = _credentials_digest(credentials)
    session = _SESSIONS.get(digest)
    if session is None:  # one session per credentials: each loads botocore's endpoint and service models anew (~50 ms)
        try:
            session = credentials.get_boto3_session()
        except (BotoCoreError, ClientError) as exc:  # unknown profile, refused assume-role
            raise translate(exc, CredentialsError, "open an AWS session") from exc
        _SESSIONS[digest] = session
        while len(_SESSIONS) > 16:
            _SESSIONS.pop(next(iter(_SESSIONS)))
    params = credentials.aws_client_parameters.get_params_override()
    config = params.pop("config", None)  # botocore retries are Slipway's (slipway.core.aws.client_config) …
    timeouts = _timeouts(config)  # … but the block's read/connect timeouts, when set, are honoured
    endpoint = params.pop("endpoint_url", None)
    return [
        make_client(session, svc, region=region or credentials.region_name, endpoint_url=endpoint,
                    read_timeout=timeouts.get("read_timeout", read_timeout), connect_timeout=timeouts.get("connect_timeout", 10),
                    extra=params)
        for svc in services
    ]


def _timeouts(config: Any) -> dict[str, float]:
    """``read_timeout``/``connect_timeout`` from an AwsClientParameters ``config`` (a dict or a botocore Config)."""
    if config is None:
        return {}
    values = config if isinstance(config, dict) else {  # a Config: only what was set, not botocore's defaults
        k: getattr(config, k, None) for k in getattr(config, "_user_provided_options", {})}
    return {k: float(values[k]) for k in ("read_timeout", "connect_timeout") if values.get(k) is not None}


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
    signing_key_block: str | None = Field(
        default=None, title="Signing key (Secret block)",
        description="Name of a Prefect Secret block holding an HMAC key (16 bytes or more). Build pointers, manifests and "
                    "ledger entries are then signed, and one that does not verify is refused: a writer without the key "
                    "cannot forge them. Set it on a new store (or prefix): objects written before are unsigned.",
    )

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
    metrics_period_s: int = Field(
        default=60, title="Canary metrics period (s)",
        description="CloudWatch period the canary reads per-version metrics at: 60 on AWS (Lambda publishes per minute).",
    )
    metrics_delay_s: float = Field(
        default=60, ge=0, title="Canary metrics delay (s)",
        description="Wait this long after a bake before reading its metrics (CloudWatch ingestion delay).",
    )

    @field_validator("metrics_period_s")
    @classmethod
    def period_is_cloudwatch_period(cls, value: int) -> int:
        if value not in (1, 5, 10, 30) and (value <= 0 or value % 60):
            raise ValueError(f"metrics_period_s must be 1, 5, 10, 30 or a multiple of 60, got {value}")
        return value

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
