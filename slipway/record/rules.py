"""The diagnosis rules: an ordered table of named rules over the structured facts of a failure record.

``classify`` builds ``Facts`` from a ``FailureRecord`` (the stage, the error reference, the AWS error code, the
transient flag, the failing checks, the output tail, and the diff against the last verified release) and tries the
rules in order; the first that decides wins. Each rule has a name, a one-line reason (why it decides what it
decides), the references and stages it matches (``tests/unit/test_diagnosis_table.py`` proves each reference a rule
names is raised somewhere, and each reference raised is matched by a rule or left unclassified on purpose), and a
unit test. Message text is the last resort: rules read references, codes, flags and checks first.

The order matters where two rules could match: the network's own words come before "pip found no matching
distribution" (pip that cannot reach its index also says that), the diff (a spec-only change) before "the code is
wrong", the stage before the generic AWS-code rules.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from slipway.core.layout import LAMBDA_RUNTIME_MODULES

if TYPE_CHECKING:
    from slipway.record.diagnose import FailureRecord

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
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
CREDENTIAL_REFS = ("credentials-refused", "credentials-missing", "credentials-invalid", "region-missing", "role-missing", "alarm-missing",
                   "secret-unreadable")
# What pip, git and HTTP clients print when the network, not the request, failed.
NETWORK_TROUBLE = (r"(timed out|Temporary failure in name resolution|Name or service not known|Connection (refused|reset|aborted)|"
                   r"NewConnectionError|HTTP error 5\d\d|Max retries exceeded|Network is unreachable|ProxyError|SSLError)")
_MISSING_MODULE = re.compile(r"No module named '([A-Za-z0-9_.]+)'")
_TIMED_OUT = re.compile(r"Task timed out after ([\d.]+) seconds")


class Finding(NamedTuple):
    classification: str
    reasoning: list[str]
    check: str | None
    evidence: list[str]


@dataclass(frozen=True)
class Facts:
    """What a rule may look at, read once from the record."""

    record: "FailureRecord"
    stage: str
    ref: str
    message: str
    data: dict  # the error's structured evidence
    code: str | None  # the AWS error code, if any
    transient: bool
    env_note: str  # " in prod" or ""
    tail: list[str] = field(default_factory=list)  # the last lines of a test/build output
    failed: list[dict] = field(default_factory=list)  # failing checks (preflight or smoke)

    @property
    def kinds(self) -> list[tuple[str | None, str]]:
        return [response_error(c) for c in self.failed]

    @property
    def diff(self):
        return self.record.diff

    def spec_fields_changed(self) -> list[str]:
        """slipway.yaml keys whose lines changed since the last verified release (``timeout``, ``memory``, …)."""
        keys = []
        for line in (self.diff.spec if self.diff else []):
            match = re.match(r"^[+-](?![+-])\s*-?\s*([A-Za-z_]+):", line)
            if match and match.group(1) not in keys:
                keys.append(match.group(1))
        env = self.diff.env_keys if self.diff else {}
        for how in ("changed", "added", "removed"):  # values are redacted in the spec diff: the names say what moved
            keys += [f"environment variable {name} ({how})" for name in env.get(how, [])]
        return keys

    def only_spec_changed(self) -> bool:
        """The diff shows slipway.yaml changed and nothing else: no code, no dependencies, no flags."""
        d = self.diff
        env_changed = any(d.env_keys.get(k) for k in ("changed", "added", "removed")) if d else False
        if not d or not d.baseline_release or not (d.spec or env_changed) or d.dependencies or d.flags:
            return False
        files = [f.split("\t")[-1].split()[-1] for f in d.files]
        return bool(files) and all(f.endswith("slipway.yaml") for f in files)

    def dependency_note(self, module: str | None = None) -> str | None:
        """A reasoning line when the dependencies changed in this release (naming ``module`` when a line mentions it)."""
        lines = [line for line in (self.diff.dependencies if self.diff else []) if line[:1] in "+-" and line[:3] not in ("+++", "---")]
        if not lines:
            return None
        named = [line for line in lines if module and module.split(".")[0].lower().replace("_", "-") in line.lower().replace("_", "-")]
        shown = named or lines
        return f"the dependencies changed in this release ({'; '.join(shown[:4])}): the first suspect"


@dataclass(frozen=True)
class Rule:
    name: str
    reason: str  # one line: why this rule decides as it does
    decide: Callable[[Facts], Finding | None]
    refs: frozenset[str] = frozenset()  # error references this rule matches by name
    stages: frozenset[str] = frozenset()  # stages this rule covers whatever the reference


RULES: list[Rule] = []


def rule(name: str, reason: str, *, refs: tuple[str, ...] = (), stages: tuple[str, ...] = ()):
    def register(fn: Callable[[Facts], Finding | None]) -> Callable[[Facts], Finding | None]:
        RULES.append(Rule(name, reason, fn, frozenset(refs), frozenset(stages)))
        return fn

    return register


# ---- helpers -------------------------------------------------------------------------------------------------------------
def short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def response_error(check: dict) -> tuple[str | None, str]:
    """(errorType, errorMessage) of a Lambda FunctionError response, or (None, detail)."""
    response = check.get("response")
    if isinstance(response, dict) and ("errorType" in response or "errorMessage" in response):
        return response.get("errorType"), str(response.get("errorMessage", ""))
    return None, str(check.get("detail", ""))


_CARETS = re.compile(r"[~^]+")  # Python 3.11's markers under the failing expression of a traceback frame


def response_line(response: Any) -> str:
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
        return short(text)
    return short(response)


def _failed_preflight(f: Facts) -> list[dict]:
    return [c for c in (f.data.get("checks") or f.record.preflight) if not c.get("passed", True)]


def _preflight(f: Facts) -> tuple[str | None, list[str]]:
    failed = _failed_preflight(f)
    return (failed[0]["name"] if failed else None), ([f"preflight {c['name']}: {c['detail']}" for c in failed] or [f.message])


def _tail_lines(f: Facts, n: int = 12) -> list[str]:
    return [f"| {line}" for line in f.tail[-n:]]


def _smoke_evidence(f: Facts) -> list[str]:
    out = []
    for c in f.failed[:3]:
        out.append(f"smoke check {c.get('name')!r}: {c.get('detail')}")
        if c.get("response") is not None:
            out.append(f"  response: {response_line(c.get('response'))}")
    return out or [f.message]


def _smoke_check(f: Facts) -> str | None:
    return f.failed[0].get("name") if f.failed else None


def _spec_lines(f: Facts) -> list[str]:
    """The lines slipway.yaml gained or lost (no diff headers, no context), as evidence."""
    return [f"slipway.yaml: {line}" for line in (f.diff.spec if f.diff else [])
            if line[:1] in "+-" and line[:3] not in ("+++", "---")][:8]


def _spec_fields(f: Facts) -> str:
    fields = f.spec_fields_changed()
    return ", ".join(fields) if fields else "its values"


# ---- before anything was deployed ----------------------------------------------------------------------------------------
@rule("preflight-aws-unreachable", "a read-only check could not reach AWS: the network or AWS, not the release",
      refs=("aws-unreachable", "alarms-unavailable"), stages=("preflight",))
def _r(f: Facts):
    if f.stage == "preflight" and f.ref in ("aws-unreachable", "alarms-unavailable"):
        check, ev = _preflight(f)
        return Finding("network-or-aws", [f"preflight check {check!r} could not reach AWS ({f.ref})"], check, ev)
    return None


@rule("preflight-account", "the environment's credentials, target, alarms or secrets are unusable as configured",
      refs=CREDENTIAL_REFS, stages=("preflight",))
def _r(f: Facts):
    if f.stage != "preflight":
        return None
    check, ev = _preflight(f)
    if f.ref in CREDENTIAL_REFS or (check or "").endswith((": credentials usable", ": target", ": alarms", ": secrets readable")):
        return Finding("configuration", [
            f"preflight check {check!r} found the environment's account unusable as configured ({f.ref}), before any deploy",
        ], check, ev)
    return None


@rule("preflight-hooks-and-metrics", "a lifecycle hook or a canary metric named in slipway.yaml cannot be used: the spec or its blocks",
      stages=("preflight",))
def _r(f: Facts):
    if f.stage != "preflight":
        return None
    check, ev = _preflight(f)
    if check and (" hook " in check or ": metric " in check or check.endswith(": canary metrics")):
        return Finding("configuration", [
            f"preflight check {check!r} refused a lifecycle hook or a canary metric of slipway.yaml before anything was built "
            "(a function that does not exist, a secret that cannot be read, a query the metrics server rejects)",
        ], check, ev)
    return None


@rule("preflight-env-var-at-import", "module-level code reads an environment variable the function's configuration does not set",
      stages=("preflight",))
def _r(f: Facts):
    if f.stage != "preflight":
        return None
    failed = _failed_preflight(f)
    missing_var = next((m.group(1) for c in failed if c.get("name") == "handler imports"
                        for m in [re.search(r"KeyError: '([A-Z][A-Z0-9_]*)'", c.get("detail") or "")] if m), None)
    if not missing_var:
        return None
    check, ev = _preflight(f)
    return Finding("configuration", [
        f"the handler reads the environment variable {missing_var} when it is imported, and the function's configuration "
        "(slipway.yaml) does not set it; found by preflight before anything was published",
        "set it in slipway.yaml (artifact.environment or the environment's environment:) or make the code default it",
    ], check, ev)


@rule("preflight-size", "the built zip is over AWS Lambda's size limit or the spec's budget", refs=("artifact-too-large",),
      stages=("preflight",))
def _r(f: Facts):
    if f.stage == "preflight" and (f.ref == "artifact-too-large" or any(c.get("ref") == "artifact-too-large" for c in _failed_preflight(f))):
        check, ev = _preflight(f)
        return Finding("too-large-or-slow", [
            "the built zip is over a size limit (AWS Lambda's or the spec's budget), found by preflight before anything was published",
        ], check, ev)
    return None


@rule("preflight-packaging", "the tests passed where they ran, but the zip as packaged cannot run on the target",
      refs=("preflight-failed",), stages=("preflight",))
def _r(f: Facts):
    if f.stage != "preflight":
        return None
    check, ev = _preflight(f)
    detail = " ".join(c.get("detail", "") for c in _failed_preflight(f))
    ours = re.search(r"(\S+) \(([^)]+)\) (?:is|are) this repository's own code outside source", detail)
    if ours:
        return Finding("incompatible-artifact", [
            f"the code imports {ours.group(1)}, which is this repository's own code ({ours.group(2)}) but outside the packaged "
            "source directory, so it is not in the zip (the tests found it because they run from the repository)",
        ], check, ev)
    missing = re.search(r"imported but not packaged: ([^(]+) \(", detail)
    reasoning = [
        f"preflight check {check!r} failed on the built zip, before anything was published",
        "the repository's tests passed, so the code works where the tests ran; the artifact as packaged cannot run on the target "
        "(a module imported but not packaged, a handler that does not import, a wheel for another platform or Python)",
    ]
    note = f.dependency_note(missing.group(1).split(",")[0].strip() if missing else None)
    return Finding("incompatible-artifact", reasoning + ([note] if note else []), check, ev)


@rule("test-environment-network", "the test environment's install could not reach the package index: transient",
      refs=("test-env-install-failed",), stages=("test",))
def _r(f: Facts):
    if f.stage == "test" and f.ref != "tests-failed" and (f.transient or re.search(NETWORK_TROUBLE, "\n".join(f.tail))):
        return Finding("network-or-aws", ["the test environment could not be installed: the package index could not be reached"],
                       "tests", [f.message] + _tail_lines(f))
    return None


_NO_DISTRIBUTION = re.compile(r"(?:No matching distribution found for|Could not find a version that satisfies the requirement) "
                              r"([A-Za-z0-9_.\-]+)(\S*)")


def _requirement_file(f: Facts, package: str) -> str | None:
    """The dependency file whose diff adds ``package`` (from the diff's ``+++ b/FILE`` headers), if the diff shows it."""
    current = None
    for line in (f.diff.dependencies if f.diff else []):
        if line.startswith("+++ "):
            current = line[4:].removeprefix("b/")
        elif line.startswith("+") and package.lower() in line.lower():
            return current
    return None


@rule("test-environment-dependency", "a dependency of the artifact has no distribution pip can install: the packaging, not the tests",
      refs=("test-env-install-failed",), stages=("test",))
def _r(f: Facts):
    if f.stage != "test" or f.ref == "tests-failed":
        return None
    found = next((m for line in f.tail for m in [_NO_DISTRIBUTION.search(line)] if m), None)
    if found is None:
        return None
    package = found.group(1)
    where = _requirement_file(f, package)
    if where and re.search(r"dev|test", where, re.I):
        return None  # a test-only requirement: the test environment's configuration (next rule)
    note = f.dependency_note(package)
    return Finding("incompatible-artifact", [
        f"pip found no distribution of {package}{found.group(2)} to install" + (f" ({where})" if where else "")
        + ": the artifact's dependencies cannot be resolved for its runtime (a version that does not exist, or none for this platform)",
        *([note] if note else []),
    ], "tests", [f.message] + _tail_lines(f))


@rule("test-environment-setup", "the test environment could not be set up as configured (requirements, command)",
      refs=("tests-timed-out", "repo-dir-missing", "test-requirements-missing", "test-env-install-failed"), stages=("test",))
def _r(f: Facts):
    if f.stage == "test" and f.ref != "tests-failed":
        return Finding("configuration", [f"the test environment could not be set up ({f.ref}): the test requirements or command as configured"],
                       "tests", [f.message] + _tail_lines(f))
    return None


@rule("tests-missing-dependency", "the tests fail importing a third-party module that no requirements file installs",
      refs=("tests-failed",), stages=("test",))
def _r(f: Facts):
    if f.stage != "test":
        return None
    found = next((m.group(1) for line in f.tail for m in [_MISSING_MODULE.search(line)] if m), None)
    if not found:
        return None
    top = found.split(".")[0]
    if top in set(f.data.get("repo_modules") or []) or top in LAMBDA_RUNTIME_MODULES:
        return None  # the repository's own module (a test path problem) or one the Lambda runtime provides
    note = f.dependency_note(top)
    return Finding("incompatible-artifact", [
        f"the code imports {top}, and neither the artifact's requirements nor the test requirements install it: "
        "a dependency missing from the packaging, not a wrong test",
        *( [note] if note else []),
    ], "tests", [f"failed test: {t}" for t in (f.data.get("failed_tests") or [])[:10]] + _tail_lines(f))


@rule("tests-failed", "the repository's own tests failed: nothing was built or deployed", refs=("tests-failed",), stages=("test",))
def _r(f: Facts):
    if f.stage != "test":
        return None
    failed_tests = f.data.get("failed_tests") or []
    return Finding("code-defect", [
        f"the repository's own tests failed on commit {(f.record.commit or '?')[:12]}; nothing was built or deployed",
    ], (failed_tests[0] if failed_tests else "tests"), [f"failed test: {t}" for t in failed_tests[:10]] + _tail_lines(f))


@rule("build-too-large", "the build produced an artifact over the size limit", refs=("artifact-too-large",), stages=("build",))
def _r(f: Facts):
    if f.stage == "build" and f.ref == "artifact-too-large":
        return Finding("too-large-or-slow", ["the build produced an artifact over the size limit"], "build", _tail_lines(f))
    return None


@rule("build-network", "the build could not reach a package index or the network (checked before pip's 'no matching distribution')",
      refs=("dependency-install-failed",), stages=("build",))
def _r(f: Facts):
    if f.stage == "build" and (f.transient or re.search(NETWORK_TROUBLE, "\n".join(f.tail))):
        return Finding("network-or-aws", ["the build failed reaching a package index or the network: re-run it"], "build", _tail_lines(f))
    return None


@rule("build-no-distribution", "pip found no distribution of a dependency for the target platform and runtime", stages=("build",))
def _r(f: Facts):
    if f.stage == "build" and re.search(r"(Could not find a version|No matching distribution|ResolutionImpossible|not a supported wheel)",
                                        "\n".join(f.tail)):
        note = f.dependency_note()
        return Finding("incompatible-artifact", [
            "the dependencies could not be installed for the target platform and runtime (pip found no matching distribution)",
            *([note] if note else []),
        ], "build", _tail_lines(f))
    return None


_BUILD_INPUTS = ("context-missing", "dockerfile-outside-context", "invalid-build-input", "invalid-tag-input", "not-a-file",
                 "requirements-missing", "source-dir-missing", "dockerfile-missing")


@rule("build-inputs", "the spec names a build input (source, requirements, Dockerfile, context) that is not there or not allowed",
      refs=_BUILD_INPUTS, stages=("build",))
def _r(f: Facts):
    if f.stage == "build" and f.ref in _BUILD_INPUTS:
        return Finding("configuration", [f"the build could not start ({f.ref}): slipway.yaml names a path or input the repository "
                                         "does not have as described"], "build", [f.message] + _tail_lines(f))
    return None


@rule("build-failed", "the repository's source did not build", refs=(
    "build-failed", "dangling-symlink", "docker-build-failed", "docker-build-timeout", "symlink-escapes", "symlink-loop"),
    stages=("build",))
def _r(f: Facts):
    if f.stage == "build":
        return Finding("code-defect", ["the build of the repository's source failed (see the build log tail)"], "build", _tail_lines(f))
    return None


@rule("spec-refused", "slipway.yaml (or the request) was refused before anything ran", stages=("spec", "input"))
def _r(f: Facts):
    if f.stage in ("spec", "input"):
        errors = f.data.get("errors") or []
        return Finding("configuration", [f"the {'spec (slipway.yaml)' if f.stage == 'spec' else 'input'} was refused before anything ran"],
                       f.stage, [f"spec: {short(e)}" for e in errors[:5]] or [f.message])
    return None


@rule("clone-request", "the ref, directory or host asked for does not exist: the request, not the network",
      refs=("unknown-ref", "not-a-repository", "host-not-found"), stages=("clone",))
def _r(f: Facts):
    why = {"unknown-ref": "the ref asked for does not exist in the repository",
           "not-a-repository": "the repository URL names a directory that is not a git repository",
           "host-not-found": "the repository URL's host name does not resolve, also after the clone's retries: most likely a typo in the URL"}
    if f.stage == "clone" and f.ref in why:
        return Finding("configuration", [why[f.ref]], "clone", [f.message])
    return None


@rule("clone-unreachable", "the repository could not be reached", refs=("clone-failed", "clone-timed-out", "repo-unreachable"),
      stages=("clone",))
def _r(f: Facts):
    if f.stage == "clone":
        return Finding("network-or-aws", ["the repository could not be reached (network, host or credentials)"], "clone", [f.message])
    return None


# ---- the environment -----------------------------------------------------------------------------------------------------
@rule("tampered", "an object Slipway stored no longer matches what it wrote", refs=("artifact-tampered", "ledger-tampered"))
def _r(f: Facts):
    if f.ref in ("artifact-tampered", "ledger-tampered"):
        return Finding("drift", [
            "an object Slipway stored (an artifact, its manifest, a build pointer or a ledger entry) no longer matches what "
            "Slipway wrote: it was changed outside Slipway",
        ], "ledger signature" if f.ref == "ledger-tampered" else "artifact digest", [f.message])
    return None


@rule("drift", "the target was changed outside Slipway: the live version moved, or something around it changed", refs=("drift",))
def _r(f: Facts):
    if f.ref != "drift":
        return None
    drift = f.data.get("drift") or {}
    ev = [f"{k}: {v}" for k, v in drift.items()] or [f.message]
    if drift.get("serving") and drift.get("serving") == drift.get("ledger_version"):  # the live version, changed around
        return Finding("drift", [
            f"the target{f.env_note} serves the ledger's live version, but something around it was changed outside Slipway: "
            f"{drift.get('detail') or f.message}",
            "the release refused to deploy: it would have silently undone (or published along) that change",
        ], "no change outside Slipway", ev)
    return Finding("drift", [
        f"the target{f.env_note} does not serve what the ledger says is live: it was changed outside Slipway",
        "the release refused to deploy on top of unknown state (a rollback would not know where to return)",
    ], "live state matches the ledger", ev)


@rule("aws-size", "AWS refused the artifact's size", refs=("artifact-too-large",))
def _r(f: Facts):
    if f.code in SIZE_CODES or f.ref == "artifact-too-large":
        return Finding("too-large-or-slow", [f"AWS refused the artifact's size ({f.code or f.ref})"], "publish version", [f.message])
    return None


@rule("container-health", "the new container started but its health endpoint never answered 200", refs=("health-check-failed",))
def _r(f: Facts):
    if f.ref != "health-check-failed":
        return None
    last = f.data.get("last")
    return Finding("code-defect", [
        f"the new container started{f.env_note} but its health endpoint never answered 200 (last: {last or 'no answer'})",
        "the image was built and pulled by digest, so the cause is the service's code or its start-up",
    ], "health check", [f.message] + ([f"last health response: {short(last)}"] if last else []))


@rule("slow-deploy", "the target did not finish deploying the new version in time", refs=("lambda-update-timeout", "ecs-not-stable"))
def _r(f: Facts):
    if f.ref in ("lambda-update-timeout", "ecs-not-stable") or "did not finish in time" in f.message:
        return Finding("too-large-or-slow", [f"the target did not finish deploying the new version in time{f.env_note}"], "deploy", [f.message])
    return None


@rule("sandbox-unavailable", "the worker cannot sandbox the repository's code", refs=("sandbox-unavailable",))
def _r(f: Facts):
    if f.ref == "sandbox-unavailable":
        return Finding("configuration", [
            "the worker cannot run the repository's code in a sandbox (bubblewrap missing, or no user namespaces); "
            "nothing of the repository ran",
        ], f.ref, [f.message])
    return None


@rule("credentials", "AWS refused the call or no usable credentials were configured", refs=(
    "credentials-refused", "credentials-missing", "region-missing", "block-missing", "secret-unreadable", "credentials-invalid",
    "store-block-missing", "target-block-missing", "registry-block-missing", "git-token-block-missing", "ecr-token-invalid",
    "registry-credentials-refused", "flag-access-denied"), stages=("credentials",))
def _r(f: Facts):
    if f.stage == "credentials" or f.code in PERMISSION_CODES or f.ref in ("credentials-refused", "credentials-missing", "region-missing",
                                                                          "block-missing", "secret-unreadable"):
        return Finding("configuration", [
            "AWS refused the call or no usable credentials were configured: the role, the credentials block or the IAM policy",
        ], (f.code or f.ref), [f.message])
    return None


@rule("execution-role", "Lambda refused the execution role")
def _r(f: Facts):
    if f.code == "InvalidParameterValueException" and re.search(r"\brole\b", f.message, re.I):
        return Finding("configuration", ["Lambda refused the execution role (missing, or not assumable by lambda.amazonaws.com)"], f.code,
                       [f.message])
    return None


@rule("aws-transient", "AWS throttled, answered with a server error, or could not be reached: transient, re-run",
      refs=("aws-unreachable", "docker-unreachable", "registry-unreachable"))
def _r(f: Facts):
    if f.transient or f.ref == "aws-unreachable" or f.code in THROTTLING_CODES or f.code in UNAVAILABLE_CODES:
        why = ("AWS throttled the calls" if f.code in THROTTLING_CODES else
               "AWS answered with a server error" if f.code in UNAVAILABLE_CODES else "the AWS endpoint could not be reached")
        return Finding("network-or-aws", [f"{why} ({f.code or f.ref}); the same call usually succeeds when retried",
                                          "Slipway's retries were exhausted"], (f.code or f.ref), [f.message])
    return None


def by_reference(name: str, reason: str, classification: str, refs: tuple[str, ...], why: str, check: str) -> None:
    """A rule that decides on the error reference alone: the reference says what failed, the stage adds nothing."""
    def decide(f: Facts) -> Finding | None:
        if f.ref in refs:
            return Finding(classification, [why.format(env=f.env_note, ref=f.ref)], check, [f.message])
        return None

    RULES.append(Rule(name, reason, decide, frozenset(refs)))


by_reference("target-settings", "the target refused the environment's settings as configured", "configuration",
             ("invalid-function-name", "invalid-health-path", "invalid-ports", "invalid-route", "unknown-target-type", "wrong-artifact-type",
              "image-not-pinned", "listen-port-in-use", "port-range-exhausted", "proxy-config-rejected", "ecs-container-not-found",
              "image-not-found", "image-missing", "invalid-image-name", "bucket-missing", "lambda-update-failed", "ecs-cluster-not-found",
              "ecs-service-not-found", "strategy-unsupported", "invalid-traffic-split"),
             "the target{env} refused the environment's settings ({ref}): the spec's environment or its block, not the code", "deploy")
by_reference("host-unavailable", "the Docker host, its proxy or a registry was unavailable: re-run", "network-or-aws",
             ("engine-unavailable", "proxy-unavailable", "proxy-start-failed", "proxy-reload-failed", "container-remove-failed", "push-failed",
              "registry-error", "publish-failed", "ledger-failed", "ledger-contention", "concurrent-change", "canary-not-running",
              "stable-not-running", "release-not-runnable", "ecs-rollout-failed", "canary-metrics-unavailable"),
             "the infrastructure{env} did not carry the step out ({ref}): the host, the registry, the store or another run at the same "
             "time, not the release; re-run it", "deploy")
by_reference("container-start", "the new container did not start: its image or entrypoint", "code-defect", ("container-start-failed",),
             "the new container{env} exited or never started ({ref}): the image's code or entrypoint", "container start")
by_reference("changed-outside", "a record, tag or object changed outside Slipway between its write and its read", "drift",
             ("code-sha-mismatch", "artifact-digest-mismatch", "tag-exists-with-other-digest", "tag-moved-during-push", "record-exists",
              "ledger-corrupt"),
             "what Slipway wrote or deployed changed outside it ({ref}): the stored object, the registry tag or the function's code",
             "stored state")
by_reference("promotion-request", "promote or re-verify asked for something that was never released there", "configuration",
             ("manifest-missing", "nothing-to-promote", "nothing-deployed"),
             "the request names a release or environment with nothing to act on ({ref}): the command's arguments", "request")


@rule("owned-elsewhere", "the function exists without Slipway's ownership tag: drift if the ledger says Slipway created it",
      refs=("function-owned-elsewhere",))
def _r(f: Facts):
    if f.ref != "function-owned-elsewhere":
        return None
    ours = bool(f.record.ledger) or bool(f.diff and f.diff.baseline_release)
    if ours:
        return Finding("drift", [f"the function{f.env_note} lost Slipway's ownership tag (slipway:app), though the ledger says Slipway "
                                 "deployed it: changed outside Slipway"], "ownership tag", [f.message])
    return Finding("configuration", [f"the function name{f.env_note} belongs to something Slipway did not create: choose another "
                                     "function_name (or tag it slipway:app if it is this app's)"], "ownership tag", [f.message])


@rule("aws-refused", "AWS refused the request as made (a non-transient error code): the settings sent, not the code",
      refs=("deploy-failed",))
def _r(f: Facts):
    if f.code and f.stage in ("deploy", "publish", "rollback"):
        return Finding("configuration", [f"AWS refused the request as made ({f.code}){f.env_note}: a setting from slipway.yaml or a block"],
                       f.code, [f.message])
    return None


@rule("lifecycle-hook", "a lifecycle hook (slipway.yaml hooks:) refused the release or did not answer", refs=("hook-failed",), stages=("hook",))
def _r(f: Facts):
    if f.stage != "hook":
        return None
    hook, phase = f.data.get("hook") or {}, f.data.get("phase") or "lifecycle"
    ev = [f"{phase} hook {hook.get('hook')}: {hook.get('detail') or f.message}"]
    ev += [f"  answer: {short(hook.get('answer'), 300)}"] if hook.get("answer") else []
    silent = hook.get("timed_out") or str(hook.get("detail") or "").startswith(("unreachable", "could not invoke"))
    return Finding("lifecycle-hook", [
        (f"the {phase} hook did not answer{f.env_note} (timed out or unreachable): the hook itself, or its network, is the first suspect"
         if silent else f"the {phase} hook checked the new version{f.env_note} and refused it; its answer is the evidence"),
        "nothing was shifted: the new version never took traffic" if phase == "before_traffic" else "traffic went back to the stable version",
    ], f"{phase} hook", ev)


def _verdict_evidence(f: Facts, verdict: dict) -> list[str]:
    ev = [f"verdict: {verdict.get('verdict')} — {verdict.get('reason')}"]
    ranked = sorted(verdict.get("metrics", []), key=lambda m: {"FAIL": 0, "INCONCLUSIVE": 1}.get(m.get("verdict"), 2))
    for metric in ranked[:5]:  # the metrics that decided first (the app's own metrics come after the built-in two)
        ev.append(f"{metric.get('metric')}: canary {short(metric.get('canary'), 80)} vs stable {short(metric.get('stable'), 80)}"
                  + (f" (p={metric['p_value']})" if metric.get("p_value") is not None else "") + f" → {metric.get('verdict')}")
    return ev


@rule("canary-alarm", "an alarm named in the spec went to ALARM while the new version took traffic", refs=("alarm-fired",),
      stages=("canary",))
def _r(f: Facts):
    if f.stage == "canary" and f.data.get("alarms"):
        alarms = f.data["alarms"] if isinstance(f.data["alarms"], dict) else {}
        return Finding("code-defect", [
            f"an alarm named in the spec went to ALARM while the new version took {f.data.get('percent')}% of the traffic{f.env_note}",
        ], "alarms", [f"alarm: {short(a)}" for a in (alarms.get("newly_alarming") or [])[:5]] or [f.message])
    return None


@rule("canary-inconclusive", "the canary analysis could not decide and the spec says not to go on", refs=("canary-inconclusive",),
      stages=("canary",))
def _r(f: Facts):
    verdict = f.data.get("verdict")
    if f.stage == "canary" and verdict and verdict.get("verdict") == "INCONCLUSIVE":
        return Finding("configuration", [
            f"the canary analysis at {f.data.get('percent')}% could not decide (too few requests or periods, or no data for a metric) "
            "and the spec says not to go on",
            "nothing shows the new version is worse: the analysis needs more traffic (traffic:), a longer bake or another policy",
        ], "canary analysis", _verdict_evidence(f, verdict))
    return None


@rule("canary-spec-only", "the canary failed and only slipway.yaml changed since the last verified release: the configuration",
      stages=("canary",))
def _r(f: Facts):
    verdict = f.data.get("verdict")
    if f.stage == "canary" and verdict and f.only_spec_changed():
        return Finding("configuration", [
            f"the canary did worse than stable{f.env_note}, and the only change since the last verified release is in slipway.yaml "
            f"({_spec_fields(f)}): the same code with another configuration",
        ], "canary analysis", _verdict_evidence(f, verdict) + _spec_lines(f))
    return None


@rule("canary-worse", "on the same traffic over the same window the new version did significantly worse than stable",
      refs=("canary-failed",), stages=("canary",))
def _r(f: Facts):
    verdict = f.data.get("verdict")
    if f.stage == "canary" and verdict:
        return Finding("code-defect", [
            f"on the same traffic over the same window{f.env_note}, the new version did significantly worse than the stable one",
            "packaging passed preflight and the stable version is healthy, so the difference is the new release's code or configuration",
        ], "canary analysis", _verdict_evidence(f, verdict))
    return None


def _verify(f: Facts) -> bool:
    return f.stage in ("verify", "canary")


@rule("verify-import-error", "the function could not load its handler on the target: packaging, not logic",
      refs=("verification-failed",), stages=("verify",))
def _r(f: Facts):
    if not _verify(f):
        return None
    for error_type, text in f.kinds:
        if error_type in IMPORT_ERROR_TYPES or "No module named" in text or "Unable to import module" in text:
            module = _MISSING_MODULE.search(text)
            note = f.dependency_note(module.group(1) if module else None)
            return Finding("incompatible-artifact", [
                f"the function could not load its handler on the target ({error_type or 'import error'}): "
                "the artifact as packaged is missing a module or does not match the runtime",
                *([note] if note else []),
            ], _smoke_check(f), _smoke_evidence(f))
    return None


@rule("verify-out-of-memory", "the function was killed for running out of memory: the configured memory")
def _r(f: Facts):
    if _verify(f) and any((t or "").startswith("Runtime.") and re.search(r"signal: killed|out of memory|OutOfMemory", x, re.I)
                          for t, x in f.kinds):
        return Finding("configuration", ["the function was killed for running out of memory: raise artifact.memory (or find what grew)"],
                       _smoke_check(f), _smoke_evidence(f))
    return None


@rule("verify-missing-env-var", "the handler reads an environment variable the function's configuration does not set")
def _r(f: Facts):
    if not _verify(f):
        return None
    for error_type, text in f.kinds:
        name = text.strip("'\"")
        if error_type == "KeyError" and ENV_NAME.match(name) and name not in f.record.env_keys:
            removed = f.diff.env_keys.get("removed", []) if f.diff else []
            because = "it was removed since the last verified release" if name in removed else "the function's configuration does not set it"
            return Finding("configuration", [
                f"the handler reads the environment variable {name}, and {because}",
                "the code expects configuration the environment does not give it: set it in slipway.yaml (artifact.environment or the "
                "environment's environment:) or make the code default it",
            ], _smoke_check(f), _smoke_evidence(f))
    return None


@rule("verify-own-credentials", "Slipway's own credentials could not invoke the function")
def _r(f: Facts):
    if _verify(f) and any(t is None and x.startswith("AWS refused the credentials") for t, x in f.kinds):
        return Finding("configuration", ["Slipway's own credentials could not invoke the function (the target block's IAM)"],
                       _smoke_check(f), _smoke_evidence(f))
    return None


@rule("verify-execution-role-denied", "the function was denied an AWS call by its execution role")
def _r(f: Facts):
    if _verify(f) and any(t in PERMISSION_CODES or re.search(r"AccessDenied|not authorized to perform", x) for t, x in f.kinds):
        return Finding("configuration", ["the function was denied an AWS call by its execution role (IAM), not by a bug in its logic"],
                       _smoke_check(f), _smoke_evidence(f))
    return None


@rule("verify-unreachable", "the smoke checks could not reach the function (AWS or network), not a wrong answer",
      refs=("traffic-invoke-failed",))
def _r(f: Facts):
    details = " ".join(c.get("detail", "") for c in f.failed if c.get("response") is None)  # no answer from the function
    if _verify(f) and re.search(r"could not reach AWS|Throttl|TooManyRequests|ServiceException|\b50[234]\b", details):
        return Finding("network-or-aws", ["the smoke checks could not reach the function (AWS or network), not a wrong answer"],
                       _smoke_check(f), _smoke_evidence(f))
    return None


@rule("verify-timeout-lowered", "the function ran past its timeout right after the spec changed its timeout")
def _r(f: Facts):
    if not _verify(f):
        return None
    timed_out = next((m for _, x in f.kinds for m in [_TIMED_OUT.search(x)] if m), None)
    if timed_out and "timeout" in f.spec_fields_changed():
        return Finding("configuration", [
            f"the function ran out of time (timed out after {timed_out.group(1)} s){f.env_note}, and this release changed "
            "slipway.yaml's timeout: the handler needs longer than the new limit",
            "raise artifact.timeout back (or make the slow path faster)",
        ], _smoke_check(f), _smoke_evidence(f) + _spec_lines(f))
    return None


@rule("verify-spec-only", "the smoke checks failed and only slipway.yaml changed since the last verified release")
def _r(f: Facts):
    if _verify(f) and f.failed and f.only_spec_changed():
        return Finding("configuration", [
            f"the same code passed before; the only change since the last verified release is in slipway.yaml ({_spec_fields(f)}), "
            f"and smoke check {_smoke_check(f)!r} fails with it",
        ], _smoke_check(f), _smoke_evidence(f) + _spec_lines(f))
    return None


@rule("verify-wrong-answer", "the new version ran and answered wrongly: preflight passed, so the code", refs=("verification-failed",),
      stages=("verify",))
def _r(f: Facts):
    if not _verify(f):
        return None
    timed_out = next((m for _, x in f.kinds for m in [_TIMED_OUT.search(x)] if m), None)
    return Finding("code-defect", [
        f"the new version was deployed{f.env_note} and ran, and smoke check {_smoke_check(f)!r} failed on its answer"
        + (f" (it ran past its {timed_out.group(1)} s timeout)" if timed_out else ""),
        "preflight passed (the artifact imports and its dependencies are packaged), so the cause is the code (or its test coverage): "
        "the repository's tests did not catch it",
    ], _smoke_check(f), _smoke_evidence(f))


@rule("orchestration-unavailable", "the Prefect server or its database was unavailable, not the release", stages=("orchestration",))
def _r(f: Facts):
    if f.stage == "orchestration":
        if re.search(r"\b50[234]\b|Service Unavailable|database is locked|ConnectError|ReadTimeout|connection", f.message, re.I):
            return Finding("network-or-aws", ["the orchestration layer (the Prefect server or its database) was unavailable, not the release"],
                           "orchestration", [f.message])
        return Finding("unclassified", [f"an unexpected {f.ref} outside Slipway's own checks"], "orchestration", [f.message])
    return None


@rule("rollback-failed", "the rollback itself failed: the environment needs a human", refs=("rollback-failed",), stages=("rollback",))
def _r(f: Facts):
    if f.stage == "rollback":
        return Finding("unclassified", ["the rollback itself failed: the environment needs a human (see the ledger)"], "rollback", [f.message])
    return None


@rule("no-rule", "nothing above matched: say so rather than guess")
def _r(f: Facts):
    return Finding("unclassified", [f"no rule matches stage {f.stage!r} with reference {f.ref!r}"], None, [f.message])


# References deliberately left to "no-rule" (unclassified), with why: none of them ends a release.
LEFT_UNCLASSIFIED = {
    "error": "the base class's default: a SlipwayError raised without a reference",
    "nothing-to-approve": "slipway approve with nothing paused: a command's answer, not a failed release",
    "ambiguous-approval": "slipway approve matching several paused runs: a command's answer",
    "approval-refused": "slipway approve refused: a command's answer",
    "nothing-running": "slipway abort / promote-now with nothing baking: a command's answer",
    "nothing-to-diagnose": "slipway diagnose with no failure on record",
    "unknown-release": "slipway rollback --to an unknown release: a command's answer",
    "nothing-to-roll-back-to": "slipway rollback with nothing verified before: a command's answer",
    "local-stack-failed": "slipway local up/down: not a release",
    "environment-locked": "another run holds the environment: the release waits or is refused, nothing failed",
    "not-a-flag": "slipway flag on a name that is not a flag: a command's answer",
    "approval-rejected": "a person said no: a decision, not a failure (no diagnosis is written)",
    "environment-frozen": "a freeze window: a decision, not a failure (no diagnosis is written)",
    "release-aborted": "a person aborted the release: a decision (no diagnosis is written)",
    "release-failed": "the release as a whole: its failure record carries the leaf error, which a rule classifies",
    "verify-failed": "the verify flow's summary of a live environment: no release failed",
}


def classify(record: "FailureRecord", aws_code: Callable[[dict], str | None]) -> tuple[str, list[str], str | None, list[str], Rule]:
    """(classification, reasoning, leaf check, evidence lines, the rule that decided) of a failure record."""
    err = record.error
    data = err.get("evidence") or {}
    reference = err.get("ref") or ""
    facts = Facts(
        record=record, stage=record.stage, ref=reference, message=err.get("message", ""), data=data,
        code=aws_code(err), transient=bool(err.get("transient")), env_note=f" in {record.environment}" if record.environment else "",
        tail=str(data.get("output_tail") or "").strip().splitlines(), failed=_failing_checks(err, record.ledger),
    )
    head = ([f"AWS error code: {facts.code}" + (f" — {short(data.get('aws_message'))}" if data.get("aws_message") else "")]
            if facts.code else [])
    for r in RULES:
        found = r.decide(facts)
        if found is not None:
            return found.classification, found.reasoning, found.check, head + found.evidence, r
    raise AssertionError("unreachable: the last rule always decides")


def _failing_checks(error: dict, ledger: list[dict]) -> list[dict]:
    checks = (error.get("evidence") or {}).get("checks")
    if not checks:
        for entry in ledger:
            if entry.get("kind") == "verify-failed":
                checks = (entry.get("detail") or {}).get("checks")
    return [c for c in (checks or []) if not c.get("passed", True)]


__all__ = ["Facts", "Finding", "LEFT_UNCLASSIFIED", "RULES", "Rule", "classify"]
