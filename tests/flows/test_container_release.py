"""Container releases end to end on the session's local stack: build, push by digest to the local registry,
blue/green on the Docker host behind nginx, verify, roll back. Needs a Docker engine (skipped otherwise)."""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest

from conftest import git

pytestmark = pytest.mark.docker

SERVICE = """FROM slipway-test/busybox:latest
ENV VERSION={version}
CMD ["sh", "-c", "mkdir -p /www && {health}echo hello-$VERSION > /www/index.html && exec httpd -f -p $HOST:$PORT -h /www"]
"""
HEALTHY = "echo ok-$VERSION > /www/health && "
SPEC = """app: {app}
artifact:
  type: docker-image
  dockerfile: Dockerfile
  context: .
  health_path: /health
verify:
  smoke:
    - name: health
      request: {{path: /health}}
      expect: {{status: 200, body_contains: ok-}}
    - name: page
      request: {{path: /index.html}}
      expect: {{status: 200, body_contains: "hello-{expected}"}}
environments:
  - name: dev
  - name: staging
  - name: prod
"""


class ServiceRepo:
    def __init__(self, path, app):
        self.path, self.app = path, app
        self.url = f"file://{path}"

    def commit(self, version: str, *, healthy: bool = True, expected: str | None = None, tag: str | None = None) -> str:
        (self.path / "Dockerfile").write_text(SERVICE.format(version=version, health=HEALTHY if healthy else ""))
        (self.path / "slipway.yaml").write_text(SPEC.format(app=self.app, expected=expected or "v"))
        git(self.path, "add", "-A")
        git(self.path, "commit", "-qm", f"version {version}")
        if tag:
            git(self.path, "tag", tag)
        return git(self.path, "rev-parse", "HEAD")


@pytest.fixture
def service_repo(tmp_path, request, busybox_image, docker_client, prefect_api):
    import re

    app = "svc-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[-24:].strip("-")
    path = tmp_path / "svc"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    yield ServiceRepo(path, app)
    for c in docker_client.containers.list(all=True, filters={"label": f"dev.slipway.app={app}"}):
        c.remove(force=True)


def run_release(**params):
    from flows.release import release

    state = release(return_state=True, **params)
    return state, state.result(raise_on_failure=False)


def endpoint(app: str, env: str) -> str:
    from tasks.wiring import open_store

    _, ledger = open_store("default")
    return ledger.head(app, env).location["endpoint"]


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode().strip()


def containers(docker_client, app: str, env: str) -> list[str]:
    found = docker_client.containers.list(all=True, filters={"label": [f"dev.slipway.app={app}", f"dev.slipway.env={env}"]})
    return sorted(c.labels["dev.slipway.release"] for c in found)


class Poller:
    """A client polling the stable port during an operation; bounded in count and time."""

    def __init__(self, url: str, limit: int = 2000, seconds: float = 60) -> None:
        self.url, self.limit, self.seconds = url, limit, seconds
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        while not self._stop.is_set() and self.ok + len(self.failures) < self.limit and time.monotonic() < deadline:
            try:
                status, _ = get(self.url)
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"HTTP {status}")
            except Exception as exc:  # noqa: BLE001 - every failure is evidence
                self.failures.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)


def test_an_image_goes_live_everywhere_by_digest_and_a_rerelease_reuses_it(service_repo, docker_client):
    repo = service_repo
    repo.commit("v1", expected="v1", tag="v1")
    state, summary = run_release(repo_url=repo.url, ref="v1")
    assert state.is_completed(), summary
    image = summary["artifact"]["image"]
    assert image["digest"].startswith("sha256:") and "@" not in image["tag"]
    for env in ("dev", "staging", "prod"):
        assert get(endpoint(repo.app, env) + "/index.html") == (200, "hello-v1")
        assert containers(docker_client, repo.app, env) == [summary["release_id"]]
        running = docker_client.containers.list(filters={"label": [f"dev.slipway.app={repo.app}", f"dev.slipway.env={env}"]})
        assert running[0].attrs["Config"]["Image"] == f"{image['repository']}@{image['digest']}"  # deployed by digest

    state, again = run_release(repo_url=repo.url, ref="v1")
    assert state.is_completed(), again
    assert again["artifact"]["reused"] is True and again["release_id"] == summary["release_id"]
    assert containers(docker_client, repo.app, "dev") == [summary["release_id"]]  # nothing new started


def test_an_image_whose_health_check_never_passes_never_takes_traffic(service_repo, docker_client):
    repo = service_repo
    repo.commit("v1", expected="v1", tag="v1")
    state, first = run_release(repo_url=repo.url, ref="v1", only=["dev"])
    assert state.is_completed(), first
    repo.commit("v2", healthy=False, expected="v2", tag="v2")
    url = endpoint(repo.app, "dev") + "/index.html"
    with Poller(url) as poller:
        state, err = run_release(repo_url=repo.url, ref="v2", only=["dev"])
    assert state.is_failed()
    assert "not healthy after" in str(err) and "HTTP 404" in str(err)
    assert "dev unchanged (still serving" in str(err)
    assert poller.failures == [] and poller.ok > 10
    assert get(url) == (200, "hello-v1")
    assert containers(docker_client, repo.app, "dev") == [first["release_id"]]  # the failed container is gone


