"""AWS Lambda as a deploy target: publish an immutable version from the stored artifact, move the alias.

Publishing a version touches nothing live; only ``point_alias`` changes what callers get.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from dataclasses import dataclass, field
from typing import Callable

from botocore.exceptions import ClientError

from slipway.core.aws import aws_call, error_code, translate
from slipway.core.errors import DeployError, RollbackError
from slipway.core.models import ArtifactRef, DeployResult


@dataclass(frozen=True)
class LambdaSettings:
    """Everything needed to shape the function: from the spec and the target block."""

    function_name: str
    alias: str
    role_arn: str
    handler: str
    runtime: str
    timeout: int = 30
    memory: int = 256
    environment: dict[str, str] = field(default_factory=dict)


def _wait_until_updated(lam, name: str, sleep: Callable[[float], None] = time.sleep, attempts: int = 120) -> None:
    """Lambda applies code/config updates asynchronously; wait for LastUpdateStatus to leave InProgress."""
    for _ in range(attempts):
        conf = aws_call(DeployError, "read the function state", lam.get_function_configuration, FunctionName=name, target=name)
        state, status = conf.get("State", "Active"), conf.get("LastUpdateStatus", "Successful")
        if state == "Failed" or status == "Failed":
            raise DeployError(
                f"Lambda could not apply the update: {conf.get('StateReason') or conf.get('LastUpdateStatusReason')}",
                target=name,
                hint="check the role, runtime and handler",
                ref="lambda-update-failed",
            )
        if state != "Pending" and status != "InProgress":
            return
        sleep(1.0)
    raise DeployError("Lambda update did not finish in time", target=name, hint="retry the release", ref="lambda-update-timeout")


FUNCTION_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_function_name(name: str) -> str:
    if not FUNCTION_NAME_RE.fullmatch(name):
        raise DeployError(
            f"function name {name!r} is not valid for Lambda (letters, digits, - and _, at most 64)",
            hint="shorten the app or environment name, or set function_name in slipway.yaml",
            ref="invalid-function-name",
        )
    return name


def get_function(lam, name: str) -> dict | None:
    try:
        return lam.get_function(FunctionName=name)
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise translate(exc, DeployError, "read the function", target=name) from exc


def alias_version(lam, name: str, alias: str) -> str | None:
    """The version the alias points at, or None if the function or the alias does not exist."""
    try:
        return lam.get_alias(FunctionName=name, Name=alias)["FunctionVersion"]
    except ClientError as exc:
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise translate(exc, DeployError, "read the alias", target=f"{name}:{alias}") from exc


def publish_version(lam, settings: LambdaSettings, artifact: ArtifactRef, sleep: Callable[[float], None] = time.sleep) -> DeployResult:
    """Create or update the function from the stored artifact and publish a version. Nothing live changes."""
    name = settings.function_name
    code = {"S3Bucket": artifact.bucket, "S3Key": artifact.key}
    config = dict(
        Role=settings.role_arn,
        Handler=settings.handler,
        Runtime=settings.runtime,
        Timeout=settings.timeout,
        MemorySize=settings.memory,
        Environment={"Variables": dict(settings.environment)},
    )
    existing = get_function(lam, name)
    created = existing is None
    if created:
        aws_call(
            DeployError, "create the function", lam.create_function, FunctionName=name, Code=code, Publish=False,
            Description=f"managed by slipway ({artifact.app})", Tags={"slipway:app": artifact.app}, target=name,
            hint="check role_arn in the lambda-target block", **config,
        )
        _wait_until_updated(lam, name, sleep)
    else:
        owner = (existing.get("Tags") or {}).get("slipway:app")
        if owner != artifact.app:
            whose = f"belongs to app {owner!r}" if owner else "is not managed by Slipway"
            raise DeployError(
                f"function {name} {whose}",
                hint=f"choose another function_name in slipway.yaml, or tag it slipway:app={artifact.app} to adopt it",
                ref="function-owned-elsewhere",
            )
        current = existing["Configuration"]
        wanted = {k: v for k, v in config.items()}
        have = {
            "Role": current.get("Role"), "Handler": current.get("Handler"), "Runtime": current.get("Runtime"),
            "Timeout": current.get("Timeout"), "MemorySize": current.get("MemorySize"),
            "Environment": {"Variables": (current.get("Environment") or {}).get("Variables", {})},
        }
        if have != wanted:
            aws_call(DeployError, "update the function configuration", lam.update_function_configuration, FunctionName=name, target=name, **config)
            _wait_until_updated(lam, name, sleep)
        if current.get("CodeSha256") != artifact.code_sha256_b64:
            aws_call(DeployError, "update the function code", lam.update_function_code, FunctionName=name, target=name, **code)
            _wait_until_updated(lam, name, sleep)
    versions = _published_versions(lam, name)
    published = aws_call(
        DeployError, "publish a version", lam.publish_version, FunctionName=name, CodeSha256=artifact.code_sha256_b64,
        Description=f"{artifact.release_id} {artifact.commit[:12]}", target=name,
    )
    version = published["Version"]
    # AWS honours the CodeSha256 precondition; moto ignores it (see shared facts). Check it ourselves.
    if published.get("CodeSha256") != artifact.code_sha256_b64:
        raise DeployError(
            f"published version {version} has CodeSha256 {published.get('CodeSha256')}, expected {artifact.code_sha256_b64}",
            target=name,
            hint="the function's code changed underneath this release; re-run it",
            ref="code-sha-mismatch",
        )
    return DeployResult(
        environment="",
        function=name,
        alias=settings.alias,
        version=version,
        previous_version=alias_version(lam, name, settings.alias),
        code_sha256=published["CodeSha256"],
        created_function=created,
        new_version=version not in versions,
    )


def _versions(lam, name: str) -> tuple[dict | None, list[dict]]:
    """(``$LATEST``'s configuration, the published versions' oldest first) of the function."""
    versions = [v for page in lam.get_paginator("list_versions_by_function").paginate(FunctionName=name) for v in page.get("Versions", [])]
    latest = next((v for v in versions if v.get("Version") == "$LATEST"), None)
    return latest, sorted((v for v in versions if str(v.get("Version", "")).isdigit()), key=lambda v: int(v["Version"]))


def _published_versions(lam, name: str) -> set[str]:
    latest, published = _versions(lam, name)
    return {v["Version"] for v in published} | ({"$LATEST"} if latest else set())


def point_alias(lam, name: str, alias: str, version: str, *, error_cls=DeployError) -> str | None:
    """Point the alias at ``version`` with 100% of traffic (routing cleared). Returns the previous version."""
    previous = alias_version(lam, name, alias)
    if previous is None:
        aws_call(error_cls, "create the alias", lam.create_alias, FunctionName=name, Name=alias, FunctionVersion=version, target=f"{name}:{alias}")
    else:
        aws_call(
            error_cls, "move the alias", lam.update_alias, FunctionName=name, Name=alias, FunctionVersion=version,
            RoutingConfig={"AdditionalVersionWeights": {}}, target=f"{name}:{alias}",
        )
    return previous


def remove_alias(lam, name: str, alias: str) -> None:
    """Used when a first-ever deploy fails: nothing verified exists to go back to, so stop serving."""
    try:
        lam.delete_alias(FunctionName=name, Name=alias)
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise translate(exc, RollbackError, "remove the alias", target=f"{name}:{alias}") from exc


_SLIPWAY_DESCRIPTION = re.compile(r"^\S+ \S{12}$")  # "<release id> <commit[:12]>", as publish_version describes a version


def _config_view(conf: dict, *, code: bool = True) -> dict:
    """The configuration fields of a function version that a release sets or carries along."""
    view = {
        "Role": conf.get("Role"), "Handler": conf.get("Handler"), "Runtime": conf.get("Runtime"), "Timeout": conf.get("Timeout"),
        "MemorySize": conf.get("MemorySize"), "Environment": dict((conf.get("Environment") or {}).get("Variables") or {}),
        "Layers": sorted(layer["Arn"] for layer in conf.get("Layers") or []), "Architectures": list(conf.get("Architectures") or ["x86_64"]),
    }
    if code:
        view["CodeSha256"] = conf.get("CodeSha256")
    return view


def _config_differences(before: dict, after: dict) -> list[str]:
    """What differs, by field; environment variables by name only (their values may be secrets)."""
    out = []
    for key in before:
        if before[key] == after.get(key):
            continue
        if key == "Environment":
            names = sorted(set(before[key]) ^ set(after[key]) | {n for n in set(before[key]) & set(after[key]) if before[key][n] != after[key][n]})
            out.append(f"environment variables {', '.join(names)}")
        elif key == "CodeSha256":
            continue  # a release replaces $LATEST's code: what matters is what it would carry along
        else:
            out.append(f"{key} {before[key]!r} → {after.get(key)!r}")
    return out


class LambdaTarget:
    """An environment served by a Lambda alias: the ``Target`` that rollout.py drives (see targets.py)."""

    type = "lambda"

    def __init__(
        self, lam, settings: LambdaSettings, sleep: Callable[[float], None] = time.sleep, *, cw=None,
        metrics_period_s: int = 60, metrics_delay_s: float = 0.0,
    ) -> None:
        self.lam = lam
        self.settings = settings
        self.sleep = sleep
        self.cw = cw  # CloudWatch: per-version canary metrics (and alarm gates, through the caller)
        self.metrics_period_s = metrics_period_s
        self.metrics_delay_s = metrics_delay_s  # CloudWatch's ingestion delay: waited before a window is read

    @property
    def name(self) -> str:
        return f"{self.settings.function_name}:{self.settings.alias}"

    def location(self) -> dict:
        return {"function": self.settings.function_name, "alias": self.settings.alias}

    def default_check(self) -> dict:
        return {"name": "invoke", "event": {}, "expect": {}}

    def prepare(self, artifact: ArtifactRef) -> DeployResult:
        return publish_version(self.lam, self.settings, artifact, self.sleep)

    def serving(self) -> str | None:
        return alias_version(self.lam, self.settings.function_name, self.settings.alias)

    def point(self, version: str, release=None, *, error_cls=DeployError) -> None:
        point_alias(self.lam, self.settings.function_name, self.settings.alias, version, error_cls=error_cls)

    def remove(self) -> None:
        remove_alias(self.lam, self.settings.function_name, self.settings.alias)

    def identity_mismatch(self, version: str, release) -> str | None:
        """None when ``version`` runs the release's code (CodeSha256); else what differs. Catches a function that
        was deleted and recreated, whose version numbers now name other code."""
        import base64

        if not getattr(release, "artifact_sha256", None):
            return None
        conf = aws_call(DeployError, "read the version", self.lam.get_function_configuration, FunctionName=self.settings.function_name,
                        Qualifier=version, target=self.name)
        expected = base64.b64encode(bytes.fromhex(release.artifact_sha256.removeprefix("sha256:"))).decode()
        if conf.get("CodeSha256") != expected:
            return f"version {version} runs code {conf.get('CodeSha256')}, not the release's {expected}"
        return None

    def outside_changes(self, app: str) -> list[str]:
        """What was changed outside Slipway that the ledger does not show and the next release would silently undo or
        carry along: a routing weight on the alias (a hand-made canary), the ``slipway:app`` tag removed or changed,
        a version published by someone else, and configuration changed on ``$LATEST`` (which the next version is
        published from). Each is one phrase, naming fields and environment variable names, never values."""
        name, alias = self.settings.function_name, self.settings.alias
        found: list[str] = []
        try:
            routing = (self.lam.get_alias(FunctionName=name, Name=alias).get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
            function = self.lam.get_function(FunctionName=name)
            latest, published = _versions(self.lam, name)
        except ClientError as exc:
            if error_code(exc) == "ResourceNotFoundException":
                return []  # gone: deploying recreates it (check_no_drift lets that through)
            raise translate(exc, DeployError, "read the function", target=self.name) from exc
        for version, weight in sorted(routing.items()):
            found.append(f"alias {alias} also sends {float(weight) * 100:g}% to version {version} (a routing weight set outside Slipway)")
        owner = (function.get("Tags") or {}).get("slipway:app")
        if owner != app:
            found.append(f"the function's slipway:app tag is {'missing' if owner is None else repr(owner)} (Slipway tagged it {app!r})")
        if published and not _SLIPWAY_DESCRIPTION.match(published[-1].get("Description") or ""):
            found.append(f"version {published[-1]['Version']} was published outside Slipway ({published[-1].get('Description') or 'no description'!r})")
        elif latest is not None and published:
            changed = _config_differences(_config_view(published[-1]), _config_view(latest))
            if changed and _config_view(latest, code=False) != self._wanted_view():
                found.append(f"$LATEST was changed outside Slipway ({', '.join(changed)}); the next version is published from it")
        return found

    def heal_outside_changes(self, app: str) -> str:
        """Undo ``outside_changes``: the alias back to 100% on its version, the tag back, ``$LATEST``'s configuration back
        to the newest version's. A version published outside Slipway is left (it serves nothing once the alias is back)."""
        name, done = self.settings.function_name, []
        alias = aws_call(DeployError, "read the alias", self.lam.get_alias, FunctionName=name, Name=self.settings.alias, target=self.name)
        if (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights"):
            point_alias(self.lam, name, self.settings.alias, alias["FunctionVersion"])
            done.append(f"alias {self.settings.alias} back to 100% on version {alias['FunctionVersion']}")
        function = aws_call(DeployError, "read the function", self.lam.get_function, FunctionName=name, target=name)
        if (function.get("Tags") or {}).get("slipway:app") != app:
            aws_call(DeployError, "tag the function", self.lam.tag_resource, Resource=function["Configuration"]["FunctionArn"],
                     Tags={"slipway:app": app}, target=name)
            done.append(f"tagged slipway:app={app}")
        latest, published = _versions(self.lam, name)
        if latest is not None and published and _config_differences(_config_view(published[-1], code=False), _config_view(latest, code=False)):
            view = _config_view(published[-1], code=False)
            aws_call(DeployError, "restore the function configuration", self.lam.update_function_configuration, FunctionName=name,
                     Role=view["Role"], Handler=view["Handler"], Runtime=view["Runtime"], Timeout=view["Timeout"],
                     MemorySize=view["MemorySize"], Environment={"Variables": view["Environment"]}, Layers=view["Layers"], target=name)
            _wait_until_updated(self.lam, name, self.sleep)
            done.append(f"$LATEST configuration back to version {published[-1]['Version']}'s")
        return "; ".join(done) or "nothing to undo"

    def _wanted_view(self) -> dict:
        """The configuration this target's settings give (what the next release sets on ``$LATEST`` anyway)."""
        s = self.settings
        return {"Role": s.role_arn, "Handler": s.handler, "Runtime": s.runtime, "Timeout": s.timeout, "MemorySize": s.memory,
                "Environment": dict(s.environment), "Layers": [], "Architectures": ["x86_64"]}

    # ---- progressive delivery ---------------------------------------------------------------------------
    def shift(self, stable_version: str, canary_version: str, canary_percent: int, *, error_cls=DeployError) -> None:
        """Alias routing: the alias stays on ``stable_version`` and sends ``canary_percent`` of invokes to the canary."""
        if not 1 <= canary_percent <= 99:
            raise ValueError(f"canary_percent must be 1..99, got {canary_percent}")
        name, alias = self.settings.function_name, self.settings.alias
        aws_call(
            error_cls, "shift alias traffic", self.lam.update_alias, FunctionName=name, Name=alias, FunctionVersion=stable_version,
            RoutingConfig={"AdditionalVersionWeights": {canary_version: round(canary_percent / 100, 4)}}, target=f"{name}:{alias}",
        )

    def canary_sample(self, stable_version: str, canary_version: str, start, end):
        """(stable, canary) from CloudWatch's per-version metrics of this alias over [start, end)."""
        from slipway.verify.lambda_metrics import version_sample

        if self.cw is None:
            raise DeployError("no CloudWatch client for canary analysis", target=self.name,
                              hint="construct LambdaTarget with cw= (the release tasks always do)", ref="canary-metrics-unavailable")
        # CloudWatch keys datapoints by the start of their period: widen the window to whole periods so no
        # invoke of the bake is lost (both sides get the same widening, so the comparison stays like for like)
        period = self.metrics_period_s
        start = start.replace(microsecond=0) - timedelta(seconds=int(start.timestamp()) % period)
        end = end + timedelta(seconds=period)
        function, resource = self.settings.function_name, self.name
        return (
            version_sample(self.cw, function, resource, stable_version, start, end, period),
            version_sample(self.cw, function, resource, canary_version, start, end, period),
        )

    def drive(self, items: list, rate_per_s: float, duration_s: float, *, max_requests: int = 10_000, clock=time.monotonic, sleep=time.sleep):
        from slipway.verify.traffic import drive_lambda

        return drive_lambda(self.lam, self.settings.function_name, self.settings.alias, items, rate_per_s=rate_per_s,
                            duration_s=duration_s, max_requests=max_requests, clock=clock, sleep=sleep)

    def verify(self, checks: list[dict], expected_version: str):
        from slipway.verify.lambda_checks import run_smoke_checks

        return run_smoke_checks(self.lam, self.settings.function_name, self.settings.alias, checks or [self.default_check()], expected_version)

    def settle(self, live_version: str) -> None:
        """Nothing to clean up: Lambda versions are immutable and cheap to keep."""

    def discard(self, version: str) -> None:
        """A failed version stays published (AWS keeps versions); only the alias decides what serves."""
