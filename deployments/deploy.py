"""`make deploy`: create the process work pool, register Slipway's block types and deploy everything in prefect.yaml.

Targets the server in PREFECT_API_URL; when that is unset and the local stack is up, the local stack's server.
Run from anywhere: `prefect deploy` runs in this checkout, which becomes the deployments' working directory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POOL = "slipway"


def deploy_all(env: dict[str, str] | None = None, pool: str = POOL, timeout: float = 300) -> str:
    """Returns `prefect deploy`'s output; raises CalledProcessError (with its output) when a step fails."""
    env = {**os.environ, **(env or {})}
    if not env.get("PREFECT_API_URL"):
        from slipway.local import stack as localstack

        status = localstack.status()
        if not status.get("running"):
            raise SystemExit("no PREFECT_API_URL and the local stack is not running: `slipway local up` or export PREFECT_API_URL")
        env.update(status["env"])
    bin_dir = Path(sys.executable).parent
    prefect = [str(bin_dir / "prefect")] if (bin_dir / "prefect").exists() else [sys.executable, "-m", "prefect"]

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*prefect, *args], env=env, cwd=ROOT, text=True, capture_output=True, timeout=timeout, check=check)

    if run("work-pool", "inspect", pool, check=False).returncode != 0:
        # at most 4 runs at once: a SQLite-backed Prefect server (the local stack) answers 503 "database is locked" under
        # 20 parallel releases; raise it (`prefect work-pool set-concurrency-limit`) on PostgreSQL
        run("work-pool", "create", pool, "--type", "process")
        run("work-pool", "set-concurrency-limit", pool, os.environ.get("SLIPWAY_POOL_LIMIT", "4"))
    run("block", "register", "-m", "blocks")
    return run("--no-prompt", "deploy", "--all").stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default=POOL)
    args = parser.parse_args()
    try:
        out = deploy_all(pool=args.pool)
    except subprocess.CalledProcessError as exc:
        print(f"error: `{' '.join(exc.cmd[-3:])}` failed:\n{(exc.stdout or '')[-2000:]}{(exc.stderr or '')[-2000:]}", file=sys.stderr)
        return 1
    print(out.strip()[-3000:])
    print(f"\ndeployed; start a worker: {Path(sys.executable).parent / 'prefect'} worker start --pool {args.pool}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