def test_a_failed_smoke_check_switches_back_with_no_failed_request(service_repo, docker_client):
    repo = service_repo
    repo.commit("v1", expected="v1", tag="v1")
    state, first = run_release(repo_url=repo.url, ref="v1", only=["dev"])
    assert state.is_completed(), first
    repo.commit("v3", expected="v1", tag="v3")  # healthy, but serves hello-v3 where the check expects hello-v1
    url = endpoint(repo.app, "dev") + "/index.html"
    with Poller(url) as poller:
        state, err = run_release(repo_url=repo.url, ref="v3", only=["dev"])
    assert state.is_failed()
    assert "smoke check 'page' failed in dev" in str(err)
    assert f"dev rolled back to {first['release_id']}" in str(err)
    assert poller.failures == [], poller.failures[:5]
    assert get(url) == (200, "hello-v1")
    assert containers(docker_client, repo.app, "dev") == [first["release_id"]]


def test_rolling_back_to_a_retired_release_runs_its_image_again(service_repo, docker_client):
    from flows.release import rollback

    repo = service_repo
    repo.commit("v1", expected="v1", tag="v1")
    _, first = run_release(repo_url=repo.url, ref="v1", only=["dev"])
    repo.commit("v4", expected="v4", tag="v4")
    state, second = run_release(repo_url=repo.url, ref="v4", only=["dev"])
    assert state.is_completed(), second
    assert containers(docker_client, repo.app, "dev") == [second["release_id"]]  # v1's container was retired

    outcome = rollback(app=repo.app, environment="dev")
    assert outcome["to_release"] == first["release_id"]
    assert get(endpoint(repo.app, "dev") + "/index.html") == (200, "hello-v1")
    assert containers(docker_client, repo.app, "dev") == [first["release_id"]]  # v4's container discarded


def test_the_hello_service_example_releases_to_dev(docker_client, prefect_api, app_repo, tmp_path):
    """The example as a user has it: a Python service built FROM python:3.11-slim (built locally by
    .ci/base-image.sh where no registry can be reached)."""
    import shutil

    from conftest import ROOT

    try:
        docker_client.images.get("python:3.11-slim")
    except Exception:  # noqa: BLE001
        pytest.skip("base image python:3.11-slim is not on the engine (bash .ci/base-image.sh builds it)")
    path = tmp_path / "hello-service"
    shutil.copytree(ROOT / "examples" / "hello-service", path, ignore=shutil.ignore_patterns("demo", "__pycache__", ".pytest_cache"))
    spec = (path / "slipway.yaml").read_text().replace("app: hello-service", "app: hello-service-t")
    (path / "slipway.yaml").write_text(spec)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "v1")
    try:
        state, summary = run_release(repo_url=f"file://{path}", ref="main", only=["dev"])
        assert state.is_completed(), summary
        status, body = get(endpoint("hello-service-t", "dev") + "/")
        assert status == 200 and '"version": "1"' in body
    finally:
        for c in docker_client.containers.list(all=True, filters={"label": "dev.slipway.app=hello-service-t"}):
            c.remove(force=True)


CANARY_SPEC = """app: {app}
artifact:
  type: docker-image
  health_path: /health
verify:
  smoke:
    - name: page
      request: {{path: /index.html}}
      expect: {{status: 200, body_contains: "hello-{expected}"}}
environments:
  - name: dev
    strategy:
      canary: {{steps: [50, 100], bake: 3s}}
    traffic:
      rate: 40/s
      requests: [{{path: /index.html}}, {{path: /health}}]
    analysis: {{min_requests: 20, max_latency_increase: 5, inconclusive: fail}}
"""


def test_a_canary_on_the_docker_host_splits_traffic_through_the_proxy_and_is_promoted(service_repo, docker_client):
    from tasks.wiring import open_store

    repo = service_repo
    repo.commit("v1", expected="v1", tag="v1")
    (repo.path / "slipway.yaml").write_text(CANARY_SPEC.format(app=repo.app, expected="v1"))
    git(repo.path, "commit", "-qam", "dev by canary")
    state, first = run_release(repo_url=repo.url, ref="main")
    assert state.is_completed(), first  # the first release: nothing to compare with, all at once
    (repo.path / "Dockerfile").write_text(SERVICE.format(version="v2", health=HEALTHY))
    (repo.path / "slipway.yaml").write_text(CANARY_SPEC.format(app=repo.app, expected="v2"))
    git(repo.path, "commit", "-qam", "v2")

    state, second = run_release(repo_url=repo.url, ref="main")
    assert state.is_completed(), second
    entries = open_store("default")[1].entries(repo.app, "dev")
    assert [e.kind for e in entries][-5:] == ["deploy-started", "traffic-shifted", "canary-verdict", "deployed", "verified"]
    verdict = entries[-3].detail
    assert verdict["verdict"] == "PASS", verdict["reason"]
    error_rate = verdict["metrics"][0]
    # the split is measured from the proxy's access log: both sides got their half of the synthetic traffic
    assert error_rate["stable"]["requests"] >= 20 and error_rate["canary"]["requests"] >= 20
    assert abs(error_rate["stable"]["requests"] - error_rate["canary"]["requests"]) <= 2
    assert get(endpoint(repo.app, "dev") + "/index.html") == (200, "hello-v2")
    assert containers(docker_client, repo.app, "dev") == [second["release_id"]]  # the old container retired
