"""The build-once stages: clone → spec → tests → build → preflight → publish (a Lambda zip), each a thin task.

Tests are cached on the build key (commit + build/test configuration), so re-releasing an unchanged commit does not
run them again; the artifact itself is found through the store's durable build pointer.
"""

from __future__ import annotations

import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from prefect import get_run_logger, task
from prefect.blocks.system import Secret
from prefect.cache_policies import NO_CACHE
from pydantic import SecretStr

import slipway
from slipway.artifact.lambda_zip import build_lambda_zip
from slipway.core.errors import SpecError
from slipway.core.models import ArtifactRef, BuiltZip, Provenance
from slipway.source.git import Checkout, clone_at_ref
from slipway.source.testrun import run_tests
from slipway.spec.loading import check_spec_against_checkout, load_spec
from slipway.spec.schema import Spec
from tasks.wiring import TRANSIENT_RETRIES, load_block, open_store


def release_id_for(commit: str, sha256: str) -> str:
    return f"{commit[:10]}-{sha256.removeprefix('sha256:')[:8]}"


def builder_versions() -> dict[str, str]:
    return {"slipway": slipway.__version__, "python": platform.python_version(), "platform": sys.platform}


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@task(name="check-artifact-store", **TRANSIENT_RETRIES)
def check_artifact_store(store_block: str) -> None:
    store, _ = open_store(store_block)
    store.check_access()


@task(name="clone-repo", **TRANSIENT_RETRIES)
def clone_repo(repo_url: str, ref: str, git_token_block: str | None = None) -> Checkout:
    token = None
    if git_token_block:
        secret = load_block(
            Secret, git_token_block, missing=f"no Secret block named {git_token_block!r} for the git token",
            hint="create it (Secret(value=...).save(NAME)) or drop --git-token-block", ref="git-token-block-missing",
        )
        token = secret.get()
    checkout = clone_at_ref(repo_url, ref, token=SecretStr(token) if token else None)
    get_run_logger().info("cloned %s at %s → %s (%s)", checkout.repo_url, ref, checkout.commit, checkout.subject)
    return checkout


@task(name="load-spec", cache_policy=NO_CACHE)
def release_spec(checkout: Checkout, spec_path: str | None, store_block: str, app: str | None, spec_digest: str | None) -> Spec:
    """The checkout's spec, or (``spec_digest``) the one a release of ``app`` recorded; either way it must describe
    ``app`` when one is asked for, and fit the checkout."""
    if spec_digest and not app:
        raise SpecError("a recorded spec is named by its app and its digest", hint="pass app with spec_digest", ref="spec-app-mismatch")
    if spec_digest:
        spec = recorded_spec(store_block, app, spec_digest)
        source = f"the spec recorded by {app}'s release ({spec_digest[:12]})"
    else:
        spec = load_spec(checkout.path, spec_path)
        source = spec_path or "slipway.yaml"
    if app and spec.app != app:
        raise SpecError(f"{source} describes app {spec.app!r}, not {app!r}", hint="pass the spec of the app being released (--spec)",
                        ref="spec-app-mismatch")
    check_spec_against_checkout(spec, checkout.path)
    get_run_logger().info("spec ok (%s): app %s, environments %s", source, spec.app, " → ".join(e.name for e in spec.environments))
    return spec


def record_spec(store_block: str, spec: Spec) -> str:
    """The spec, recorded in the store by its digest: what the environments' stages read (see ArtifactStore.put_spec)."""
    store, _ = open_store(store_block)
    return store.put_spec(spec)


def recorded_spec(store_block: str, app: str, digest: str) -> Spec:
    store, _ = open_store(store_block)
    return store.read_spec(app, digest)


@task(name="find-published-artifact", **TRANSIENT_RETRIES)
def find_published_artifact(store_block: str, app: str, build_key: str, commit: str) -> ArtifactRef | None:
    """What this commit and build configuration already published: the pointer proven against the artifact's manifest
    (a pointer naming another commit's artifact stops the release as tampering)."""
    store, _ = open_store(store_block)
    found = store.find_build(app, build_key, commit)
    if found:
        get_run_logger().info("artifact already published for this commit and build config: %s (reused, not rebuilt)", found.uri)
    return found


