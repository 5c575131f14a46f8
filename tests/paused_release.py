"""A release run in a subprocess (as `slipway release` would be) and waited for until it pauses for a decision:
what the approval, freeze-override and INCONCLUSIVE-canary tests answer from the test process."""

from __future__ import annotations

import os
import subprocess
import sys
import time


def start_release(prefect_api, repo, ref: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"], "SLIPWAY_APPROVAL_POLL_S": "1"}
    return subprocess.Popen([sys.executable, "-m", "slipway.cli", "release", repo.url, "--ref", ref, *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_paused(app: str, env: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    from deployments.runner import paused_runs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if paused_runs(app, env):
            return
        time.sleep(0.3)  # polling interval for a state another process reaches, not a wait for an outcome
    raise AssertionError(f"the release never paused: {proc.communicate(timeout=5)}")
