"""The fault-injection matrix: for each AWS step of a release, inject a real fault (throttling, a 5xx, access denied, a
dropped connection) through a proxy in front of the local AWS, then check the invariants:

- the environment serves a verified release at 100% (the alias is on the ledger's live version, no weights) and that
  version runs the release's code (CodeSha256);
- the ledger agrees with the live state and has nothing in progress; its sequence numbers have no gaps;
- no artifact was lost or overwritten (every stored zip still hashes to its name);
- the next release succeeds.

A rollback that cannot complete (its own calls denied) leaves the environment for a human, reported as such; the
check is then that `slipway rollback` (the rollback flow) restores it once the fault is gone. The matrix is printed.
"""

from __future__ import annotations

import base64
import hashlib
import os

import pytest

from faultproxy import FaultProxy, Rule

pytestmark = pytest.mark.flows

STEPS = {  # step → (operation, path filter, skip): which request of the release gets the fault
    "publish artifact": ("S3Put", "/artifacts/", 0),
    "create version": ("PublishVersion", "", 0),
    "shift alias": ("UpdateAlias", "", 0),
    "verify (invoke)": ("Invoke", "", 0),
    "ledger write": ("S3Put", "/ledger/", 0),
    "rollback itself": ("UpdateAlias", "", 1),  # the release's own shift passes; the rollback's is faulted (v2 is broken)
}
FAULTS = {  # fault → (kind, times)
    "throttled": ("throttle", 1),
    "5xx": ("5xx", 1),
    "access denied": ("denied", -1),
}
if os.environ.get("SLIPWAY_FAULT_MATRIX") == "full":
    # + a dropped connection, and SIGKILL of the release process when the request arrives (each kill inside the lock
    # costs the lock's 60 s lease before the next release can reconcile: about 6 minutes more; CI runs the rest)
    FAULTS = {**dict(list(FAULTS.items())[:2]), "connection reset": ("reset", 1), "access denied": ("denied", -1),
              "SIGKILL": ("kill", 1)}
RESULTS: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module")
def faulty(prefect_api):
    """A proxy in front of the session's local AWS, and blocks (store `faulty`, lambda target `faulty`) that use it."""
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    from blocks import ArtifactStoreBlock, LambdaTargetBlock

    proxy = FaultProxy(upstream=prefect_api["env"]["AWS_ENDPOINT_URL"])
    url = proxy.start()
    creds = AwsCredentials(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1",
                           aws_client_parameters=AwsClientParameters(endpoint_url=url))
    ArtifactStoreBlock(bucket=prefect_api["bucket"], prefix="slipway", credentials=creds).save("faulty", overwrite=True)
    LambdaTargetBlock(credentials=creds, role_arn=prefect_api["role_arn"], metrics_period_s=1, metrics_delay_s=0).save("faulty", overwrite=True)
    yield proxy
    proxy.stop()
    if RESULTS:
        print("\n" + render_matrix(RESULTS))


def render_matrix(results: dict[tuple[str, str], str]) -> str:
    faults = list(FAULTS)
    lines = ["| step | " + " | ".join(faults) + " |", "|---|" + "---|" * len(faults)]
    for step in STEPS:
        lines.append(f"| {step} | " + " | ".join(results.get((step, f), "—") for f in faults) + " |")
    return "fault-injection matrix (outcome; invariants checked after each cell):\n" + "\n".join(lines)


def _aws(prefect_api, service: str):
    import boto3

    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    return session.client(service, endpoint_url=prefect_api["env"]["AWS_ENDPOINT_URL"])


class App:
    def __init__(self, repo):
        self.repo = repo
        self.n = 1
        spec = (repo.path / "slipway.yaml").read_text()
        spec = spec.replace('test:\n  command: ["python", "-m", "pytest", "-q"]\n', "")  # the matrix is about AWS steps
        spec = spec.replace("  - name: dev\n", "  - name: dev\n    target: faulty\n")
        repo.write("slipway.yaml", spec).commit("faulty target", tag="c1")

    def next_commit(self, broken: bool = False) -> str:
        self.n += 1
        app = (self.repo.path / "src/app.py").read_text()
        import re

        app = re.sub(r'VERSION = "\d+"', f'VERSION = "{self.n}"', app)
        app = app.replace('        raise RuntimeError("broken")\n', "")
        if broken:
            app = app.replace('    if event.get("path") == "/health":\n', '    if event.get("path") == "/health":\n        raise RuntimeError("broken")\n', 1)
        self.repo.write("src/app.py", app).commit(f"v{self.n}{' (broken)' if broken else ''}", tag=f"c{self.n}")
        return f"c{self.n}"

    def release(self, tag: str):
        from flows.release import release

        return release(repo_url=self.repo.url, ref=tag, only=["dev"], store_block="faulty", return_state=True)

    def release_in_a_process(self, tag: str, proxy: FaultProxy, prefect_api) -> int:
        """Run the release in its own process (the proxy SIGKILLs it); returns its exit status."""
        import subprocess
        import sys

        from conftest import ROOT

        code = ("from flows.release import release; "
                f"release(repo_url={self.repo.url!r}, ref={tag!r}, only=['dev'], store_block='faulty')")
        env = {**os.environ, "PREFECT_API_URL": prefect_api["env"]["PREFECT_API_URL"]}
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        proxy.kill_pid = proc.pid
        return proc.wait(timeout=300)


