"""Secret references in environment values (``{secret: prefect:NAME | ssm:/path | secretsmanager:NAME}`` in
slipway.yaml), read when an environment is deployed: the values reach the target and nothing else (no log line, no
flow-run parameter, no ledger entry: those keep the reference)."""

from __future__ import annotations

import json
from typing import Any, Callable

from slipway.core.errors import CredentialsError
from slipway.core.signing import Signer
from slipway.spec.schema import SecretRef


def resolved_environment(values: dict[str, Any], env_name: str, *, credentials=None, region: str | None = None,
                         store_block: str = "default") -> dict[str, str]:
    """``values`` with each secret reference read (Prefect Secret block, SSM, Secrets Manager) for the deploy. SSM and
    Secrets Manager are read with ``credentials`` (the environment's account), else the artifact store's. The values
    are never logged nor recorded; an unreadable one stops the deploy in one line naming the reference, not a value."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            value = SecretRef(**value)  # recorded in a location
        out[key] = _read_secret(value, key, env_name, credentials, region, store_block) if isinstance(value, SecretRef) else value
    return out


def secret_names(values: dict[str, Any]) -> list[str]:
    return sorted(k for k, v in values.items() if isinstance(v, (SecretRef, dict)))


def _read_secret(ref: SecretRef, key: str, env_name: str, credentials, region: str | None, store_block: str) -> str:
    from blocks import aws_clients
    from slipway.core.aws import error_code
    from tasks.wiring import load_block, store_client

    try:
        if ref.kind == "prefect":
            from prefect.blocks.system import Secret

            value = load_block(Secret, ref.name, missing=f"no Secret block named {ref.name!r}",
                               hint="create it (Blocks → Secret in the UI, or Secret(value=...).save(NAME))", ref="secret-unreadable").get()
        else:
            service = "ssm" if ref.kind == "ssm" else "secretsmanager"
            client = (aws_clients(credentials, service, region=region)[0] if credentials is not None else store_client(store_block, service))
            value = (client.get_parameter(Name=ref.name, WithDecryption=True)["Parameter"]["Value"] if ref.kind == "ssm"
                     else client.get_secret_value(SecretId=ref.name)["SecretString"])
    except CredentialsError:
        raise
    except Exception as exc:  # noqa: BLE001 - named by its AWS code, never by a value
        raise CredentialsError(
            f"could not read secret {ref.secret} for {key} in {env_name}: {error_code(exc) or type(exc).__name__}",
            target=ref.secret, hint="create it, or let the environment's credentials read it (ssm:GetParameter and kms:Decrypt, or "
                                    "secretsmanager:GetSecretValue); nothing was deployed",
            ref="secret-unreadable",
        ) from None
    return value if isinstance(value, str) else json.dumps(value)


def store_signer(secret_block: str | None, load: Callable) -> Signer | None:
    """The store's HMAC signer from the Secret block it names (None: the store is not signed)."""
    if not secret_block:
        return None
    from prefect.blocks.system import Secret

    value = load(Secret, secret_block, missing=f"no Secret block named {secret_block!r} (the artifact store's signing key)",
                 hint="create it, or clear signing_key_block in the artifact-store block", ref="store-block-missing").get()
    try:
        return Signer(str(value).encode())
    except ValueError as exc:
        raise CredentialsError(f"the artifact store's signing key (Secret block {secret_block!r}) is too short: {exc}",
                               hint="store a random key of 32 bytes or more", ref="store-block-missing") from None
