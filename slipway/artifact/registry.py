"""Push an image to an OCI registry by digest, and never move a tag that already names another image.

Tags are derived from the commit (``docker_image.image_tag``), so a tag that already exists in the registry
either holds this very image (an earlier run pushed it: reuse it, push nothing) or a different one (refuse).
Deciding which, without pushing, uses what the registry and the engine already know:

1. The engine records ``<registry>/<name>@<manifest digest>`` in the image's ``RepoDigests`` when it pushes
   (or pulls) it. If the remote tag's digest is among them, the tag holds this image.
2. Otherwise the remote manifest's ``config.digest`` is compared with the local image id. With the engine's
   classic image store the image id *is* the sha256 of the image config, and the config lists the
   uncompressed layer digests (``rootfs.diff_ids``), so equal config digests mean the same image even when it
   was pushed from another machine whose compressed layers (hence manifest digest) differ. With the
   containerd image store the image id is the manifest digest itself, compared directly.

Anything else, an index (multi-platform) manifest included, counts as a different image: refusing a reuse we
could not prove is safe, overwriting a release's tag is not. The engine's classic builder stamps creation
times into the image config, so rebuilding a commit without the build cache gives a new image id and is
refused here: look the tag up with ``remote_digest`` before building, and skip the build when it exists.

No temporary tag is pushed. After a push the digest from the push stream (``aux.Digest``) is confirmed
against the registry. The registry v2 API has no conditional manifest PUT, so a concurrent pusher can still
win the window between check and push; that shows up as a digest mismatch after the push
(``tag-moved-during-push``). Registries with immutable tags (ECR ``IMMUTABLE``) close that window server-side.

Registry passwords are ``SecretStr`` and are revealed only into the Authorization header and the engine's
``X-Registry-Auth`` header; no message, log line or evidence holds one.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

import docker.errors
import requests.exceptions
from pydantic import SecretStr

from slipway.core.aws import aws_call
from slipway.core.errors import CredentialsError, PublishError
from slipway.core.models import ImageRef

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
TIMEOUT_S = 30
_MAX_MANIFEST_BYTES = 4 * 1024**2
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_REGISTRY = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::\d+)?$")
_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_AUTH_CODES = {"denied", "unauthorized"}  # registry error codes, as the engine prefixes them to its message


@dataclass(frozen=True)
class RegistryAuth:
    """Credentials for one registry. ``repr`` shows the password as ``SecretStr('**********')``."""

    username: str | None = None
    password: SecretStr | None = None

    def _basic(self) -> str | None:
        if not self.username or self.password is None:
            return None
        raw = f"{self.username}:{self.password.get_secret_value()}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def _docker_auth_config(self, registry: str) -> dict[str, str] | None:
        if not self.username or self.password is None:
            return None
        return {"username": self.username, "password": self.password.get_secret_value(), "serveraddress": registry}


def ecr_auth(ecr_client) -> tuple[str, RegistryAuth]:
    """The registry host and its credentials from ECR's ``get_authorization_token`` (valid 12 hours)."""
    response = aws_call(PublishError, "get an ECR login token", ecr_client.get_authorization_token)
    data = (response.get("authorizationData") or [{}])[0]
    try:
        username, sep, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    except (KeyError, ValueError) as exc:
        raise CredentialsError("ECR returned an unreadable login token", hint="retry; if it persists, check the ECR endpoint", ref="ecr-token-invalid") from exc
    if not sep or not username:
        raise CredentialsError("ECR returned a login token without a user name", hint="retry; if it persists, check the ECR endpoint", ref="ecr-token-invalid")
    endpoint = data.get("proxyEndpoint") or ""
    host = urlsplit(endpoint).netloc or endpoint
    if not host:
        raise CredentialsError("ECR returned a login token without a registry endpoint", hint="retry; if it persists, check the ECR endpoint", ref="ecr-token-invalid")
    return host, RegistryAuth(username=username, password=SecretStr(password))


def remote_digest(registry: str, name: str, tag: str, auth: RegistryAuth | None = None, *, insecure: bool | None = None) -> str | None:
    """The manifest digest the registry serves for ``name:tag``, or None when the tag does not exist."""
    _validate(registry, name, tag)
    found = _fetch_manifest(registry, name, tag, auth, insecure, method="HEAD")
    if found is None:
        return None
    digest, _ = found
    if digest:
        return digest
    found = _fetch_manifest(registry, name, tag, auth, insecure, method="GET")  # no digest header: hash the body
    return found[0] if found else None


