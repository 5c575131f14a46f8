"""Read-only commands without importing Prefect: the artifact store block read over the Prefect REST API.

``slipway history`` and ``slipway flag list/history`` only read the ledger and SSM, yet they used to pay for
importing Prefect (about a second on 2 cores) to load one block. This module reads the same block document with
one HTTP request (``GET /block_types/slug/{slug}/block_documents/name/{name}?include_secrets=true``, the call
``Block.load`` makes) and builds the boto3 clients the way ``blocks.aws_clients`` does. Only the plain form of an
``aws-credentials`` block is handled here (keys or a profile, a region, an endpoint, TLS settings); a block that
assumes a role, sets a botocore ``config`` or a certificate path returns None, and the caller loads the block with
Prefect instead. Secrets are held in ``SecretStr`` until boto3 gets them and are never logged.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from pydantic import SecretStr

STORE_SLUG = "slipway-artifact-store"
_PLAIN_CLIENT_PARAMS = {"endpoint_url", "use_ssl", "verify", "api_version"}


def _headers() -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if os.environ.get("PREFECT_API_KEY"):
        headers["Authorization"] = f"Bearer {os.environ['PREFECT_API_KEY']}"
    elif os.environ.get("PREFECT_API_AUTH_STRING"):
        headers["Authorization"] = "Basic " + base64.b64encode(os.environ["PREFECT_API_AUTH_STRING"].encode()).decode()
    return headers


def read_block_data(api_url: str, slug: str, name: str, timeout_s: float = 10) -> dict[str, Any] | None:
    """The block document's data (secrets included), or None when it cannot be read this way."""
    url = f"{api_url.rstrip('/')}/block_types/slug/{slug}/block_documents/name/{urllib.parse.quote(name, safe='')}?include_secrets=true"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=_headers()), timeout=timeout_s) as reply:
            return json.loads(reply.read(1024 * 1024)).get("data")
    except (urllib.error.URLError, OSError, ValueError):
        return None  # not found, refused, unreachable: Prefect's own loading says why


def _plain_session_and_params(creds: dict[str, Any]):
    """(boto3 session, client parameters) for a plain aws-credentials block, or None."""
    params = {k: v for k, v in (creds.get("aws_client_parameters") or {}).items() if v is not None}
    if creds.get("assume_role_arn") or set(params) - _PLAIN_CLIENT_PARAMS:
        return None
    import boto3

    secret = SecretStr(creds.get("aws_secret_access_key") or "")
    token = SecretStr(creds.get("aws_session_token") or "")
    session = boto3.Session(aws_access_key_id=creds.get("aws_access_key_id"),
                            aws_secret_access_key=secret.get_secret_value() or None,
                            aws_session_token=token.get_secret_value() or None,
                            profile_name=creds.get("profile_name"), region_name=creds.get("region_name"))
    return session, params


def store_clients(api_url: str, name: str, *services: str) -> tuple[dict[str, Any], list[Any]] | None:
    """(the store block's bucket/prefix/kms, clients for ``services``) from the artifact store block ``name``, or None."""
    from slipway.core.aws import make_client

    data = read_block_data(api_url, STORE_SLUG, name)
    creds = (data or {}).get("credentials")
    if not isinstance(creds, dict) or not data.get("bucket"):
        return None
    plain = _plain_session_and_params(creds)
    if plain is None:
        return None
    session, params = plain
    endpoint = params.pop("endpoint_url", None)
    clients = [make_client(session, svc, region=creds.get("region_name"), endpoint_url=endpoint, extra=params) for svc in services]
    signer = None
    if data.get("signing_key_block"):  # the key, from its Secret block, read the same way
        from slipway.core.signing import Signer

        secret = read_block_data(api_url, "secret", data["signing_key_block"])
        if not secret or not secret.get("value"):
            return None  # let the Prefect path load it and say what is wrong
        signer = Signer(str(secret["value"]).encode())
    return {"bucket": data["bucket"], "prefix": data.get("prefix", "slipway"), "kms_key_id": data.get("kms_key_id"),
            "signer": signer}, clients
