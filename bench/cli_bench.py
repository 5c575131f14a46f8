"""What a user waits for: the `slipway` command as a whole process, with Prefect's default settings, next to the
in-process figures, in one run. Run: `.venv/bin/python bench/cli_bench.py [--reps N]`.

On the embedded local stack (its own SLIPWAY_HOME, ports chosen at run time, stopped at the end) with
examples/hello-lambda released to dev → staging → prod:

1. `slipway --help`.
2. `slipway release` of a new commit, then an unchanged re-release of it (nothing to build: three re-verifications),
   wall and CPU (this process's children) per command; and the ratio of the two.
3. `slipway release --only dev` of a new commit: CPU per release of one app to dev.
4. `slipway history APP --env dev` against a bare boto3 read of the same ledger objects (list + get) in a fresh
   interpreter.
5. In process (this interpreter, the flows called as functions): the release flow to dev only against the same steps
   called as plain functions (bench/peers_bench.py's `plain_release`), and the requests one release makes: Prefect
   API requests (counted on httpx's transport) and AWS requests (botocore's `before-send` on every client), for an
   unchanged re-release to dev → staging → prod and for a new commit to dev.

Prints one table with the issue's targets beside the figures and writes bench/out/cli_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchenv import ROOT, git, isolate, make_example_repo  # noqa: E402

OUT = ROOT / "bench" / "out"
SLIPWAY = [sys.executable, "-m", "slipway.cli"]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cmd(argv: list[str], env: dict, ok: tuple[int, ...] = (0,)) -> tuple[float, float, str]:
    """(wall s, CPU s, output) of one whole process."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    proc = subprocess.run(argv, env=env, text=True, capture_output=True, cwd=ROOT)
    wall, cpu = time.perf_counter() - t0, children_cpu() - cpu0
    if proc.returncode not in ok:
        raise RuntimeError(f"{' '.join(argv[2:])} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-600:]}")
    return wall, cpu, proc.stdout


def median(samples: list[tuple[float, float]]) -> dict:
    return {"wall_s": round(statistics.median(s[0] for s in samples), 3), "cpu_s": round(statistics.median(s[1] for s in samples), 3),
            "n": len(samples)}


def new_commit(repo: Path, n: int) -> str:
    (repo / "src" / "app.py").write_text((repo / "src" / "app.py").read_text() + f"\n# revision {n}\n")
    git(repo, "commit", "-qam", f"revision {n}")
    git(repo, "tag", f"r{n}")
    return f"r{n}"


BARE_BOTO3 = r"""
import sys, boto3
endpoint, bucket, prefix = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])]
for key in keys:
    s3.get_object(Bucket=bucket, Key=key)["Body"].read()
print(len(keys))
"""


class RequestCounter:
    """Counts Prefect API requests (httpx transports) and AWS requests (botocore before-send) made in this process."""

    def __init__(self) -> None:
        self.prefect = 0
        self.aws = 0
        self.aws_by_op: dict[str, int] = {}

    def install(self) -> None:
        import botocore.client
        import httpx

        counter = self
        for transport in (httpx.AsyncHTTPTransport, httpx.HTTPTransport):
            original = transport.handle_async_request if transport is httpx.AsyncHTTPTransport else transport.handle_request
            if transport is httpx.AsyncHTTPTransport:
                async def handle(self, request, _orig=original):
                    counter.prefect += "/api/" in str(request.url)
                    return await _orig(self, request)
                transport.handle_async_request = handle
            else:
                def handle_sync(self, request, _orig=original):
                    counter.prefect += "/api/" in str(request.url)
                    return _orig(self, request)
                transport.handle_request = handle_sync
        original_init = botocore.client.BaseClient.__init__

        def init(client, *args, **kwargs):
            original_init(client, *args, **kwargs)
            client.meta.events.register("before-send", counter._aws)

        botocore.client.BaseClient.__init__ = init

    def install_runs(self) -> None:
        """Count task runs and flow runs (subflows included) started in this process."""
        from prefect.flows import Flow
        from prefect.tasks import Task

        counter = self
        for cls, attr in ((Task, "tasks"), (Flow, "flows")):
            original = cls.__call__

            def call(obj, *args, _orig=original, _attr=attr, **kwargs):
                setattr(counter, _attr, getattr(counter, _attr) + 1)
                return _orig(obj, *args, **kwargs)

            cls.__call__ = call

    tasks = 0
    flows = 0

    def _aws(self, request, **kwargs) -> None:
        self.aws += 1
        op = kwargs.get("event_name", "").removeprefix("before-send.")
        self.aws_by_op[op] = self.aws_by_op.get(op, 0) + 1

    def snapshot(self) -> tuple[int, int, int, int]:
        return self.prefect, self.aws, self.tasks, self.flows