def push_image(
    client,
    image_id: str,
    *,
    registry: str,
    name: str,
    tag: str,
    auth: RegistryAuth | None = None,
    log: Callable[[str], None] = lambda line: None,
    insecure: bool | None = None,
) -> ImageRef:
    """Push ``image_id`` as ``registry/name:tag`` and return it by digest; reuse it when the tag already holds it."""
    _validate(registry, name, tag)
    repository = f"{registry}/{name}"
    local = _inspect(client, image_id, repository)
    existing = _fetch_manifest(registry, name, tag, auth, insecure, method="GET")
    if existing is not None:
        digest, manifest = existing
        if _is_same_image(digest, manifest, local, repository):
            log(f"{repository}:{tag} already holds this image ({digest}); not pushing it again")
            return ImageRef(repository=repository, tag=tag, digest=digest)
        raise PublishError(
            f"tag {tag} already holds manifest {_short(digest)}, not this image {_short(local['Id'])}",
            target=repository,
            hint="the tag already names this commit's published image: reuse it by digest instead of rebuilding, or delete the tag on purpose",
            ref="tag-exists-with-other-digest",
            evidence={"remote_digest": digest, "image_id": local["Id"]},
        )
    pushed = _push(client, image_id, registry, repository, tag, auth, log)
    confirmed = remote_digest(registry, name, tag, auth, insecure=insecure)
    if confirmed is None or (pushed and confirmed != pushed):
        raise PublishError(
            f"after the push, tag {tag} holds {_short(confirmed) if confirmed else 'nothing'}, not the pushed {_short(pushed or '?')}",
            target=repository,
            hint="another push moved the tag at the same time: check who else publishes to this repository, then retry",
            ref="tag-moved-during-push",
            evidence={"pushed_digest": pushed, "remote_digest": confirmed},
        )
    return ImageRef(repository=repository, tag=tag, digest=confirmed)


# ---- the decision ----------------------------------------------------------------------------------------
def _is_same_image(digest: str, manifest: dict, local: dict, repository: str) -> bool:
    if f"{repository}@{digest}" in (local.get("RepoDigests") or []):
        return True
    if digest == local["Id"]:  # containerd image store: the image id is the manifest digest
        return True
    config = manifest.get("config") if isinstance(manifest, dict) else None
    return isinstance(config, dict) and config.get("digest") == local["Id"]


def _short(digest: str) -> str:
    algo, _, hexpart = digest.partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else digest[:19]


# ---- the engine ------------------------------------------------------------------------------------------
def _inspect(client, image_id: str, repository: str) -> dict:
    try:
        return client.api.inspect_image(image_id)
    except docker.errors.ImageNotFound as exc:
        raise PublishError(f"no local image {image_id} to push", target=repository, hint="build it first (build_image)", ref="image-missing") from exc
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise _engine_unreachable(repository) from exc


def _push(client, image_id: str, registry: str, repository: str, tag: str, auth: RegistryAuth | None, log: Callable[[str], None]) -> str | None:
    """Tag locally, push, stream the engine's lines to ``log``; returns the pushed manifest digest."""
    digest: str | None = None
    try:
        client.api.tag(image_id, repository, tag, force=True)
        auth_config = auth._docker_auth_config(registry) if auth else None
        for entry in client.api.push(repository, tag=tag, stream=True, decode=True, auth_config=auth_config):
            if "errorDetail" in entry or "error" in entry:
                message = (entry.get("errorDetail") or {}).get("message") or entry.get("error") or "unknown error"
                raise _push_error(" ".join(str(message).split()), repository, tag)
            aux = entry.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = aux["Digest"]
            line = _push_line(entry)
            if line:
                log(line)
    except (requests.exceptions.RequestException, docker.errors.DockerException) as exc:
        if isinstance(exc, docker.errors.APIError):
            raise _push_error(" ".join(str(exc.explanation or exc).split()), repository, tag) from exc
        raise _engine_unreachable(repository) from exc
    return digest


def _push_line(entry: dict) -> str | None:
    """One readable line per stream entry; byte-progress updates ("Pushing" with a bar) are left out."""
    if entry.get("progress") or entry.get("aux"):
        return None
    status = entry.get("status")
    if not status:
        return None
    return f"{entry['id']}: {status}" if entry.get("id") else status


