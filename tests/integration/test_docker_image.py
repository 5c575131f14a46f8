"""Building images with a real Docker engine and pushing them to a real local registry (docker-registry).

Nothing is pulled: every Dockerfile starts FROM the session's busybox image. Each test uses its own
repository name, so tests do not see each other's tags in the shared registry.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import threading
import urllib.request
import uuid
from pathlib import Path

import docker
import pytest
from pydantic import SecretStr

from slipway.artifact.image import BuiltImage, build_image, image_tag, oci_labels
from slipway.core.errors import BuildError, CredentialsError, PublishError
from slipway.artifact.registry import RegistryAuth, push_image, remote_digest

pytestmark = pytest.mark.docker

LABELS = oci_labels(app="hello", commit="0123456789abcdef" * 2 + "01234567", ref="v1", repo="https://example.com/acme/hello.git", spec_digest="feedface")


class _NoEngine:
    """Stands where a Docker client goes and fails the test if anything reaches for the engine."""

    @property
    def api(self):
        pytest.fail("the engine was called before the inputs were validated")


@pytest.fixture
def local_tags(docker_client):
    """Collects image references a test creates and untags them afterwards (the layers stay as cache)."""
    created: list[str] = []
    yield created
    for ref in created:
        try:
            docker_client.images.remove(ref)
        except docker.errors.ImageNotFound:
            pass


@pytest.fixture
def build(docker_client, busybox_image, tmp_path, local_tags):
    """``build(marker)`` → a BuiltImage whose content depends on ``marker`` (same marker, same image)."""

    def make(marker: str, *, extra: str = "", log=lambda line: None) -> BuiltImage:
        context = tmp_path / f"ctx-{marker}"
        context.mkdir(exist_ok=True)
        (context / "Dockerfile").write_text(f"FROM {busybox_image}\nRUN echo {marker} > /marker\n{extra}")
        tag = f"slipway-test/build:{marker}"
        local_tags.append(tag)
        return build_image(docker_client, context=context, dockerfile="Dockerfile", local_tag=tag, labels=LABELS, log=log)

    return make


def _repo() -> str:
    return f"test/app-{uuid.uuid4().hex[:10]}"


def _registry_digest(registry: str, name: str, tag: str) -> str | None:
    """Ask the registry directly (not through slipway) which digest the tag names."""
    request = urllib.request.Request(
        f"http://{registry}/v2/{name}/manifests/{tag}",
        method="HEAD",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as response:
        return response.headers["Docker-Content-Digest"]


# ---- build ------------------------------------------------------------------------------------------------
def test_build_streams_every_output_line_to_log_and_labels_the_image(build, docker_client):
    marker = uuid.uuid4().hex[:12]
    lines: list[str] = []
    built = build(marker, extra=f"RUN echo said-{marker}\n", log=lines.append)

    # The classic builder turns each label into one LABEL step, after the Dockerfile's own steps.
    steps = [line for line in lines if line.startswith("Step ")]
    assert [s.split(" : ", 1)[1] for s in steps[:3]] == ["FROM slipway-test/busybox:latest", f"RUN echo {marker} > /marker", f"RUN echo said-{marker}"]
    assert len(steps) == 3 + len(LABELS)
    assert f"said-{marker}" in lines  # the RUN step's own output, streamed
    assert lines[-1] == f"Successfully tagged slipway-test/build:{marker}"
    assert built.log_tail == lines[-40:]
    image = docker_client.images.get(built.local_tag)
    assert image.id == built.image_id
    assert {k: image.labels[k] for k in LABELS} == LABELS
    assert built.labels == image.labels


def test_same_commit_and_build_key_give_the_same_tag_and_identical_builds_the_same_image(build):
    commit = "89abcdef0123456789abcdef0123456789abcdef"
    assert image_tag(commit, "d1ff00ba" * 8) == "89abcdef0123-d1ff00ba"
    assert image_tag(commit, "d1ff00ba" * 8) == image_tag(commit, "d1ff00ba" * 8)
    assert image_tag(commit, "0000aaaa" * 8) != image_tag(commit, "d1ff00ba" * 8)
    assert not any("created" in key for key in LABELS)  # no timestamp label unless asked for
    assert LABELS["org.opencontainers.image.revision"] == "0123456789abcdef" * 2 + "01234567"

    marker = uuid.uuid4().hex[:12]
    assert build(marker).image_id == build(marker).image_id


def test_oci_source_label_drops_credentials_from_the_clone_url():
    labels = oci_labels(app="a", commit="c" * 40, ref="main", repo="https://x-access-token:s3cr3t@github.com/acme/a.git", spec_digest="d")
    assert labels["org.opencontainers.image.source"] == "https://github.com/acme/a.git"


def test_failing_run_step_is_named_in_one_line_and_leaves_no_containers(build, docker_client):
    before = {c.id for c in docker_client.containers.list(all=True)}
    marker = uuid.uuid4().hex[:12]
    with pytest.raises(BuildError) as caught:
        build(marker, extra="RUN exit 3\n")

    err = caught.value
    assert str(err) == "docker build failed at step 'RUN exit 3': The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    assert err.ref == "docker-build-failed"
    assert err.evidence["step"] == "RUN exit 3"
    assert any(line.startswith("Step 3/") and line.endswith(" : RUN exit 3") for line in err.evidence["log_tail"])
    assert err.evidence["log_tail"][-1] == "The command '/bin/sh -c exit 3' returned a non-zero code: 3"
    assert {c.id for c in docker_client.containers.list(all=True)} == before
    # The steps that succeeded stay as (dangling) build cache; drop this test's own, named in its log.
    cached = [line[6:] for line in err.evidence["log_tail"] if re.fullmatch(r" ---> [0-9a-f]{12}", line)]
    docker_client.images.remove(cached[-1])


def test_missing_dockerfile_is_refused_before_the_engine_is_called(tmp_path):
    with pytest.raises(BuildError) as caught:
        build_image(_NoEngine(), context=tmp_path, dockerfile="Dockerfile", local_tag="x:y", labels={})
    assert str(caught.value) == f"no Dockerfile at Dockerfile in context {tmp_path}: add one or set artifact.dockerfile"
    assert caught.value.ref == "dockerfile-missing"


@pytest.mark.parametrize("dockerfile", ["../Dockerfile", "sub/../../Dockerfile", "/etc/Dockerfile"])
def test_dockerfile_outside_the_context_is_refused_before_the_engine_is_called(tmp_path, dockerfile):
    context = tmp_path / "ctx"
    (context / "sub").mkdir(parents=True)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(BuildError) as caught:
        build_image(_NoEngine(), context=context, dockerfile=dockerfile, local_tag="x:y", labels={})
    assert str(caught.value) == (
        f"Dockerfile {dockerfile} is outside the build context {context}: "
        "put the Dockerfile inside the context and set artifact.dockerfile relative to it"
    )


def test_unreachable_engine_is_one_line_with_the_fix(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    client = docker.DockerClient(base_url=f"unix://{tmp_path}/no-engine.sock", version="1.41")
    with pytest.raises(BuildError) as caught:
        build_image(client, context=tmp_path, dockerfile="Dockerfile", local_tag="x:y", labels={})
    assert str(caught.value) == "could not reach the Docker engine to build (x:y): start the engine (dockerd) or set DOCKER_HOST to one that runs"
    assert caught.value.ref == "docker-unreachable"


# ---- push -------------------------------------------------------------------------------------------------
def test_push_returns_the_digest_the_registry_serves(build, docker_client, local_registry, local_tags):
    built = build(uuid.uuid4().hex[:12])
    name = _repo()
    local_tags.append(f"{local_registry}/{name}:t1")
    lines: list[str] = []

    ref = push_image(docker_client, built.image_id, registry=local_registry, name=name, tag="t1", log=lines.append)

    assert ref.digest == _registry_digest(local_registry, name, "t1")
    assert ref.digest.startswith("sha256:")
    assert ref.pinned == f"{local_registry}/{name}@{ref.digest}"
    assert f"{local_registry}/{name}@{ref.digest}" in docker_client.api.inspect_image(built.image_id)["RepoDigests"]
    assert lines[0] == f"The push refers to repository [{local_registry}/{name}]"
    assert any(line.endswith(": Pushed") for line in lines)
    assert remote_digest(local_registry, name, "t1") == ref.digest


def test_pushing_the_same_image_again_reuses_the_tag_without_pushing(build, docker_client, local_registry, local_tags):
    built = build(uuid.uuid4().hex[:12])
    name = _repo()
    local_tags.append(f"{local_registry}/{name}:t1")
    first = push_image(docker_client, built.image_id, registry=local_registry, name=name, tag="t1")
    lines: list[str] = []

    again = push_image(docker_client, built.image_id, registry=local_registry, name=name, tag="t1", log=lines.append)

    assert again == first
    # A second push would have streamed "The push refers to repository ..." and "Layer already exists" lines.
    assert lines == [f"{local_registry}/{name}:t1 already holds this image ({first.digest}); not pushing it again"]
    assert _registry_digest(local_registry, name, "t1") == first.digest


def test_an_image_pushed_from_elsewhere_is_recognised_by_its_config_digest(build, docker_client, local_registry, local_tags):
    built = build(uuid.uuid4().hex[:12])
    name = _repo()
    local_tags.append(f"{local_registry}/{name}:t1")
    first = push_image(docker_client, built.image_id, registry=local_registry, name=name, tag="t1")
    docker_client.images.remove(f"{local_registry}/{name}@{first.digest}")  # the engine forgets it pushed it
    assert not docker_client.api.inspect_image(built.image_id)["RepoDigests"]
    lines: list[str] = []

    again = push_image(docker_client, built.image_id, registry=local_registry, name=name, tag="t1", log=lines.append)

    assert again.digest == first.digest
    assert len(lines) == 1 and "not pushing it again" in lines[0]


def test_a_different_image_under_an_existing_tag_is_refused_and_the_tag_keeps_its_digest(build, docker_client, local_registry, local_tags):
    old, new = build(uuid.uuid4().hex[:12]), build(uuid.uuid4().hex[:12])
    name = _repo()
    local_tags.append(f"{local_registry}/{name}:t1")
    first = push_image(docker_client, old.image_id, registry=local_registry, name=name, tag="t1")

    with pytest.raises(PublishError) as caught:
        push_image(docker_client, new.image_id, registry=local_registry, name=name, tag="t1")

    assert str(caught.value) == (
        f"tag t1 already holds manifest {first.digest[:19]}, not this image {new.image_id[:19]} ({local_registry}/{name}): "
        "the tag already names this commit's published image: reuse it by digest instead of rebuilding, or delete the tag on purpose"
    )
    assert caught.value.ref == "tag-exists-with-other-digest"
    assert _registry_digest(local_registry, name, "t1") == first.digest


def test_unreachable_registry_is_one_line_publish_error(build, docker_client):
    built = build(uuid.uuid4().hex[:12])
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PublishError) as caught:
        push_image(docker_client, built.image_id, registry=f"127.0.0.1:{port}", name="test/app", tag="t1")
    assert str(caught.value) == (
        f"could not reach registry 127.0.0.1:{port} (127.0.0.1:{port}/test/app:t1): "
        "check the registry address and that the registry runs (a local one: docker-registry serve CONFIG)"
    )
    assert caught.value.ref == "registry-unreachable" and caught.value.transient


def test_remote_digest_of_a_missing_tag_is_none(local_registry):
    assert remote_digest(local_registry, _repo(), "never-pushed") is None


# ---- credentials against a fake registry endpoint (the Debian registry runs without auth here) ----------
class _AuthRegistry(http.server.BaseHTTPRequestHandler):
    """Answers manifest HEADs like a registry that wants Basic auth for user 'ci' with password 'pa55'."""

    seen: list[str | None] = []

    def do_HEAD(self):  # noqa: N802 - http.server's naming
        self.seen.append(self.headers.get("Authorization"))
        if self.headers.get("Authorization") != "Basic Y2k6cGE1NQ==":  # base64("ci:pa55")
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="test"')
        else:
            self.send_response(200)
            self.send_header("Docker-Content-Digest", "sha256:" + "ab" * 32)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def auth_registry():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AuthRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_remote_digest_sends_basic_auth_and_a_refusal_never_shows_the_password(auth_registry):
    assert remote_digest(auth_registry, "team/app", "t1", RegistryAuth("ci", SecretStr("pa55"))) == "sha256:" + "ab" * 32
    with pytest.raises(CredentialsError) as caught:
        remote_digest(auth_registry, "team/app", "t1", RegistryAuth("ci", SecretStr("wrong-pa55")))
    err = caught.value
    assert str(err) == (
        f"registry {auth_registry} refused the credentials (HTTP 401) ({auth_registry}/team/app:t1): "
        "check the registry user name/password (for ECR, get a fresh token with ecr_auth)"
    )
    assert "wrong-pa55" not in json.dumps(err.to_dict()) + repr(RegistryAuth("ci", SecretStr("wrong-pa55")))