def in_process(info: dict, repo: Path, reps: int) -> dict:
    """The flows called as functions in this process (heartbeats off, as the CLI runs them), with request counts."""
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    counter = RequestCounter()
    counter.install()
    out: dict = {}
    with temporary_settings(updates={PREFECT_API_URL: info["env"]["PREFECT_API_URL"], PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        from flows.release import release

        counter.install_runs()
        release(repo_url=f"file://{repo}", ref="v1")  # warm: imports, caches, the first flow run
        p0, a0, k0, f0 = counter.snapshot()
        t0 = time.perf_counter()
        release(repo_url=f"file://{repo}", ref="v1")
        out["unchanged_3_envs"] = {"wall_s": round(time.perf_counter() - t0, 3), "prefect_requests": counter.prefect - p0,
                                   "aws_requests": counter.aws - a0, "task_runs": counter.tasks - k0, "flow_runs": counter.flows - f0}
        ref = new_commit(repo, 900)
        p0, a0, n0, f0 = counter.snapshot()
        t0, c0, k0 = time.perf_counter(), time.process_time(), children_cpu()
        release(repo_url=f"file://{repo}", ref=ref, only=["dev"])
        out["new_commit_dev"] = {"wall_s": round(time.perf_counter() - t0, 3), "prefect_requests": counter.prefect - p0,
                                 "aws_requests": counter.aws - a0, "task_runs": counter.tasks - n0, "flow_runs": counter.flows - f0,
                                 # the orchestration's own CPU (this process), and the repository's tests, pip and git (children)
                                 "cpu_s": round(time.process_time() - c0, 3), "children_cpu_s": round(children_cpu() - k0, 3)}
        out["flow_vs_plain"] = flow_vs_plain(release, reps)
        out["engine"] = engine_costs(reps)
    return out


def engine_costs(reps: int) -> dict:
    """Prefect's own price on this machine and server, with nothing inside: a flow run, and what one more subflow run
    and one more task run add to it (the fastest of several runs). The release flow's overhead over plain functions is about (task runs ×
    task) + (subflow runs × subflow) + one flow run: the floor while each stage is a task and each environment a subflow."""
    from prefect import flow, task

    @flow(name="bench-empty-subflow")
    def sub() -> None:
        return None

    @task(name="bench-empty-task")
    def step() -> None:
        return None

    @flow(name="bench-engine")
    def parent(subflows: int, tasks: int) -> None:
        for _ in range(subflows):
            sub()
        for _ in range(tasks):
            step()

    def timed(subflows: int, tasks: int) -> float:
        """The fastest of several runs: on the embedded (SQLite) server a write that races another is answered 503 and
        retried by Prefect's client after about 2 s, which a median of few runs can land on; this is the floor."""
        samples = []
        for _ in range(max(reps, 5)):
            t0 = time.perf_counter()
            parent(subflows, tasks)
            samples.append(time.perf_counter() - t0)
        return min(samples)

    parent(0, 0)  # warm
    empty = timed(0, 0)
    return {"flow_run_s": round(empty, 3), "subflow_run_s": round((timed(3, 0) - empty) / 3, 3),
            "task_run_s": round((timed(0, 10) - empty) / 10, 3)}


def flow_vs_plain(release, reps: int) -> dict:
    """The release flow to dev against the same steps as plain functions, each on a fresh app (nothing reused)."""
    import peers_bench

    flows, plains = [], []
    for i in range(reps):
        repo = peers_bench.make_repo(f"cliflow{i}")
        t0 = time.perf_counter()
        release(repo_url=f"file://{repo}", ref="v1", only=["dev"])
        flows.append(time.perf_counter() - t0)
        plain_repo = peers_bench.make_repo(f"cliplain{i}")
        t0 = time.perf_counter()
        peers_bench.plain_release(plain_repo)
        plains.append(time.perf_counter() - t0)
    flow_s, plain_s = statistics.median(flows), statistics.median(plains)
    return {"flow_s": round(flow_s, 3), "plain_s": round(plain_s, 3), "ratio": round(flow_s / plain_s, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    work = isolate("slipway-cli-bench-")
    import peers_bench

    peers_bench.WORK = work
    from deployments.local_blocks import save_local_blocks
    from slipway.local import stack as localstack

    info = localstack.up(work / "home")
    try:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: info["env"]["PREFECT_API_URL"]}):
            save_local_blocks(info["env"]["AWS_ENDPOINT_URL"], info["bucket"], info["role_arn"], localstack.REGION)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_LOGGING")}
        env.update(PREFECT_API_URL=info["env"]["PREFECT_API_URL"])
        results = measure(info, env, work, args.reps)
    finally:
        localstack.down(work / "home")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cli_bench.json").write_text(json.dumps(results, indent=2))
    print(render(results))
    return 0


def measure(info: dict, env: dict, work: Path, reps: int) -> dict:
    repo = make_example_repo(work / "repo", "clibench")
    url = f"file://{repo}"
    res: dict = {"help": median([run_cmd([*SLIPWAY, "--help"], env)[:2] for _ in range(5)])}
    run_cmd([*SLIPWAY, "release", url, "--ref", "v1"], env)  # the first release: the stack's first flow runs
    new, unchanged = [], []
    for i in range(reps):
        ref = new_commit(repo, i)
        new.append(run_cmd([*SLIPWAY, "release", url, "--ref", ref], env)[:2])
        unchanged.append(run_cmd([*SLIPWAY, "release", url, "--ref", ref], env)[:2])
    res["release_new_commit"], res["release_unchanged"] = median(new), median(unchanged)
    res["unchanged_vs_new"] = round(res["release_unchanged"]["wall_s"] / res["release_new_commit"]["wall_s"], 2)
    res["release_dev_new_commit"] = median([run_cmd([*SLIPWAY, "release", url, "--ref", new_commit(repo, 100 + i), "--only", "dev"], env)[:2]
                                            for i in range(reps)])
    res["history"] = median([run_cmd([*SLIPWAY, "history", "clibench", "--env", "dev"], env)[:2] for _ in range(5)])
    bare = [sys.executable, "-c", BARE_BOTO3, info["env"]["AWS_ENDPOINT_URL"], info["bucket"], "slipway/ledger/clibench/dev/"]
    res["bare_boto3_read"] = median([run_cmd(bare, env)[:2] for _ in range(5)])
    res["history_vs_bare"] = round(res["history"]["wall_s"] / res["bare_boto3_read"]["wall_s"], 2)
    res["in_process"] = in_process(info, make_example_repo(work / "repo-inproc", "clibench-inproc"), reps)
    return res


# The figures in issue 13 (same machine, same settings), printed beside today's.
FILED = {
    "release, unchanged re-release, dev → staging → prod (CLI)": "14.8 s wall, 7.8 s CPU",
    "unchanged ÷ new commit": "0.89× (15.6 s vs 16.7 s)",
    "`slipway history APP --env dev`": "4.5 s wall, 4.2 s CPU",
    "bare boto3 read of the same ledger objects (fresh interpreter)": "0.46 s",
    "history ÷ bare boto3": "9.8×",
    "in process: release flow to dev ÷ the same steps as plain functions": "2.5× (+1.7 s)",
    "in process: CPU of one release to dev, new commit (this process; the app's tests, pip and git apart)": "1.48 s",
}


def render(r: dict) -> str:
    ip = r["in_process"]
    rows = [
        ("`slipway --help`", f"{r['help']['wall_s']:.2f} s", "≤ 0.2 s"),
        ("release, new commit, dev → staging → prod (CLI)", f"{r['release_new_commit']['wall_s']:.2f} s wall, {r['release_new_commit']['cpu_s']:.2f} s CPU", ""),
        ("release, unchanged re-release, dev → staging → prod (CLI)", f"{r['release_unchanged']['wall_s']:.2f} s wall, {r['release_unchanged']['cpu_s']:.2f} s CPU", "≤ 3 s"),
        ("unchanged ÷ new commit", f"{r['unchanged_vs_new']:.2f}×", "≤ 0.35×"),
        ("release of one app to dev, new commit (CLI)", f"{r['release_dev_new_commit']['wall_s']:.2f} s wall, {r['release_dev_new_commit']['cpu_s']:.2f} s CPU", ""),
        ("`slipway history APP --env dev`", f"{r['history']['wall_s']:.2f} s wall, {r['history']['cpu_s']:.2f} s CPU", ""),
        ("bare boto3 read of the same ledger objects (fresh interpreter)", f"{r['bare_boto3_read']['wall_s']:.2f} s", ""),
        ("history ÷ bare boto3", f"{r['history_vs_bare']:.2f}×", "≤ 2×"),
        ("in process: release flow to dev ÷ the same steps as plain functions",
         f"{ip['flow_vs_plain']['ratio']:.2f}× ({ip['flow_vs_plain']['flow_s']:.2f} s vs {ip['flow_vs_plain']['plain_s']:.2f} s)", "≤ 1.3×"),
        ("in process: unchanged re-release, 3 environments", f"{ip['unchanged_3_envs']['wall_s']:.2f} s; {ip['unchanged_3_envs']['prefect_requests']} Prefect API, "
         f"{ip['unchanged_3_envs']['aws_requests']} AWS requests; {ip['unchanged_3_envs']['flow_runs']} flow runs, "
         f"{ip['unchanged_3_envs']['task_runs']} task runs", ""),
        ("in process: new commit to dev", f"{ip['new_commit_dev']['wall_s']:.2f} s; {ip['new_commit_dev']['prefect_requests']} Prefect API, "
         f"{ip['new_commit_dev']['aws_requests']} AWS requests; {ip['new_commit_dev']['flow_runs']} flow runs, "
         f"{ip['new_commit_dev']['task_runs']} task runs", ""),
        ("Prefect's own cost here: an empty flow run / one more subflow run / one more task run",
         f"{ip['engine']['flow_run_s'] * 1000:.0f} / {ip['engine']['subflow_run_s'] * 1000:.0f} / {ip['engine']['task_run_s'] * 1000:.0f} ms", ""),
    ]
    rows.insert(5, ("in process: CPU of one release to dev, new commit (this process; the app's tests, pip and git apart)",
                    f"{ip['new_commit_dev']['cpu_s']:.2f} s (+ {ip['new_commit_dev']['children_cpu_s']:.2f} s in child processes)",
                    "≤ 0.74 s"))
    lines = ["| what | when the issue was filed | measured | target |", "|---|---|---|---|"] + [
        f"| {a} | {FILED.get(a, '')} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
