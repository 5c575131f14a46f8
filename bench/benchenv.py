"""What every benchmark script does first: its own SLIPWAY_HOME / Prefect home under a fresh temporary directory
(so it starts its own local stack and never touches yours), quiet Prefect logs, the repository on sys.path."""

from __future__ import annotations

import os
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
