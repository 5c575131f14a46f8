"""Why did the latest release fail? Triage against the last verified release.

When a release fails, the release flow writes a **failure record** to the artifact store
(``diagnostics/{app}/{at}-{run}.json``): the leaf error (stage, reference, evidence), the ledger entries the
release wrote in the failing environment, the preflight checks, and a **diff** against the release that was
verified in that environment before (computed from the clone while it still exists: commits, files, dependency
and spec diffs, artifact size, environment-variable *names*, feature flags).

``diagnose`` turns a record into a **diagnosis**: the failing stage and check with its evidence, a
**classification** with the reasoning that led to it, the diff, and a suggested next action. Pure functions
(``classify``, ``diagnose``, ``compute_diff``) so every rule is unit-tested; no Prefect here.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

Classification = Literal[
    "incompatible-artifact", "code-defect", "configuration", "network-or-aws", "too-large-or-slow", "drift", "lifecycle-hook",
    "unclassified",
]
TITLES: dict[str, str] = {
    "incompatible-artifact": "incompatible artifact",
    "code-defect": "code defect",
    "configuration": "configuration",
    "network-or-aws": "network or AWS availability",
    "too-large-or-slow": "artifact too large or too slow to deploy",
    "drift": "infrastructure drift",
    "lifecycle-hook": "a lifecycle hook refused the release",
    "unclassified": "unclassified",
}

# AWS error codes by what they say about the failure
THROTTLING_CODES = {"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestLimitExceeded", "SlowDown",
                    "ProvisionedThroughputExceededException", "RequestThrottled", "EC2ThrottledException"}
UNAVAILABLE_CODES = {"ServiceException", "ServiceUnavailable", "ServiceUnavailableException", "InternalError", "InternalFailure",
                     "InternalServerError", "RequestTimeout", "RequestTimeoutException", "ResourceConflictException",
                     "500", "502", "503", "504"}
SIZE_CODES = {"RequestEntityTooLargeException", "CodeStorageExceededException", "EntityTooLarge"}
PERMISSION_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError",
                    "UnrecognizedClientException", "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
                    "ExpiredTokenException", "KMSAccessDeniedException"}
IMPORT_ERROR_TYPES = {"Runtime.ImportModuleError", "ModuleNotFoundError", "ImportError", "Runtime.HandlerNotFound",
                      "Runtime.InvalidEntrypoint", "Runtime.InvalidRuntime"}
URL_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
MAX_DIFF_LINES = 60


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class ReleaseDiff(_Model):
    """What changed between the last verified release of an environment and the failed one."""

    environment: str
    baseline_release: str | None = None  # None: nothing was verified there before (a first release)
    baseline_commit: str | None = None
    new_commit: str | None = None
    commits: list[str] = Field(default_factory=list, description="'abc1234 subject', newest first")
    note: str | None = None  # why a part of the diff is missing (baseline not in the clone's history, …)
    files: list[str] = Field(default_factory=list, description="'M src/app.py' (git diff --name-status)")
    dependencies: list[str] = Field(default_factory=list, description="unified diff of requirements/lock files")
    spec: list[str] = Field(default_factory=list, description="unified diff of slipway.yaml (environment values as ***)")
    artifact_size: dict[str, int | None] = Field(default_factory=dict, description="{'baseline': bytes, 'new': bytes}")
    env_keys: dict[str, list[str]] = Field(default_factory=dict, description="added/removed/changed variable NAMES only")
    flags: list[str] = Field(default_factory=list, description="feature flag changes")

    def lines(self) -> list[str]:
        """The diff as plain text lines (the CLI and the markdown report share them)."""
        if not self.baseline_release:
            return [f"no verified release in {self.environment} before this one: nothing to compare with"]
        out = [f"against {self.baseline_release} (commit {(self.baseline_commit or '?')[:12]}), last verified in {self.environment}:"]
        if self.note:
            out.append(f"  note: {self.note}")
        out.append(f"  commits ({len(self.commits)}):" if self.commits else "  commits: none (same commit)")
        out += [f"    {c}" for c in self.commits[:20]] + ([f"    … {len(self.commits) - 20} more"] if len(self.commits) > 20 else [])
        if self.files:
            out.append(f"  files changed ({len(self.files)}):")
            out += [f"    {f}" for f in self.files[:30]] + ([f"    … {len(self.files) - 30} more"] if len(self.files) > 30 else [])
        out.append("  dependencies: " + ("" if self.dependencies else "unchanged"))
        out += [f"    {line}" for line in self.dependencies]
        out.append("  slipway.yaml: " + ("" if self.spec else "unchanged"))
        out += [f"    {line}" for line in self.spec]
        base, new = self.artifact_size.get("baseline"), self.artifact_size.get("new")
        if base is not None and new is not None:
            delta = new - base
            pct = f", {delta / base:+.1%}" if base else ""
            out.append(f"  artifact size: {base:,} → {new:,} bytes ({delta:+,}{pct})")
        elif new is not None:
            out.append(f"  artifact size: {new:,} bytes (baseline unknown)")
        keys = self.env_keys
        if any(keys.get(k) for k in ("added", "removed", "changed")):
            parts = [f"{label} {', '.join(keys[k])}" for k, label in (("added", "added"), ("removed", "removed"), ("changed", "changed"))
                     if keys.get(k)]
            out.append("  environment variables (names only): " + "; ".join(parts))
        else:
            out.append("  environment variables: unchanged")
        out.append("  feature flags: " + ("" if self.flags else "unchanged"))
        out += [f"    {line}" for line in self.flags]
        return out


class FailureRecord(_Model):
    """Written by the release flow when a release fails; read by ``slipway diagnose``."""

    app: str
    environment: str | None = None  # where it failed; None: before any environment (tests, build, preflight…)
    at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
    run_id: str | None = None
    run_url: str | None = None
    repo: str = ""
    ref: str = ""
    commit: str | None = None
    subject: str | None = None
    release_id: str | None = None
    stage: str
    error: dict[str, Any]  # SlipwayError.to_dict() of the leaf error
    outcome: str | None = None  # what the environment was left on ("rolled back to …", "unchanged …")
    outcome_status: str | None = None  # rolled-back | failed | rollback-failed | …
    ledger: list[dict[str, Any]] = Field(default_factory=list, description="entries this release wrote in that environment")
    preflight: list[dict[str, Any]] = Field(default_factory=list)
    env_keys: list[str] = Field(default_factory=list, description="environment variable names the function gets (no values)")
    diff: ReleaseDiff | None = None


class Diagnosis(_Model):
    app: str
    environment: str | None
    release_id: str | None
    commit: str | None
    at: str
    run_url: str | None = None
    stage: str
    check: str | None  # the leaf check (a smoke check's name, a preflight check, a test id, an AWS call)
    error: str
    error_ref: str | None
    evidence: list[str]
    classification: Classification
    reasoning: list[str]
    next_action: str
    outcome: str | None
    diff: ReleaseDiff | None

    @property
    def title(self) -> str:
        return TITLES[self.classification]

    def text(self) -> str:
        where = f"{self.app}/{self.environment}" if self.environment else self.app
        out = [
            f"diagnosis of the failed release {self.release_id or '(not built)'} of {where} (commit {(self.commit or '?')[:12]}, {self.at})",
            f"  failed at:   {self.stage}" + (f" — {self.check}" if self.check else ""),
            f"  error:       {self.error}",
            f"  cause:       {self.title.upper()}",
        ]
        out += [f"  {'reasoning:' if i == 0 else '':<12} {r}" for i, r in enumerate(self.reasoning)]
        if self.evidence:
            out.append("  evidence:")
            out += [f"    {line}" for line in self.evidence]
        if self.outcome:
            out.append(f"  now:         {self.outcome}")
        out.append(f"  next:        {self.next_action}")
        if self.diff:
            out.append("  diff " + "\n  ".join(self.diff.lines()))
        if self.run_url:
            out.append(f"  run:         {self.run_url}")
        return "\n".join(out)

    def markdown(self) -> str:
        where = f"{self.app}/{self.environment}" if self.environment else self.app
        md = [
            f"# Why release {self.release_id or '(not built)'} of `{where}` failed: {self.title}",
            "",
            f"> **{self.error}**",
            "",
            "| | |",
            "|---|---|",
            f"| stage | {self.stage} |",
            f"| check | {self.check or '—'} |",
            f"| classification | **{self.title}** (`{self.classification}`) |",
            f"| commit | `{self.commit or '—'}` |",
            f"| environment now | {self.outcome or '—'} |",
            f"| next action | {self.next_action} |",
            "",
            "## Reasoning",
            "",
        ] + [f"- {r}" for r in self.reasoning]
        if self.evidence:
            md += ["", "## Evidence", "", "```", *self.evidence, "```"]
        if self.diff:
            md += ["", "## Diff against the last verified release", "", "```", *self.diff.lines(), "```"]
        if self.run_url:
            md += ["", f"[the failed run]({self.run_url})"]
        return "\n".join(md) + "\n"


# ---- classification ------------------------------------------------------------------------------------------
def _failing_checks(error: dict, ledger: list[dict]) -> list[dict]:
    checks = (error.get("evidence") or {}).get("checks")
    if not checks:
        for entry in ledger:
            if entry.get("kind") == "verify-failed":
                checks = (entry.get("detail") or {}).get("checks")
    return [c for c in (checks or []) if not c.get("passed", True)]


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _response_error(check: dict) -> tuple[str | None, str]:
    """(errorType, errorMessage) of a Lambda FunctionError response, or (None, detail)."""
    response = check.get("response")
    if isinstance(response, dict) and ("errorType" in response or "errorMessage" in response):
        return response.get("errorType"), str(response.get("errorMessage", ""))
    return None, str(check.get("detail", ""))


_CARETS = re.compile(r"[~^]+")  # Python 3.11's markers under the failing expression of a traceback frame


def _response_line(response: Any) -> str:
    """A Lambda error response on one line: type, message and the innermost frame (file:line, code), no request id."""
    if isinstance(response, dict) and ("errorType" in response or "errorMessage" in response):
        text = f"{response.get('errorType', 'Error')}: {response.get('errorMessage', '')}"
        match = None
        for frame in reversed(response.get("stackTrace") or []):  # the innermost frame of the app's own code
            flat = " ".join(line for line in str(frame).splitlines() if not _CARETS.fullmatch(line.strip()))
            found = re.search(r'File "([^"]+)", line (\d+), in (\S+)\s*(.*)', " ".join(flat.split()))
            if found and not found.group(1).startswith("<") and "/lib/python3" not in found.group(1):
                match = found
                break
        if match:
            path, line, func, code = match.groups()
            text += f" at {path.rsplit('/', 1)[-1]}:{line} in {func}" + (f": {code.strip()}" if code.strip() else "")
        return _short(text)
    return _short(response)


def _aws_code(error: dict) -> str | None:
    evidence = error.get("evidence") or {}
    code = evidence.get("aws_error_code")
    if code:
        return str(code)
    match = re.search(r"could not [^:]+: ([A-Za-z.]+(?:Exception|Error|Exceeded|Denied|Throttling|Fault)|\d{3}):", error.get("message", ""))
    return match.group(1) if match else None


# What pip, git and HTTP clients print when the network, not the request, failed.
_NETWORK_TROUBLE = (r"(timed out|Temporary failure in name resolution|Name or service not known|Connection (refused|reset|aborted)|"
                    r"NewConnectionError|HTTP error 5\d\d|Max retries exceeded|Network is unreachable|ProxyError|SSLError)")


def classify(record: FailureRecord) -> tuple[Classification, list[str], str | None, list[str]]:
    """(classification, reasoning, leaf check, evidence lines) of a failure record. Rules are tried in order:
    the stage first (where it failed narrows what it can be), then the error's reference and AWS code, then the
    evidence (a smoke check's error type, the canary verdict)."""
    err = record.error
    stage, ref = record.stage, err.get("ref") or ""
    message = err.get("message", "")
    evidence_data = err.get("evidence") or {}
    code = _aws_code(err)
    evidence: list[str] = []
    if code:
        evidence.append(f"AWS error code: {code}" + (f" — {_short(evidence_data.get('aws_message'))}" if evidence_data.get("aws_message") else ""))
    env_note = f" in {record.environment}" if record.environment else ""

    # -- before anything was deployed ------------------------------------------------------------------------
    if stage == "preflight":
        failed = [c for c in (evidence_data.get("checks") or record.preflight) if not c.get("passed", True)]
        check = failed[0]["name"] if failed else None
        evidence += [f"preflight {c['name']}: {c['detail']}" for c in failed] or [message]
        if ref in ("aws-unreachable", "alarms-unavailable"):
            return "network-or-aws", [f"preflight check {check!r} could not reach AWS ({ref})"], check, evidence
        if ref in ("credentials-refused", "credentials-missing", "credentials-invalid", "region-missing", "role-missing", "alarm-missing",
                   "secret-unreadable") or (check or "").endswith((": credentials usable", ": target", ": alarms", ": secrets readable")):
            return "configuration", [
                f"preflight check {check!r} found the environment's account unusable as configured ({ref}), before any deploy",
            ], check, evidence
        missing_var = next((m.group(1) for c in failed if c.get("name") == "handler imports"
                            for m in [re.search(r"KeyError: '([A-Z][A-Z0-9_]*)'", c.get("detail") or "")] if m), None)
        if missing_var:  # module-level code reads a variable the function's configuration does not set: not the packaging
            return "configuration", [
                f"the handler reads the environment variable {missing_var} when it is imported, and the function's configuration "
                "(slipway.yaml) does not set it; found by preflight before anything was published",
                "set it in slipway.yaml (artifact.environment or the environment's environment:) or make the code default it",
            ], check, evidence
        if ref == "artifact-too-large" or any(c.get("ref") == "artifact-too-large" for c in failed):
            return "too-large-or-slow", [
                "the built zip is over a size limit (AWS Lambda's or the spec's budget), found by preflight before anything was published",
            ], check, evidence
        return "incompatible-artifact", [
            f"preflight check {check!r} failed on the built zip, before anything was published",
            "the repository's tests passed, so the code works where the tests ran; the artifact as packaged cannot run on the target "
            "(a module imported but not packaged, a handler that does not import, a wheel for another platform or Python)",
        ], check, evidence
    if stage == "test" and ref != "tests-failed":  # the test environment could not be set up: nothing ran
        tail = str(evidence_data.get("output_tail") or "").strip().splitlines()
        evidence += [message] + [f"| {line}" for line in tail[-12:]]
        if err.get("transient") or re.search(_NETWORK_TROUBLE, "\n".join(tail)):
            return "network-or-aws", ["the test environment could not be installed: the package index could not be reached"], "tests", evidence
        return "configuration", [f"the test environment could not be set up ({ref}): the test requirements or command as configured"], \
            "tests", evidence
    if stage == "test":
        failed_tests = evidence_data.get("failed_tests") or []
        evidence += [f"failed test: {t}" for t in failed_tests[:10]]
        tail = str(evidence_data.get("output_tail") or "").strip().splitlines()
        evidence += [f"| {line}" for line in tail[-12:]]
        return "code-defect", [
            f"the repository's own tests failed on commit {(record.commit or '?')[:12]}; nothing was built or deployed",
        ], (failed_tests[0] if failed_tests else "tests"), evidence
    if stage == "build":
        tail = str(evidence_data.get("output_tail") or "").strip().splitlines()
        evidence += [f"| {line}" for line in tail[-12:]]
        if ref == "artifact-too-large":
            return "too-large-or-slow", ["the build produced an artifact over the size limit"], "build", evidence
        # the transient flag and the network's own words first: pip that cannot reach its index also ends "Could not find a
        # version", which alone would read as a platform mismatch
        if err.get("transient") or re.search(_NETWORK_TROUBLE, "\n".join(tail)):
            return "network-or-aws", ["the build failed reaching a package index or the network: re-run it"], "build", evidence
        if re.search(r"(Could not find a version|No matching distribution|ResolutionImpossible|not a supported wheel)", "\n".join(tail)):
            return "incompatible-artifact", [
                "the dependencies could not be installed for the target platform and runtime (pip found no matching distribution)",
            ], "build", evidence
        return "code-defect", ["the build of the repository's source failed (see the build log tail)"], "build", evidence
    if stage in ("spec", "input"):
        errors = evidence_data.get("errors") or []
        evidence += [f"spec: {_short(e)}" for e in errors[:5]] or [message]
        return "configuration", [f"the {'spec (slipway.yaml)' if stage == 'spec' else 'input'} was refused before anything ran"], stage, evidence
    if stage == "clone":
        evidence.append(message)
        if ref == "unknown-ref":
            return "configuration", ["the ref asked for does not exist in the repository"], "clone", evidence
        if ref == "not-a-repository":
            return "configuration", ["the repository URL names a directory that is not a git repository"], "clone", evidence
        if ref == "host-not-found":
            return "configuration", ["the repository URL's host name does not resolve, also after the clone's retries: "
                                     "most likely a typo in the URL"], "clone", evidence
        return "network-or-aws", ["the repository could not be reached (network, host or credentials)"], "clone", evidence

    # -- the environment -------------------------------------------------------------------------------------
    if ref in ("artifact-tampered", "ledger-tampered"):
        evidence.append(message)
        return "drift", [
            "an object Slipway stored (an artifact, its manifest, a build pointer or a ledger entry) no longer matches what "
            "Slipway wrote: it was changed outside Slipway",
        ], "ledger signature" if ref == "ledger-tampered" else "artifact digest", evidence
    if ref == "drift":
        drift = evidence_data.get("drift") or {}
        evidence += [f"{k}: {v}" for k, v in drift.items()] or [message]
        if drift.get("serving") and drift.get("serving") == drift.get("ledger_version"):  # the live version, changed around
            return "drift", [
                f"the target{env_note} serves the ledger's live version, but something around it was changed outside Slipway: "
                f"{drift.get('detail') or message}",
                "the release refused to deploy: it would have silently undone (or published along) that change",
            ], "no change outside Slipway", evidence
        return "drift", [
            f"the target{env_note} does not serve what the ledger says is live: it was changed outside Slipway",
            "the release refused to deploy on top of unknown state (a rollback would not know where to return)",
        ], "live state matches the ledger", evidence
    if code in SIZE_CODES or ref == "artifact-too-large":
        evidence.append(message)
        return "too-large-or-slow", [f"AWS refused the artifact's size ({code or ref})"], "publish version", evidence
    if ref == "health-check-failed":
        last = evidence_data.get("last")
        evidence += [message] + ([f"last health response: {_short(last)}"] if last else [])
        return "code-defect", [
            f"the new container started{env_note} but its health endpoint never answered 200 (last: {last or 'no answer'})",
            "the image was built and pulled by digest, so the cause is the service's code or its start-up",
        ], "health check", evidence
    if ref in ("lambda-update-timeout", "ecs-not-stable") or ("did not finish in time" in message):
        evidence.append(message)
        return "too-large-or-slow", [f"the target did not finish deploying the new version in time{env_note}"], "deploy", evidence
    if ref == "sandbox-unavailable":
        evidence.append(message)
        return "configuration", [
            "the worker cannot run the repository's code in a sandbox (bubblewrap missing, or no user namespaces); "
            "nothing of the repository ran",
        ], ref, evidence
    if stage == "credentials" or code in PERMISSION_CODES or ref in ("credentials-refused", "credentials-missing", "region-missing", "block-missing",
                                                                     "secret-unreadable"):
        evidence.append(message)
        return "configuration", [
            "AWS refused the call or no usable credentials were configured: the role, the credentials block or the IAM policy",
        ], (code or ref), evidence
    if code == "InvalidParameterValueException" and re.search(r"\brole\b", message, re.I):
        evidence.append(message)
        return "configuration", ["Lambda refused the execution role (missing, or not assumable by lambda.amazonaws.com)"], code, evidence
    if err.get("transient") or ref == "aws-unreachable" or code in THROTTLING_CODES or code in UNAVAILABLE_CODES:
        evidence.append(message)
        why = ("AWS throttled the calls" if code in THROTTLING_CODES else
               "AWS answered with a server error" if code in UNAVAILABLE_CODES else "the AWS endpoint could not be reached")
        return "network-or-aws", [f"{why} ({code or ref}); the same call usually succeeds when retried",
                                  "Slipway's retries were exhausted"], (code or ref), evidence

    if stage == "hook":  # a lifecycle hook (slipway.yaml hooks:) answered no, or did not answer
        hook, phase = evidence_data.get("hook") or {}, evidence_data.get("phase") or "lifecycle"
        evidence += [f"{phase} hook {hook.get('hook')}: {hook.get('detail') or message}"]
        evidence += [f"  answer: {_short(hook.get('answer'), 300)}"] if hook.get("answer") else []
        silent = hook.get("timed_out") or str(hook.get("detail") or "").startswith(("unreachable", "could not invoke"))
        return "lifecycle-hook", [
            (f"the {phase} hook did not answer{env_note} (timed out or unreachable): the hook itself, or its network, is the first suspect"
             if silent else f"the {phase} hook checked the new version{env_note} and refused it; its answer is the evidence"),
            "nothing was shifted: the new version never took traffic" if phase == "before_traffic" else "traffic went back to the stable version",
        ], f"{phase} hook", evidence

    if stage in ("verify", "canary"):
        verdict = evidence_data.get("verdict")
        if stage == "canary" and (verdict or evidence_data.get("alarms")):
            percent = evidence_data.get("percent")
            if evidence_data.get("alarms"):
                alarms = evidence_data["alarms"] if isinstance(evidence_data["alarms"], dict) else {}
                evidence += [f"alarm: {_short(a)}" for a in (alarms.get("newly_alarming") or [])[:5]] or [message]
                return "code-defect", [
                    f"an alarm named in the spec went to ALARM while the new version took {percent}% of the traffic{env_note}",
                ], "alarms", evidence
            evidence += [f"verdict: {verdict.get('verdict')} — {verdict.get('reason')}"]
            ranked = sorted(verdict.get("metrics", []), key=lambda m: {"FAIL": 0, "INCONCLUSIVE": 1}.get(m.get("verdict"), 2))
            for metric in ranked[:5]:  # the metrics that decided first (the app's own metrics come after the built-in two)
                evidence.append(f"{metric.get('metric')}: canary {_short(metric.get('canary'), 80)} vs stable {_short(metric.get('stable'), 80)}"
                                + (f" (p={metric['p_value']})" if metric.get("p_value") is not None else "") + f" → {metric.get('verdict')}")
            if verdict.get("verdict") == "INCONCLUSIVE":
                return "configuration", [
                    f"the canary analysis at {percent}% could not decide (too few requests or periods, or no data for a metric) and the spec says not to go on",
                    "nothing shows the new version is worse: the analysis needs more traffic (traffic:), a longer bake or another policy",
                ], "canary analysis", evidence
            return "code-defect", [
                f"on the same traffic over the same window{env_note}, the new version did significantly worse than the stable one",
                "packaging passed preflight and the stable version is healthy, so the difference is the new release's code or configuration",
            ], "canary analysis", evidence
        failed = _failing_checks(err, record.ledger)
        check = failed[0].get("name") if failed else None
        for c in failed[:3]:
            evidence.append(f"smoke check {c.get('name')!r}: {c.get('detail')}")
            if c.get("response") is not None:
                evidence.append(f"  response: {_response_line(c.get('response'))}")
        if not failed:
            evidence.append(message)
        kinds = [_response_error(c) for c in failed]
        for error_type, text in kinds:
            if error_type in IMPORT_ERROR_TYPES or "No module named" in text or "Unable to import module" in text:
                return "incompatible-artifact", [
                    f"the function could not load its handler on the target ({error_type or 'import error'}): "
                    "the artifact as packaged is missing a module or does not match the runtime",
                ], check, evidence
        for error_type, text in kinds:
            if (error_type or "").startswith("Runtime.") and re.search(r"signal: killed|out of memory|OutOfMemory", text, re.I):
                return "configuration", [
                    "the function was killed for running out of memory: raise artifact.memory (or find what grew)",
                ], check, evidence
            if error_type == "KeyError":
                name = text.strip("'\"")
                if ENV_NAME.match(name) and name not in record.env_keys:
                    removed = record.diff.env_keys.get("removed", []) if record.diff else []
                    because = (f"it was removed since the last verified release" if name in removed else
                               "the function's configuration does not set it")
                    return "configuration", [
                        f"the handler reads the environment variable {name}, and {because}",
                        "the code expects configuration the environment does not give it: set it in slipway.yaml (artifact.environment or the "
                        "environment's environment:) or make the code default it",
                    ], check, evidence
            if error_type is None and text.startswith("AWS refused the credentials"):
                return "configuration", ["Slipway's own credentials could not invoke the function (the target block's IAM)"], check, evidence
            if error_type in PERMISSION_CODES or re.search(r"AccessDenied|not authorized to perform", text):
                return "configuration", [
                    "the function was denied an AWS call by its execution role (IAM), not by a bug in its logic",
                ], check, evidence
        details = " ".join(c.get("detail", "") for c in failed if c.get("response") is None)  # no answer from the function
        if re.search(r"could not reach AWS|Throttl|TooManyRequests|ServiceException|\b50[234]\b", details):
            return "network-or-aws", ["the smoke checks could not reach the function (AWS or network), not a wrong answer"], check, evidence
        return "code-defect", [
            f"the new version was deployed{env_note} and ran, and smoke check {check!r} failed on its answer",
            "preflight passed (the artifact imports and its dependencies are packaged), so the cause is the code (or its test coverage): "
            "the repository's tests did not catch it",
        ], check, evidence
    if stage == "orchestration":  # not Slipway's own error: the Prefect server, the worker, the process
        evidence.append(message)
        if re.search(r"\b50[234]\b|Service Unavailable|database is locked|ConnectError|ReadTimeout|connection", message, re.I):
            return "network-or-aws", ["the orchestration layer (the Prefect server or its database) was unavailable, not the release"], \
                "orchestration", evidence
        return "unclassified", [f"an unexpected {err.get('ref')} outside Slipway's own checks"], "orchestration", evidence
    if stage == "rollback":
        evidence.append(message)
        return "unclassified", ["the rollback itself failed: the environment needs a human (see the ledger)"], "rollback", evidence
    evidence.append(message)
    return "unclassified", [f"no rule matches stage {stage!r} with reference {ref!r}"], None, evidence


def _drift_fix(app: str, env: str, drift: dict) -> str:
    if drift.get("serving") and drift.get("serving") == drift.get("ledger_version"):
        return (f"undo the outside change with the verify flow (`prefect deployment run 'verify/verify' -p heal=true`), or make it "
                f"part of slipway.yaml first; then release {app} again")
    return (f"put {app}/{env} back on its verified release with `slipway rollback {app} {env} --to "
            f"{drift.get('ledger_release') or 'RELEASE_ID'}`, or make the outside change part of a release (slipway.yaml, a commit); "
            "then release again")


def next_action(record: FailureRecord, classification: Classification) -> str:
    app, env = record.app, record.environment
    hint = record.error.get("hint")
    if record.error.get("ref") in ("artifact-tampered", "ledger-tampered"):
        return hint or "delete the tampered object and release again"
    if record.outcome_status == "rollback-failed":
        return f"roll back by hand first: `slipway rollback {app} {env}` (the automatic rollback did not complete), then fix the cause"
    fix = {
        "incompatible-artifact": "fix the packaging" + (f": {hint}" if hint else "") + "; then release again",
        "code-defect": "fix the code (the failing check or test above) and add a test that catches it; then release again",
        "configuration": "fix the configuration named above (no code change needed)" + (f": {hint}" if hint else "") + "; then release again",
        "network-or-aws": "re-run the release: the failure looks transient; if it repeats, check the endpoint, AWS Health and service quotas",
        "too-large-or-slow": "trim the artifact (the largest entries are listed above) or raise the budget; for a slow deploy, re-run and "
                             "check the target's update status",
        "drift": _drift_fix(app, env, (record.error.get("evidence") or {}).get("drift") or {}),
        "lifecycle-hook": "read the hook's answer above: fix what it found in the release (or the hook, if it is wrong or unreachable); "
                          "then release again",
        "unclassified": hint or "read the run's logs (link above)",
    }[classification]
    if record.outcome_status == "rolled-back" and classification != "network-or-aws":
        fix += f" ({env} is already back on its previous release: no rollback needed)"
    return fix


def diagnose(record: FailureRecord) -> Diagnosis:
    classification, reasoning, check, evidence = classify(record)
    err = record.error
    one_line = err.get("message", "")
    if err.get("target"):
        one_line += f" ({err['target']})"
    return Diagnosis(
        app=record.app, environment=record.environment, release_id=record.release_id, commit=record.commit, at=record.at,
        run_url=record.run_url, stage=record.stage, check=check, error=one_line, error_ref=err.get("ref"), evidence=evidence,
        classification=classification, reasoning=reasoning, next_action=next_action(record, classification),
        outcome=record.outcome, diff=record.diff,
    )


def pick_failure_record(records, environment: str | None) -> tuple[str, dict] | None:
    """The newest of ``records`` ((key, data), newest first) that failed in ``environment`` (any, when None)."""
    for key, data in records:
        where = data.get("environment") or ((data.get("diff") or {}).get("environment"))
        if environment is None or where == environment:
            return key, data
    return None


def diagnosis_environment(record: FailureRecord) -> str | None:
    return record.environment or (record.diff.environment if record.diff else None)


def diagnosis_view(record: FailureRecord, key: str, head=None) -> dict:
    """The diagnosis as the CLI and the diagnose flow return it; with ``head`` (the environment's ledger head now), a
    note when a release was verified there after the failure."""
    result = diagnose(record)
    since = None
    env = diagnosis_environment(record)
    if head is not None and head.live and head.live.verified_at and head.live.verified_at > record.at:
        since = f"since then, {env} verified {head.live.release_id} (at {head.live.verified_at})"
    return {**result.model_dump(mode="json"), "title": result.title, "since": since, "record_key": key,
            "markdown": result.markdown() + (f"\n_{since}_\n" if since else ""),
            "text": result.text() + (f"\n  note:        {since}" if since else "")}


# ---- the diff -----------------------------------------------------------------------------------------------
DEPENDENCY_FILES = re.compile(r"(^|/)(requirements[^/]*\.(txt|in)|poetry\.lock|Pipfile(\.lock)?|pyproject\.toml|uv\.lock|"
                              r"package(-lock)?\.json|setup\.(py|cfg))$")


def _git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null", GIT_TERMINAL_PROMPT="0")
    result = subprocess.run(["git", "-c", "core.hooksPath=/dev/null", "-c", "core.quotepath=off", *args], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip() or f"git {args[0]} exited {result.returncode}")
    return result.stdout


def _show(repo: Path, commit: str, path: str) -> str | None:
    try:
        return _git(repo, "show", f"{commit}:{path}")
    except RuntimeError:
        return None


def _unified(old: str | None, new: str | None, name: str) -> list[str]:
    old, new = (URL_CREDENTIALS.sub(r"\1***@", t) if t else t for t in (old, new))  # --index-url https://user:token@…
    lines = list(difflib.unified_diff((old or "").splitlines(), (new or "").splitlines(), f"a/{name}", f"b/{name}", n=1, lineterm=""))
    return lines[:MAX_DIFF_LINES] + ([f"… {len(lines) - MAX_DIFF_LINES} more lines"] if len(lines) > MAX_DIFF_LINES else [])


def spec_env_vars(spec_text: str | None, environment: str) -> dict[str, str]:
    """The function's environment variables declared by a slipway.yaml (artifact-wide + the environment's)."""
    try:
        data = yaml.safe_load(spec_text or "") or {}
    except yaml.YAMLError:
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, str] = {}
    artifact = data.get("artifact") if isinstance(data.get("artifact"), dict) else {}
    out.update({str(k): str(v) for k, v in (artifact.get("environment") or {}).items()} if isinstance(artifact.get("environment"), dict) else {})
    for env in data.get("environments") or []:
        if isinstance(env, dict) and env.get("name") == environment and isinstance(env.get("environment"), dict):
            out.update({str(k): str(v) for k, v in env["environment"].items()})
    return out


