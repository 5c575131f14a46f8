"""boto3 clients and the translation of AWS errors into Slipway's errors, at the boundary.

Retries of throttling, 5xx and connection errors are botocore's ("standard" mode); what still fails is
translated here with the modelled error code (``err.response["Error"]["Code"]``), never by matching text.
"""

from __future__ import annotations

from typing import Any, Callable

import functools

import boto3
import botocore.loaders
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    ReadTimeoutError,
)

from slipway.core.errors import CredentialsError, SlipwayError

CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "AuthFailure",
    "AccessDenied",
    "AccessDeniedException",
}
TRANSIENT_CODES = {
    "Throttling",
    "ThrottlingException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
    "ServiceUnavailable",
    "ServiceException",
    "InternalError",
    "InternalFailure",
    "ResourceConflictException",  # Lambda: an update is still in progress
}


@functools.cache
def _service_model_loader() -> botocore.loaders.Loader:
    """One loader for the process: service models are static JSON, and parsing them again for every new
    boto3 session (every block load) cost ~0.2 s per client."""
    return botocore.loaders.create_loader()


PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict"}
NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}


def is_precondition_failed(exc: ClientError) -> bool:
    """S3 conditional write lost (If-None-Match / If-Match)."""
    return error_code(exc) in PRECONDITION_CODES


def is_not_found(exc: ClientError) -> bool:
    return error_code(exc) in NOT_FOUND_CODES


def client_config(read_timeout: float = 60, connect_timeout: float = 10) -> Config:
    return Config(retries={"mode": "standard", "max_attempts": 5}, read_timeout=read_timeout, connect_timeout=connect_timeout)


def make_client(
    session: boto3.session.Session,
    service: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    read_timeout: float = 60,
    connect_timeout: float = 10,
    extra: dict[str, Any] | None = None,
):
    """A client with standard retries. ``endpoint_url`` None means AWS itself (or ``AWS_ENDPOINT_URL``)."""
    session._session.register_component("data_loader", _service_model_loader())  # boto3 keeps its botocore session here
    kwargs: dict[str, Any] = dict(extra or {})
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    if region:
        kwargs["region_name"] = region
    return session.client(service, config=client_config(read_timeout, connect_timeout), **kwargs)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, SlipwayError):
        return bool(getattr(exc, "transient", False))
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(exc) in TRANSIENT_CODES or status >= 500
    return isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError))


def translate(
    exc: BaseException,
    error_cls: type[SlipwayError],
    action: str,
    *,
    target: str | None = None,
    hint: str | None = None,
) -> SlipwayError:
    """Turn a botocore error into a one-line Slipway error; credentials problems become CredentialsError."""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return CredentialsError(
            f"no AWS credentials to {action}",
            target=target,
            hint="set them in the aws-credentials block (or AWS_PROFILE / AWS_ACCESS_KEY_ID) — `slipway local up` saves local ones",
            ref="credentials-missing",
        )
    if isinstance(exc, ProfileNotFound):
        return CredentialsError(
            f"AWS profile {exc.kwargs.get('profile')!r} not found to {action}",
            target=target,
            hint="fix profile_name in the aws-credentials block or create the profile (aws configure --profile NAME)",
            ref="credentials-missing",
        )
    if isinstance(exc, NoRegionError):
        return CredentialsError(f"no AWS region to {action}", target=target, hint="set region_name in the aws-credentials block", ref="region-missing")
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "") or code
        if code in CREDENTIAL_CODES:
            return CredentialsError(
                f"AWS refused the credentials to {action} ({code})",
                target=target,
                hint="check the access key, secret and permissions in the aws-credentials block",
                ref="credentials-refused",
                evidence={"aws_error_code": code, "aws_message": message},
            )
        err = error_cls(f"could not {action}: {code}: {message}", target=target, hint=hint, evidence={"aws_error_code": code})
        err.transient = is_transient(exc)
        return err
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        err = error_cls(
            f"could not reach AWS to {action}",
            target=target,
            hint="check the endpoint/region and network (is `slipway local up` running?)",
            ref="aws-unreachable",
        )
        err.transient = True
        return err
    if isinstance(exc, BotoCoreError):
        err = error_cls(f"could not {action}: {exc}", target=target, hint=hint)
        err.transient = is_transient(exc)
        return err
    raise exc


def aws_call(error_cls: type[SlipwayError], action: str, fn: Callable, *args, target: str | None = None, hint: str | None = None, **kwargs):
    """Call ``fn`` and translate botocore errors into ``error_cls``."""
    try:
        return fn(*args, **kwargs)
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, error_cls, action, target=target, hint=hint) from exc
