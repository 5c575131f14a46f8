"""Many apps at once, as a team releases them: 1, 5 and 20 `slipway release` processes started together (each a
distinct app, to dev), against the embedded stack's Prefect server (SQLite) and against a Prefect server on
PostgreSQL, both using the same local AWS endpoint. Run: `.venv/bin/python bench/scale_bench.py [--counts 1 5 20]`.

Per row: the wall time until the last release ended, its ratio to the single app's, the median release, how many
failed (and the first error), and the CPU per app (this script's child processes: the `slipway` commands and what
they ran, the app's tests and pip among them, divided by the number of apps). PostgreSQL is Debian's package (a
private cluster on a free port, removed at the end); without it that half says so. Its own SLIPWAY_HOME, ports
chosen at run time, everything stopped at the end. Writes bench/out/scale_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import ROOT, isolate, make_example_repo  # noqa: E402

OUT = ROOT / "bench" / "out"
PG_BIN = Path("/usr/lib/postgresql/15/bin")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def release_at_once(env: dict, repos: list[Path]) -> dict:
    """Start one `slipway release --only dev` per repository together; wait for all."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    procs = [(subprocess.Popen([sys.executable, "-m", "slipway.cli", "release", f"file://{repo}", "--ref", "v1", "--only", "dev"],
                               env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), time.perf_counter())
             for repo in repos]
    walls, errors = [], []
    for proc, started in procs:
        out, err = proc.communicate()
        walls.append(time.perf_counter() - started)
        if proc.returncode != 0:
            errors.append(next((line for line in (err + out).splitlines() if line.startswith("error:")), (err or out)[-200:]))
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    return {"apps": len(repos), "wall_s": round(wall, 2), "median_release_s": round(statistics.median(walls), 2),
            "failed": len(errors), "first_error": errors[0][:240] if errors else None, "cpu_per_app_s": round(cpu / len(repos), 2)}


def run_server(name: str, env: dict, work: Path, counts: list[int]) -> list[dict]:
    rows = []
    for n in counts:
        repos = [make_example_repo(work / f"{name}-{n}-{i}", f"{name}{n}-{i}") for i in range(n)]
        row = release_at_once(env, repos)
        rows.append(row)
        print(f"  {name}: {n} app(s): {row['wall_s']} s, {row['failed']} failed", flush=True)
    return rows


# ---- PostgreSQL and a Prefect server on it -------------------------------------------------------------------
class Postgres:
    """A private cluster (trust auth, 127.0.0.1, a free port), run as the postgres user as Debian does."""

    def __init__(self) -> None:
        from slipway.local.stack import free_port

        self.root = Path(tempfile.mkdtemp(prefix="slipway-bench-postgres-"))
        shutil.chown(self.root, "postgres")
        self.port = free_port()
        self.as_postgres = ["runuser", "-u", "postgres", "--"]

    def start(self) -> str:
        subprocess.run([*self.as_postgres, str(PG_BIN / "initdb"), "-D", str(self.root / "data"), "--auth=trust", "-U", "postgres"],
                       check=True, capture_output=True)
        subprocess.run([*self.as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "server.log"),
                        "-w", "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200", "start"],
                       check=True, capture_output=True)
        subprocess.run([str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "prefect"], check=True)
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/prefect"

    def stop(self) -> None:
        subprocess.run([*self.as_postgres, str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def prefect_server(home: Path, database_url: str) -> tuple[subprocess.Popen, str]:
    """A Prefect server as `slipway local up` starts its own, on ``database_url``."""
    from slipway.local import stack

    port = stack.free_port()
    (stack.stack_dir(home) / "prefect").mkdir(parents=True, exist_ok=True)
    env = {**stack._prefect_env(port, home), "PREFECT_SERVER_DATABASE_CONNECTION_URL": database_url}
    proc = subprocess.Popen(stack._prefect_command(port, home), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(url + "/health", timeout=2).status == 200:
                return proc, url
        except (OSError, urllib.error.HTTPError):
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise RuntimeError("the Prefect server on PostgreSQL did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 5, 20])
    args = parser.parse_args()
    work = isolate("slipway-scale-bench-")
    from deployments.local_blocks import save_local_blocks
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from slipway.local import stack as localstack

    info = localstack.up(work / "home")
    results: dict = {"counts": args.counts}
    pg = server = None
    try:
        def blocks_on(url: str) -> None:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                save_local_blocks(info["env"]["AWS_ENDPOINT_URL"], info["bucket"], info["role_arn"], localstack.REGION, health_timeout=5)

        base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING")}
        blocks_on(info["env"]["PREFECT_API_URL"])
        print("embedded server (SQLite):", flush=True)
        results["sqlite"] = run_server("sq", {**base, "PREFECT_API_URL": info["env"]["PREFECT_API_URL"]}, work, args.counts)
        if not (PG_BIN / "initdb").exists():
            results["postgres"] = "PostgreSQL 15 (Debian's postgresql) is not installed"
        else:
            pg = Postgres()
            server, url = prefect_server(work / "pg-home", pg.start())
            blocks_on(url)
            print("Prefect on PostgreSQL:", flush=True)
            results["postgres"] = run_server("pg", {**base, "PREFECT_API_URL": url}, work, args.counts)
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if pg is not None:
            pg.stop()
        localstack.down(work / "home")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "scale_bench.json").write_text(json.dumps(results, indent=2))
    print(render(results))
    return 0


def render(r: dict) -> str:
    lines = ["| server | apps at once | wall (× one app) | median release | failed | CPU per app |", "|---|---|---|---|---|---|"]
    for key, label in (("sqlite", "embedded (SQLite)"), ("postgres", "PostgreSQL")):
        rows = r.get(key)
        if isinstance(rows, str):
            lines.append(f"| {label} | — | {rows} | | | |")
            continue
        one = rows[0]["wall_s"] if rows else 1
        for row in rows:
            failed = f"{row['failed']}" + (f" ({row['first_error']})" if row["first_error"] else "")
            lines.append(f"| {label} | {row['apps']} | {row['wall_s']:.1f} s ({row['wall_s'] / one:.1f}×) | {row['median_release_s']:.1f} s "
                         f"| {failed} | {row['cpu_per_app_s']:.2f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
