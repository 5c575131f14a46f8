"""Test session set-up.

Everything a test session writes goes under one temporary directory: SLIPWAY_HOME (caches, the local stack),
PREFECT_HOME and Prefect's result storage (so cached task results never leak between sessions). The
user's own PREFECT_API_URL and AWS settings are removed so no test can reach a real server or account.
One local stack (a real Prefect server + the local AWS endpoint, in subprocesses) serves the whole session;
it starts only if a test asks for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["docker_fixtures", "prometheus_fixtures", "tiers"]

SESSION_TMP = Path(tempfile.mkdtemp(prefix="slipway-tests-"))
for _key in list(os.environ):
    if _key.startswith(("PREFECT_", "AWS_")) or _key in ("SLIPWAY_HOME",):
        del os.environ[_key]
os.environ.update(
    SLIPWAY_HOME=str(SESSION_TMP / "home"),
    PREFECT_HOME=str(SESSION_TMP / "prefect-client"),
    PREFECT_RESULTS_LOCAL_STORAGE_PATH=str(SESSION_TMP / "prefect-results"),
    PREFECT_SERVER_ANALYTICS_ENABLED="false",
    DO_NOT_TRACK="1",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    GIT_CONFIG_GLOBAL=str(SESSION_TMP / "gitconfig"),
)
(SESSION_TMP / "gitconfig").write_text("[user]\n\tname = Slipway Tests\n\temail = tests@slipway.local\n[init]\n\tdefaultBranch = main\n")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "hello-lambda"


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SESSION_TMP, ignore_errors=True)


# ---- local AWS in this process (fast: for store/ledger/rollout integration tests) --------------------------
@pytest.fixture(scope="session")
def aws_endpoint():
    from slipway.local.aws import LocalAws

    server = LocalAws(host="127.0.0.1", port=0, work_dir=SESSION_TMP / "inproc-aws", seed=7)
    endpoint = server.start()
    yield endpoint
    server.stop()


@pytest.fixture(scope="session")
def boto_session():
    import boto3

    return boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")


# ---- the embedded local stack (Prefect server + local AWS subprocesses) for flow and CLI tests -------------
@pytest.fixture(scope="session")
def local_stack():
    from slipway.local import stack as localstack

    info = localstack.up(SESSION_TMP / "home")
    yield info
    # Send Prefect's queued logs and events before the server goes, or its workers retry at exit for a minute.
    from deployments.runner import flush_prefect_workers

    flush_prefect_workers()
    localstack.down(SESSION_TMP / "home")


@pytest.fixture(scope="session")
def prefect_api(local_stack):
    """Point this process's Prefect client at the session's server and save the local blocks there."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: local_stack["env"]["PREFECT_API_URL"], PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        from deployments.local_blocks import save_local_blocks

        save_local_blocks(
            local_stack["env"]["AWS_ENDPOINT_URL"], local_stack["bucket"], local_stack["role_arn"],
            registry=local_stack["registry"], proxy_root=local_stack["proxy_root"] if local_stack["registry"] else None,
            health_timeout=5,  # the test services start in milliseconds; a broken one should fail fast
            stable_ports=TEST_STABLE_PORTS,
        )
        yield local_stack


# Not the docker-host block's default (18000-18099, what `make demo` and `slipway local up` use): a test run that was
# killed leaves its nginx listening, and the demo's environments keep the stable ports they were given.
TEST_STABLE_PORTS = "18600-18799"


# ---- app repositories --------------------------------------------------------------------------------------
def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, text=True, capture_output=True).stdout.strip()


class AppRepo:
    """A real git repository holding a copy of examples/hello-lambda under a unique app name."""

    def __init__(self, path: Path, app: str) -> None:
        self.path = path
        self.app = app

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def write(self, rel: str, text: str) -> "AppRepo":
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return self

    def commit(self, message: str, tag: str | None = None) -> str:
        git(self.path, "add", "-A")
        git(self.path, "commit", "-qm", message)
        if tag:
            git(self.path, "tag", tag)
        return git(self.path, "rev-parse", "HEAD")

    def break_health_check(self) -> "AppRepo":
        """v2 of the example: unit tests pass, but every invocation in Lambda fails (KeyError: GREETING)."""
        self.write("src/app.py", (EXAMPLE / "demo" / "app_v2.py").read_text())
        self.write("tests/test_app.py", (EXAMPLE / "demo" / "test_app_v2.py").read_text())
        return self


@pytest.fixture
def app_repo(tmp_path, request):
    """Factory: ``app_repo("name")`` → AppRepo with v1 committed and tagged v1."""
    import re

    def make(app: str | None = None) -> AppRepo:
        name = app or re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[-30:].strip("-")
        path = tmp_path / f"repo-{name}"
        shutil.copytree(EXAMPLE, path, ignore=shutil.ignore_patterns("demo", "__pycache__", ".pytest_cache"))
        spec = (path / "slipway.yaml").read_text().replace("app: hello", f"app: {name}")
        (path / "slipway.yaml").write_text(spec)
        git(path, "init", "-q", "-b", "main")
        repo = AppRepo(path, name)
        repo.commit("v1", tag="v1")
        return repo

    return make