def redacted_spec(spec_text: str | None) -> str | None:
    """The spec as YAML with every environment variable's value replaced by ``***`` (the diff shows names only)."""
    if spec_text is None:
        return None
    try:
        data = yaml.safe_load(spec_text)
    except yaml.YAMLError:
        return "# (not valid YAML: not shown)"
    if not isinstance(data, dict):
        return "# (not a mapping: not shown)"
    holders = [data.get("artifact")] + list(data.get("environments") or [])
    for holder in holders:
        if isinstance(holder, dict) and isinstance(holder.get("environment"), dict):
            holder["environment"] = {k: "***" for k in holder["environment"]}
    for check in ((data.get("verify") or {}).get("smoke") or []) if isinstance(data.get("verify"), dict) else []:
        request = check.get("request") if isinstance(check, dict) else None
        if isinstance(request, dict) and isinstance(request.get("headers"), dict):
            request["headers"] = {k: "***" for k in request["headers"]}
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def env_key_changes(old: dict[str, str], new: dict[str, str]) -> dict[str, list[str]]:
    """Names only: a value is never copied out of here."""
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(k for k in set(old) & set(new) if old[k] != new[k]),
    }


def compute_diff(
    repo: Path, *, environment: str, new_commit: str, spec_path: str = "slipway.yaml", baseline_release: str | None,
    baseline_commit: str | None, baseline_size: int | None = None, new_size: int | None = None,
    baseline_flags: dict | None = None, new_flags: dict | None = None, flag_lines=None,
) -> ReleaseDiff:
    """The diff of the clone at ``new_commit`` against ``baseline_commit`` (the last verified release there)."""
    new_spec = _show(repo, new_commit, spec_path)
    new_env = spec_env_vars(new_spec, environment)
    flags = flag_lines(baseline_flags or {}, new_flags or {}) if flag_lines else ["not compared: the release failed before any deploy"]
    common = dict(environment=environment, baseline_release=baseline_release, baseline_commit=baseline_commit, new_commit=new_commit,
                  artifact_size={"baseline": baseline_size, "new": new_size}, flags=flags)
    if not baseline_release or not baseline_commit:
        return ReleaseDiff(**common)
    try:
        _git(repo, "cat-file", "-e", f"{baseline_commit}^{{commit}}")
    except RuntimeError:
        return ReleaseDiff(**common, note=f"commit {baseline_commit[:12]} is not in the repository's history (force-pushed or another repo)",
                           env_keys=env_key_changes({}, new_env))
    rng = f"{baseline_commit}..{new_commit}"
    commits = [line for line in _git(repo, "log", "--format=%h %s", rng).splitlines() if line]
    behind = [line for line in _git(repo, "log", "--format=%h %s", f"{new_commit}..{baseline_commit}").splitlines() if line]
    note = f"the failed commit is not a descendant of the baseline: {len(behind)} baseline commit(s) are not in it" if behind else None
    names = _git(repo, "diff", "--name-status", "--no-renames", baseline_commit, new_commit).splitlines()
    files = [" ".join(line.split("\t")) for line in names if line]
    dependencies: list[str] = []
    for line in names:
        path = line.split("\t")[-1]
        if DEPENDENCY_FILES.search(path):
            dependencies += _unified(_show(repo, baseline_commit, path), _show(repo, new_commit, path), path)
    old_spec = _show(repo, baseline_commit, spec_path)
    return ReleaseDiff(
        **common, commits=commits, note=note, files=files, dependencies=dependencies[:MAX_DIFF_LINES],
        spec=_unified(redacted_spec(old_spec), redacted_spec(new_spec), spec_path) if redacted_spec(old_spec) != redacted_spec(new_spec) else [],
        env_keys=env_key_changes(spec_env_vars(old_spec, environment), new_env),
    )


__all__ = ["Classification", "Diagnosis", "FailureRecord", "ReleaseDiff", "classify", "compute_diff", "diagnose", "env_key_changes",
           "next_action", "spec_env_vars"]
