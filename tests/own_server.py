"""A Prefect server process of a test's own, started (and restarted) on one port and home with the embedded stack's
settings (SQLite, lock leases on disk), for tests that kill or configure the server itself."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


class OwnServer:
    """A Prefect server process started (and restarted) on one port and home, as `slipway local up` starts its own."""

    def __init__(self, home: Path, env: dict[str, str] | None = None) -> None:
        from slipway.local import stack

        self.home, self.port, self.env = home, stack.free_port(), dict(env or {})
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        from slipway.local import stack

        (stack.stack_dir(self.home) / "prefect").mkdir(parents=True, exist_ok=True)  # as `local up` makes it
        self.proc = subprocess.Popen(stack._prefect_command(self.port, self.home), env={**stack._prefect_env(self.port, self.home), **self.env},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if urllib.request.urlopen(self.url + "/health", timeout=2).status == 200:
                    return
            except urllib.error.HTTPError:
                return  # it answers (401: it wants credentials)
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("the test's Prefect server did not start")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
