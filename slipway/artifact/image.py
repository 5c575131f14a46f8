"""Build a container image with the Docker SDK: clock-free tags, OCI labels, streamed output, one-line errors.

The build goes through the engine's classic ``/build`` endpoint (``client.api.build``), whose JSON stream is read
as it arrives: every output line goes to ``log`` (the task forwards it to the Prefect logger) and the last lines
are kept as evidence. ``rm`` and ``forcerm`` make the engine remove intermediate containers even when a step
fails, so a failed build leaves no containers behind (the layers of the steps that succeeded stay, as build
cache for the next attempt).

Identity is content: the tag comes from the commit and the build configuration, never the clock, and no
timestamp label is added unless the caller asks, so building the same commit twice gives the same image.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit

import docker.errors
import requests.exceptions

from slipway.core.errors import BuildError

LOG_TAIL_LINES = 40
BUILD_SILENCE_TIMEOUT_S = 1800  # a RUN step may print nothing for minutes; the client's default 60 s is too short
_STEP = re.compile(r"^Step \d+/\d+ : (?P<instruction>.*)$")
_HEX = re.compile(r"^[0-9a-f]{12,}$")
_BUILD_KEY = re.compile(r"^[A-Za-z0-9_.-]{8,}$")


def image_tag(commit: str, build_key: str) -> str:
    """The image tag for a commit built with a given build configuration: ``<commit[:12]>-<build_key[:8]>``."""
    if not _HEX.match(commit):
        raise BuildError(f"cannot tag an image with commit {commit!r}", hint="pass the full git SHA (40 hex characters)", ref="invalid-tag-input")
    if not _BUILD_KEY.match(build_key):
        raise BuildError(
            f"cannot tag an image with build key {build_key!r}",
            hint="pass the build configuration's digest (hex, at least 8 characters)",
            ref="invalid-tag-input",
        )
    return f"{commit[:12]}-{build_key[:8]}"


def oci_labels(*, app: str, commit: str, ref: str, repo: str, spec_digest: str, created: str | None = None) -> dict[str, str]:
    """Provenance labels. No timestamp unless ``created`` is given: identical builds stay identical."""
    labels = {
        "org.opencontainers.image.title": app,
        "org.opencontainers.image.revision": commit,
        "org.opencontainers.image.ref.name": ref,
        "org.opencontainers.image.source": _without_userinfo(repo),
        "dev.slipway.app": app,
        "dev.slipway.spec-digest": spec_digest,
    }
    if created is not None:
        labels["org.opencontainers.image.created"] = created
    return labels


def _without_userinfo(url: str) -> str:
    """A clone URL may carry a token (https://user:token@host/...); a label is public, so drop it."""
    parts = urlsplit(url)
    if parts.scheme and "@" in parts.netloc:
        return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    return url


@dataclass(frozen=True)
class BuiltImage:
    image_id: str  # sha256:... (the engine's image id)
    local_tag: str
    labels: dict[str, str]  # the labels on the built image (the base image's included)
    log_tail: list[str] = field(default_factory=list)


def build_image(
    client,
    *,
    context: Path,
    dockerfile: str,
    local_tag: str,
    labels: dict[str, str],
    build_args: dict[str, str] | None = None,
    platform: str | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> BuiltImage:
    """Build ``context`` with ``dockerfile`` (relative to the context) and tag the result ``local_tag``."""
    dockerfile_rel = _validate(Path(context), dockerfile, labels, build_args)
    kwargs: dict[str, Any] = dict(
        path=str(context),
        dockerfile=dockerfile_rel,
        tag=local_tag,
        labels=dict(labels),
        buildargs=dict(build_args or {}),
        rm=True,
        forcerm=True,  # remove intermediate containers even when a step fails
        decode=True,
        pull=False,  # the base image must already be local (or be pulled explicitly, on purpose)
        timeout=BUILD_SILENCE_TIMEOUT_S,
    )
    if platform is not None:
        kwargs["platform"] = platform
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    try:
        image_id = _follow(client.api.build(**kwargs), log, tail)
        info = client.api.inspect_image(image_id or local_tag)
    except requests.exceptions.Timeout as exc:
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            raise _engine_error(exc, local_tag, list(tail)) from exc
        raise BuildError(
            f"docker build printed nothing for {BUILD_SILENCE_TIMEOUT_S} s",
            target=local_tag,
            hint="make the slow step print progress, or split it into smaller steps",
            ref="docker-build-timeout",
            evidence={"log_tail": list(tail)},
        ) from exc
    except (requests.exceptions.ConnectionError, docker.errors.DockerException) as exc:
        raise _engine_error(exc, local_tag, list(tail)) from exc
    return BuiltImage(
        image_id=info["Id"],
        local_tag=local_tag,
        labels=dict((info.get("Config") or {}).get("Labels") or {}),
        log_tail=list(tail),
    )


def _validate(context: Path, dockerfile: str, labels: dict[str, str], build_args: dict[str, str] | None) -> str:
    """Check the inputs before the engine sees them; returns the Dockerfile's path inside the context."""
    if not context.is_dir():
        raise BuildError(f"no build context directory at {context}", hint="create it or set artifact.context", ref="context-missing")
    rel = PurePosixPath(dockerfile)
    root = context.resolve()
    if rel.is_absolute() or ".." in rel.parts or not (context / rel).resolve().is_relative_to(root):
        raise BuildError(
            f"Dockerfile {dockerfile} is outside the build context {context}",
            hint="put the Dockerfile inside the context and set artifact.dockerfile relative to it",
            ref="dockerfile-outside-context",
        )
    if not (context / rel).is_file():
        raise BuildError(
            f"no Dockerfile at {dockerfile} in context {context}",
            hint="add one or set artifact.dockerfile",
            ref="dockerfile-missing",
        )
    for kind, mapping in (("label", labels), ("build arg", build_args or {})):
        bad = sorted(k for k, v in mapping.items() if not isinstance(k, str) or not isinstance(v, str))
        if bad:
            raise BuildError(f"{kind} values must be strings: {', '.join(map(str, bad))}", hint="quote them in slipway.yaml", ref="invalid-build-input")
    return rel.as_posix()


def _follow(stream: Iterable[dict], log: Callable[[str], None], tail: deque[str]) -> str | None:
    """Forward every output line to ``log``; raise BuildError on an error entry; return the built image id.

    The engine splits its output into chunks that need not end at a newline ("Step 1/3 : FROM x" then "\\n"),
    so text is buffered until a line is complete.
    """
    step: str | None = None
    image_id: str | None = None
    pending = ""

    def emit(line: str) -> None:
        nonlocal step
        line = line.rstrip("\r")
        if not line.strip():
            return
        tail.append(line)
        match = _STEP.match(line)
        if match:
            step = match.group("instruction").strip()
        log(line)

    for entry in stream:
        if "stream" in entry:
            pending += entry["stream"]
            *complete, pending = pending.split("\n")
            for line in complete:
                emit(line)
        if pending and ("error" in entry or "errorDetail" in entry or "status" in entry):
            emit(pending)
            pending = ""
        if "status" in entry:  # base image pulls report progress this way
            emit(" ".join(str(entry[k]) for k in ("id", "status") if entry.get(k)))
        if "errorDetail" in entry or "error" in entry:
            detail = (entry.get("errorDetail") or {}).get("message") or entry.get("error") or "unknown error"
            emit(detail)
            raise _step_error(step, detail, list(tail))
        aux = entry.get("aux")
        if isinstance(aux, dict) and aux.get("ID"):
            image_id = aux["ID"]
    emit(pending)
    return image_id


def _step_error(step: str | None, detail: str, tail: list[str]) -> BuildError:
    first_line = " ".join(detail.split())  # the engine's messages may span lines; the error is one line
    where = f"at step {step!r}" if step else "before the first step"
    return BuildError(
        f"docker build failed {where}: {first_line}",
        ref="docker-build-failed",
        evidence={"step": step, "log_tail": tail},
    )


def _engine_error(exc: BaseException, local_tag: str, tail: list[str]) -> BuildError:
    if isinstance(exc, requests.exceptions.ConnectionError) or (
        isinstance(exc, docker.errors.DockerException) and not isinstance(exc, docker.errors.APIError)
    ):
        return BuildError(
            "could not reach the Docker engine to build",
            target=local_tag,
            hint="start the engine (dockerd) or set DOCKER_HOST to one that runs",
            ref="docker-unreachable",
            evidence={"error": type(exc).__name__},
        )
    explanation = " ".join(str(getattr(exc, "explanation", None) or exc).split())
    return BuildError(
        f"the Docker engine refused the build: {explanation}",
        target=local_tag,
        hint="fix the Dockerfile or build arguments named above",
        ref="docker-build-failed",
        evidence={"log_tail": tail, "status_code": getattr(exc, "status_code", None)},
    )
