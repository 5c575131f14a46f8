"""What every benchmark script does first: its own SLIPWAY_HOME / Prefect home under a fresh temporary directory
(so it starts its own local stack and never touches yours), quiet Prefect logs, the repository on sys.path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def isolate(prefix: str) -> Path:
    work = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ["SLIPWAY_HOME"] = str(work / "home")
    os.environ["PREFECT_HOME"] = str(work / "prefect-client")
    os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] = str(work / "results")
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return work


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@b", "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@b"}
    return subprocess.run(["git", *args], cwd=repo, check=True, text=True, capture_output=True, env=env).stdout.strip()


EXAMPLE = ROOT / "examples" / "hello-lambda"
DEPS = "requests==2.32.3\nPyYAML==6.0.2\n"  # a small app's usual dependencies (the peer comparisons use the same)


def make_example_repo(repo: Path, app: str, *, broken: bool = False, requirements: str | None = None) -> Path:
    """examples/hello-lambda as a git repository at ``repo``: app renamed, v1 tagged; with ``requirements``, a
    requirements.txt the spec vendors; with ``broken``, v2 (the demo's failing version) tagged too."""
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("demo", "__pycache__", ".pytest_cache"))
    spec = (repo / "slipway.yaml").read_text()
    assert "app: hello\n" in spec and "  runtime: python3.11\n" in spec, "examples/hello-lambda/slipway.yaml changed shape"
    spec = spec.replace("app: hello\n", f"app: {app}\n")
    if requirements is not None:
        spec = spec.replace("  runtime: python3.11\n", "  runtime: python3.11\n  requirements: requirements.txt\n")
        (repo / "requirements.txt").write_text(requirements)
    (repo / "slipway.yaml").write_text(spec)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "v1")
    git(repo, "tag", "v1")
    if broken:
        shutil.copy(EXAMPLE / "demo" / "app_v2.py", repo / "src" / "app.py")
        shutil.copy(EXAMPLE / "demo" / "test_app_v2.py", repo / "tests" / "test_app.py")
        git(repo, "commit", "-qam", "v2")
        git(repo, "tag", "v2")
    return repo