def _tests_cache_key(context, parameters) -> str:
    return f"slipway-tests-{parameters['build_key']}"


@task(name="run-tests", cache_key_fn=_tests_cache_key, persist_result=True)
def run_app_tests(checkout: Checkout, spec: Spec, build_key: str) -> dict:
    logger = get_run_logger()
    if spec.test is None:
        logger.info("no test command in slipway.yaml: skipping tests")
        return {"skipped": True}
    app_reqs = getattr(spec.artifact, "requirements", None)  # lambda-zip only; an image installs its own in the Dockerfile
    reqs = [checkout.path / r for r in ([app_reqs] if app_reqs else []) + spec.test.requirements]
    report = run_tests(checkout.path, spec.test.command, reqs, timeout_s=spec.test.timeout)
    for note in report.cache_notes:
        logger.warning("%s", note)
    logger.info("tests %s in %.1fs (exit %s)\n%s", "passed" if report.passed else "FAILED", report.duration_s, report.exit_code, report.output_tail)
    report.raise_for_failure()
    return {"skipped": False, "passed": True, "duration_s": round(report.duration_s, 2), "command": report.command}


@task(name="build-lambda-zip", **TRANSIENT_RETRIES)  # retried only when the package index or the network failed
def build_artifact(checkout: Checkout, spec: Spec) -> BuiltZip:
    out = Path(tempfile.mkdtemp(prefix="slipway-build-"))
    reqs = checkout.path / spec.artifact.requirements if spec.artifact.requirements else None
    built = build_lambda_zip(checkout.path / spec.artifact.source, out, requirements=reqs, runtime=spec.artifact.runtime,
                             report=get_run_logger().warning)
    get_run_logger().info("built %s: %s bytes zipped, %s unzipped, %s files", built.path.name, built.size, built.unzipped_size, built.file_count)
    return BuiltZip(path=str(built.path), sha256=built.sha256, size=built.size, unzipped_size=built.unzipped_size, file_count=built.file_count)


def _log_checks(checks) -> None:
    logger = get_run_logger()
    for check in checks:
        (logger.info if check.passed else logger.error)("preflight %s: %s: %s", check.name, "ok" if check.passed else "FAILED", check.detail)


@task(name="preflight", cache_policy=NO_CACHE)
def preflight_zip(built: BuiltZip, checkout: Checkout, spec: Spec) -> list[dict]:
    """Before anything is published or deployed: the zip's imports resolve and its handler imports (see slipway.artifact.preflight)."""
    from slipway.artifact import preflight

    source = checkout.path / spec.artifact.source
    source_files = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.py") if "__pycache__" not in p.parts)
    budget = spec.artifact.max_unzipped_mb
    checks = preflight.lambda_zip_checks(Path(built.path), handler=spec.artifact.handler, source_files=source_files,
                                         requirements=spec.artifact.requirements, runtime=spec.artifact.runtime,
                                         max_unzipped_bytes=budget * 1024**2 if budget else None,
                                         environment=spec.import_environment(), source=spec.artifact.source,
                                         outside_source=preflight.repository_modules_outside(checkout.path, spec.artifact.source))
    _log_checks(checks)
    preflight.raise_for_failures(checks)
    return [c.to_dict() for c in checks]


@task(name="publish-artifact", **TRANSIENT_RETRIES)
def publish_artifact(store_block: str, built: BuiltZip, checkout: Checkout, spec: Spec, build_key: str, tests: dict) -> ArtifactRef:
    store, _ = open_store(store_block)
    provenance = Provenance(
        app=spec.app, release_id=release_id_for(checkout.commit, built.sha256), artifact_sha256=built.sha256,
        artifact_size=built.size, unzipped_size=built.unzipped_size, file_count=built.file_count,
        commit=checkout.commit, commit_subject=checkout.subject, committed_at=checkout.committed_at, ref=checkout.ref, repo=checkout.repo_url,
        spec_digest=spec.digest(), build_key=build_key, runtime=spec.artifact.runtime, handler=spec.artifact.handler,
        builder=builder_versions(), tests=tests, built_at=now_iso(),
    )
    ref = store.publish(Path(built.path), provenance)
    get_run_logger().info("%s %s (sha256 %s)", "reused" if ref.reused else "published", ref.uri, ref.sha256)
    return ref