def invariant_violations(prefect_api, app: str) -> list[str]:
    from tasks.release_tasks import open_store

    store, ledger = open_store("default")
    head = ledger.head(app, "dev")
    problems = []
    if head.in_progress is not None:
        problems.append(f"ledger: {head.in_progress.kind} in progress")
    if head.live is None:
        return problems + ["ledger: nothing live"]
    lam = _aws(prefect_api, "lambda")
    alias = lam.get_alias(FunctionName=f"{app}-dev", Name="live")
    if alias["FunctionVersion"] != head.live.version:
        problems.append(f"alias on {alias['FunctionVersion']}, ledger says {head.live.version}")
    if (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights"):
        problems.append(f"alias still weighted: {alias['RoutingConfig']}")
    conf = lam.get_function_configuration(FunctionName=f"{app}-dev", Qualifier=head.live.version)
    if conf["CodeSha256"] != base64.b64encode(bytes.fromhex(head.live.artifact_sha256)).decode():
        problems.append("live version runs other code than the ledger's release")
    seqs = [e.seq for e in ledger.entries(app, "dev")]
    if seqs != list(range(1, len(seqs) + 1)):
        problems.append(f"ledger sequence has gaps: {seqs}")
    s3 = _aws(prefect_api, "s3")
    listed = s3.list_objects_v2(Bucket=prefect_api["bucket"], Prefix=f"slipway/artifacts/{app}/")
    for obj in listed.get("Contents", []):
        if obj["Key"].endswith(".zip"):
            body = s3.get_object(Bucket=prefect_api["bucket"], Key=obj["Key"])["Body"].read()
            if hashlib.sha256(body).hexdigest() != obj["Key"].rsplit("/", 1)[1].removesuffix(".zip"):
                problems.append(f"artifact {obj['Key']} does not hash to its name")
    return problems


@pytest.mark.parametrize("step", list(STEPS))
def test_fault_matrix(step, faulty, prefect_api, app_repo):
    """One app per step; one release per fault on it, each followed by the invariants and a clean release."""
    from flows.release import rollback

    app = App(app_repo())
    assert app.release("c1").is_completed()
    operation, path, skip = STEPS[step]
    failures = []
    for fault, (kind, times) in FAULTS.items():
        broken = step == "rollback itself"
        tag = app.next_commit(broken=broken)
        rule = faulty.arm(Rule(operation=operation, fault=kind, times=times, skip=skip,
                               path_contains=path + (app.repo.app if path else "")))
        if kind == "kill":
            status = app.release_in_a_process(tag, faulty, prefect_api)
            faulty.clear()
            assert status == -9, f"{step}/{fault}: the release process was not killed (exit {status})"
            from tasks.release_tasks import open_store

            left = open_store("default")[1].head(app.repo.app, "dev").in_progress
            state = app.release(app.next_commit())  # the next run: reconciles first (after the dead run's lock lease)
            kinds = [e.kind for e in open_store("default")[1].entries(app.repo.app, "dev")]
            outcome = ("killed → next release reconciled, then released" if left is not None and "reconciled" in kinds
                       else "killed → nothing in progress; next release released")
            problems = ([] if state.is_completed() else ["the next release failed"]) + invariant_violations(prefect_api, app.repo.app)
            if left is not None and "reconciled" not in kinds:
                problems.append("an in-progress record was left and not reconciled")
            RESULTS[(step, fault)] = outcome + (" ✗ " + "; ".join(problems) if problems else " ✓")
            if problems:
                failures.append(f"{step} × {fault}: {problems}")
            continue
        state = app.release(tag)
        faulty.clear()
        assert rule.injected >= 1, f"{step}/{fault}: the fault was never injected (no request matched)"
        from tasks.release_tasks import open_store

        head = open_store("default")[1].head(app.repo.app, "dev")
        if state.is_completed():
            outcome = "released (retried)"
        elif head.in_progress is not None and head.in_progress.kind == "rollback":
            outcome = "rollback failed → reported; `slipway rollback` restored"
            assert rollback(app=app.repo.app, environment="dev", store_block="faulty", reason="matrix: after the fault").get("to_release")
        elif head.live and head.live.release_id == (getattr(state.result(raise_on_failure=False), "evidence", None) or {}).get("release_id"):
            outcome = "released"
        else:
            recorded = [e.kind for e in open_store("default")[1].entries(app.repo.app, "dev")]
            outcome = "failed → rolled back" if recorded and recorded[-1] == "rolled-back" else "failed → untouched"
        problems = invariant_violations(prefect_api, app.repo.app)
        if not state.is_completed() or broken:  # (a completed release under the fault already shows the next one succeeds)
            if not app.release(app.next_commit()).is_completed():
                problems.append("the next release failed")
            problems += invariant_violations(prefect_api, app.repo.app)
        RESULTS[(step, fault)] = outcome + (" ✗ " + "; ".join(problems) if problems else " ✓")
        if problems:
            failures.append(f"{step} × {fault}: {problems}")
    assert not failures, "\n".join(failures)
