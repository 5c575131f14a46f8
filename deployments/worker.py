"""`make worker`: a Prefect process worker for the `slipway` pool, pointed at PREFECT_API_URL or, when that is not
set, at the local stack (as `make deploy` does). More client retries than Prefect's default (5): a SQLite server
answers writes that race with HTTP 503, and a worker whose run submission runs out of retries marks the run Crashed."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

WORKER_CLIENT_RETRIES = "10"


def worker_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if environ is None else environ)
    if not env.get("PREFECT_API_URL"):
        from slipway.local import stack as localstack

        status = localstack.status()
        if not status.get("running"):
            raise SystemExit("error: no PREFECT_API_URL and the local stack is not running: `slipway local up`, or export "
                             "PREFECT_API_URL for your server")
        env.update(status["env"])
    env.setdefault("PREFECT_CLIENT_MAX_RETRIES", WORKER_CLIENT_RETRIES)
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="slipway")
    args, rest = parser.parse_known_args(argv)
    env = worker_env()
    bin_dir = Path(sys.executable).parent
    prefect = str(bin_dir / "prefect") if (bin_dir / "prefect").exists() else None
    argv_out = [prefect, "worker", "start", "--pool", args.pool, *rest] if prefect else \
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", args.pool, *rest]
    print(f"worker for pool {args.pool} at {env['PREFECT_API_URL']}", flush=True)
    os.execve(argv_out[0], argv_out, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