def _push_error(message: str, repository: str, tag: str) -> Exception:
    # The engine flattens the registry's error code into the message's prefix ("denied: ...",
    # "unauthorized: ..."); it is the only place the code survives, so that prefix is what is read.
    code = message.split(":", 1)[0].strip().lower()
    if code in _AUTH_CODES:
        return CredentialsError(
            f"the registry refused to accept the push of {tag}: {message}",
            target=repository,
            hint="check the registry user name/password (for ECR, a fresh ecr_auth token and push permission)",
            ref="registry-credentials-refused",
        )
    return PublishError(
        f"docker push of {tag} failed: {message}",
        target=repository,
        hint="check that the Docker engine can reach the registry and that it accepts pushes",
        ref="push-failed",
    )


def _engine_unreachable(repository: str) -> PublishError:
    err = PublishError(
        "could not reach the Docker engine to push",
        target=repository,
        hint="start the engine (dockerd) or set DOCKER_HOST to one that runs",
        ref="docker-unreachable",
    )
    err.transient = True
    return err


# ---- the registry's HTTP API -----------------------------------------------------------------------------
def _validate(registry: str, name: str, tag: str) -> None:
    for what, value, pattern, fix in (
        ("registry", registry, _REGISTRY, "give a host[:port] without a scheme, e.g. 127.0.0.1:5000"),
        ("repository name", name, _NAME, "use lower-case letters, digits, '.', '_', '-' and '/'"),
        ("tag", tag, _TAG, "use letters, digits, '_', '.', '-' (at most 128)"),
    ):
        if not isinstance(value, str) or not pattern.match(value):
            raise PublishError(f"invalid image {what} {value!r}", hint=fix, ref="invalid-image-name")


def _fetch_manifest(registry: str, name: str, reference: str, auth: RegistryAuth | None, insecure: bool | None, *, method: str) -> tuple[str | None, dict] | None:
    """``(digest, manifest)`` for ``name:reference``; None on 404. HEAD gives ``(digest or None, {})``."""
    host = registry[1 : registry.index("]")] if registry.startswith("[") else registry.split(":", 1)[0]
    plain = host in _LOOPBACK if insecure is None else insecure
    url = f"{'http' if plain else 'https'}://{registry}/v2/{name}/manifests/{reference}"
    request = urllib.request.Request(url, method=method, headers={"Accept": ", ".join(MANIFEST_TYPES)})
    header = auth._basic() if auth else None
    if header:
        request.add_unredirected_header("Authorization", header)  # never forwarded to a redirect target
    # A loopback registry must not be reached through an HTTP(S)_PROXY from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({})) if host in _LOOPBACK else urllib.request.build_opener()
    target = f"{registry}/{name}:{reference}"
    try:
        with opener.open(request, timeout=TIMEOUT_S) as response:
            digest = response.headers.get("Docker-Content-Digest")
            if method == "HEAD":
                return digest, {}
            body = response.read(_MAX_MANIFEST_BYTES)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise _http_error(exc.code, registry, target, with_credentials=header is not None) from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError, socket.timeout) as exc:
        err = PublishError(
            f"could not reach registry {registry}",
            target=target,
            hint="check the registry address and that the registry runs (a local one: docker-registry serve CONFIG)",
            ref="registry-unreachable",
            evidence={"error": type(exc).__name__, "url": url},
        )
        err.transient = True
        raise err from exc
    try:
        manifest = json.loads(body)
    except ValueError:
        manifest = {}
    return digest or "sha256:" + hashlib.sha256(body).hexdigest(), manifest


def _http_error(status: int, registry: str, target: str, *, with_credentials: bool) -> Exception:
    if status in (401, 403):
        return CredentialsError(
            f"registry {registry} refused the credentials (HTTP {status})" if with_credentials else f"registry {registry} needs credentials (HTTP {status})",
            target=target,
            hint="check the registry user name/password (for ECR, get a fresh token with ecr_auth)",
            ref="registry-credentials-refused",
        )
    err = PublishError(f"registry {registry} answered HTTP {status}", target=target, hint="retry later; if it persists, check the registry's logs", ref="registry-error")
    err.transient = status >= 500 or status == 429
    return err
