"""The app's description of itself: ``slipway.yaml``, validated with pydantic (loaded by ``slipway.spec.loading``).

Every validation problem becomes one line that names the field and the fix, e.g.
``slipway.yaml: artifact.handler: 'app' is not module.function; write it like app.handler``.
Unknown keys are errors (a typo must never be silently ignored).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, ValidationError, field_validator, model_validator,
)

from slipway.core.errors import SpecError

SPEC_FILE = "slipway.yaml"
MAX_SPEC_BYTES = 256 * 1024
MAX_SPEC_DEPTH = 32  # a spec nests a few levels; smoke events and traffic payloads a few more
NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$")
SUPPORTED_RUNTIMES = ("python3.9", "python3.10", "python3.11", "python3.12", "python3.13")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_ENV_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# Lambda sets these itself and refuses them in a function's configuration.
_RESERVED_ENV = {
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV", "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION", "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME", "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
}


LAMBDA_ENV_LIMIT = 4096  # bytes: all of a function's environment variable names and values together


def _env_vars(value: dict[str, str]) -> dict[str, str]:
    for key in value:
        if not _ENV_KEY.fullmatch(key):
            raise ValueError(f"environment variable name {key!r} must start with a letter and use letters, digits and _")
        if key in _RESERVED_ENV:
            raise ValueError(f"environment variable {key!r} is reserved by Lambda; choose another name")
    return value


class SecretRef(_Strict):
    """An environment value kept out of slipway.yaml, read when an environment is deployed and never logged or recorded:
    ``prefect:NAME`` (a Prefect Secret block), ``ssm:/path`` (an SSM parameter, SecureString decrypted) or
    ``secretsmanager:NAME-OR-ARN`` (a Secrets Manager secret's string). SSM and Secrets Manager are read in the
    environment's own AWS account (its target block's credentials; the artifact store's for a Docker host)."""

    secret: str = Field(pattern=r"^(prefect:[a-z0-9][a-z0-9-]{0,99}|ssm:/[A-Za-z0-9_.\-/]{1,1010}|secretsmanager:[A-Za-z0-9/_+=.@:\-]{1,2048})$",
                        description="prefect:NAME | ssm:/path | secretsmanager:NAME-OR-ARN")

    @property
    def kind(self) -> str:
        return self.secret.split(":", 1)[0]

    @property
    def name(self) -> str:
        return self.secret.split(":", 1)[1]


_SECRET_FORMS = "{secret: prefect:NAME}, {secret: ssm:/path} or {secret: secretsmanager:NAME}"


def _env_value(value: Any) -> "str | SecretRef":
    if isinstance(value, (str, SecretRef)):
        return value
    if isinstance(value, dict) and set(value) == {"secret"} and isinstance(value["secret"], str):
        try:
            return SecretRef(secret=value["secret"])
        except ValidationError:
            raise ValueError(f"{value['secret']!r} is not a secret reference; write {_SECRET_FORMS}") from None
    if isinstance(value, (int, float)):
        raise ValueError(f"{value!r} must be a string: quote it")
    raise ValueError(f"must be a string or a secret reference ({_SECRET_FORMS}), not {type(value).__name__}")


EnvValue = Annotated[Any, PlainValidator(_env_value, json_schema_input_type=str | dict[str, str])]
EnvVars = Annotated[dict[str, EnvValue], AfterValidator(_env_vars)]


def env_size(value: EnvValue) -> int:
    """Bytes a value takes in Lambda's 4 KB (a reference: its own length, the secret is not known before the deploy)."""
    return len((value if isinstance(value, str) else value.secret).encode())


def _relative_path(value: str, field: str) -> str:
    if not value.isprintable():
        raise ValueError(f"{value!r} must be a path without control characters")
    path = Path(value)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{value!r} must be a path inside the repository (no leading / and no ..)")
    return value


class LambdaZipArtifact(_Strict):
    type: Literal["lambda-zip"]
    source: str = Field(description="directory packaged as the zip root")
    handler: str = Field(description="module.function inside source")
    runtime: str = "python3.11"
    requirements: str | None = Field(default=None, description="vendored into the zip for the target platform")
    timeout: int = Field(default=30, ge=1, le=900, description="seconds")
    memory: int = Field(default=256, ge=128, le=10240, description="MB")
    environment: EnvVars = Field(default_factory=dict, description="function environment variables")
    max_unzipped_mb: int | None = Field(default=None, ge=1, le=250,
                                        description="the team's size budget for the unzipped package (AWS's limit is 250 MB)")

    @field_validator("source", "requirements")
    @classmethod
    def paths_stay_inside_the_repo(cls, value: str | None, info) -> str | None:
        return None if value is None else _relative_path(value, info.field_name)

    @field_validator("handler")
    @classmethod
    def handler_is_module_dot_function(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+", value):
            raise ValueError(f"{value!r} is not module.function; write it like app.handler")
        return value

    @field_validator("runtime")
    @classmethod
    def runtime_is_supported(cls, value: str) -> str:
        if value not in SUPPORTED_RUNTIMES:
            raise ValueError(f"{value!r} is not a supported runtime; use one of {', '.join(SUPPORTED_RUNTIMES)}")
        return value

    @property
    def handler_module(self) -> str:
        return self.handler.rsplit(".", 1)[0]

    @property
    def handler_function(self) -> str:
        return self.handler.rsplit(".", 1)[1]

    def build_inputs(self) -> dict:
        return self.model_dump(mode="json", include={"type", "source", "runtime", "requirements"})


class DockerImageArtifact(_Strict):
    type: Literal["docker-image"]
    dockerfile: str = Field(default="Dockerfile", description="path inside context")
    context: str = Field(default=".", description="build context directory")
    build_args: dict[str, str] = Field(default_factory=dict)
    platform: str | None = Field(default=None, description="e.g. linux/amd64")
    port_env: str = Field(default="PORT", description="environment variable the service reads its listening port from")
    health_path: str = Field(default="/health", description="polled until 200 before traffic is switched")
    environment: EnvVars = Field(default_factory=dict, description="container environment variables (all environments)")

    @field_validator("dockerfile", "context")
    @classmethod
    def paths_stay_inside_the_repo(cls, value: str, info) -> str:
        return _relative_path(value, info.field_name)

    @field_validator("platform")
    @classmethod
    def platform_is_os_slash_arch(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?", value):
            raise ValueError(f"{value!r} is not a platform like linux/amd64")
        return value

    @field_validator("health_path")
    @classmethod
    def health_path_is_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must start with /, e.g. /health")
        return value

    def build_inputs(self) -> dict:
        return self.model_dump(mode="json", include={"type", "dockerfile", "context", "build_args", "platform"})


LAMBDA_ONLY_FIELDS = set(LambdaZipArtifact.model_fields) - set(DockerImageArtifact.model_fields)
DOCKER_ONLY_FIELDS = set(DockerImageArtifact.model_fields) - set(LambdaZipArtifact.model_fields)
Artifact = Annotated[LambdaZipArtifact | DockerImageArtifact, Field(discriminator="type")]


class TestConfig(_Strict):
    __test__ = False  # not a pytest class
    command: list[str] = Field(min_length=1)
    requirements: list[str] = Field(default_factory=list)
    timeout: int = Field(default=900, ge=1)

    @field_validator("requirements")
    @classmethod
    def requirement_paths_stay_inside_the_repo(cls, value: list[str]) -> list[str]:
        return [_relative_path(v, "requirements") for v in value]


class HttpRequest(_Strict):
    method: Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] = "GET"
    path: str = "/"
    body: Any = None
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("path")
    @classmethod
    def path_is_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"{value!r} must start with /")
        return value


class SmokeCheck(_Strict):
    """A Lambda check (``event`` + ``expect`` as a subset of the reply) or an HTTP check (``request`` +
    ``expect: {status, body_contains}``), by artifact type."""

    name: str = Field(min_length=1, max_length=64)
    event: Any = None
    request: HttpRequest | None = None
    expect: dict[str, Any] = Field(default_factory=dict, description="Lambda: subset match on the returned JSON; HTTP: status, body_contains")

    @field_validator("name")
    @classmethod
    def name_is_printable(cls, value: str) -> str:
        if not value.isprintable():  # the name goes into log lines and the ledger: a newline would forge a line
            raise ValueError(f"{value!r} must be printable (no newlines or other control characters)")
        return value


class VerifyConfig(_Strict):
    smoke: list[SmokeCheck] = Field(default_factory=list)

    @model_validator(mode="after")
    def check_names_are_unique(self) -> "VerifyConfig":
        names = [c.name for c in self.smoke]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"smoke check names must be unique; rename {', '.join(dupes)}")
        return self


TargetType = Literal["lambda", "docker-host", "ecs"]

_DURATION = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h)\s*$")
_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: Any) -> float:
    """``"5m"`` → 300.0 seconds; ``"30s"``, ``"1h"``, ``"500ms"``; a bare number is seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write it like 30s, 5m or 1h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration; write it like 30s, 5m or 1h")
        seconds = float(match.group("n")) * _DURATION_UNITS_S[match.group("unit")]
    if seconds <= 0:
        raise ValueError(f"{value!r}: a duration must be more than 0")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]

_RATE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*/\s*(?P<unit>[sm])\s*$")
_PER_UNIT_S = {"s": 1.0, "m": 60.0}


def parse_rate(text: str) -> float:
    """``"20/s"`` → 20.0 requests per second, ``"30/m"`` → 0.5."""
    match = _RATE.match(str(text))
    if not match or float(match.group("n")) <= 0:
        raise ValueError(f"traffic rate {text!r} is not N/s or N/m with N > 0 (for example '20/s' or '30/m')")
    return float(match.group("n")) / _PER_UNIT_S[match.group("unit")]


class CanaryStrategy(_Strict):
    steps: list[int] = Field(min_length=1, description="percent of traffic on the new version at each step; ends with 100")
    bake: Duration = Field(description="how long each step below 100% runs (and is analysed) before the next, e.g. 5m")

    @field_validator("steps")
    @classmethod
    def steps_rise_to_100(cls, value: list[int]) -> list[int]:
        if any(not 1 <= v <= 100 for v in value):
            raise ValueError(f"{value}: each step is a percentage from 1 to 100")
        if any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError(f"{value}: steps must increase, e.g. [10, 50, 100]")
        if value[-1] != 100:
            raise ValueError(f"{value}: the last step must be 100 (promotion is 100% on the new version); add 100")
        return value


class LinearStrategy(_Strict):
    step: int = Field(ge=1, le=99, description="percent added at each step, e.g. 20 → 20, 40, 60, 80, 100")
    interval: Duration = Field(description="how long each step runs (and is analysed), e.g. 2m")


class Strategy(_Strict):
    canary: CanaryStrategy | None = None
    linear: LinearStrategy | None = None

    @model_validator(mode="after")
    def exactly_one(self) -> "Strategy":
        if (self.canary is None) == (self.linear is None):
            raise ValueError("give exactly one of canary: {steps, bake} or linear: {step, interval} (or write all-at-once)")
        return self

    def steps(self) -> list[int]:
        if self.canary is not None:
            return list(self.canary.steps)
        step = self.linear.step
        return sorted({min(100, step * i) for i in range(1, 100 // step + 2)})

    @property
    def bake_s(self) -> float:
        return self.canary.bake if self.canary is not None else self.linear.interval

    @property
    def name(self) -> str:
        return "canary" if self.canary is not None else "linear"


def _strategy_shorthand(value: Any) -> Any:
    if isinstance(value, str):
        if value.strip() == "all-at-once":
            return None
        raise ValueError(f"{value!r} is not a strategy; write all-at-once, canary: {{steps, bake}} or linear: {{step, interval}}")
    return value


_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")
METRIC_PLACEHOLDERS = ("version", "window", "app", "environment")  # {{version}}: the side's version; {{window}}: e.g. 300s


def _placeholders(text: str, where: str) -> set[str]:
    found = set(_PLACEHOLDER.findall(text))
    unknown = sorted(found - set(METRIC_PLACEHOLDERS))
    if unknown:
        raise ValueError(f"{where}: unknown placeholder {{{{{unknown[0]}}}}}; use {', '.join('{{' + p + '}}' for p in METRIC_PLACEHOLDERS)}")
    return found


class PrometheusQuery(_Strict):
    """A PromQL query, evaluated at the end of each bake on the Prometheus server of a ``slipway-prometheus`` block."""

    query: str = Field(min_length=1, max_length=4000, description="PromQL; {{version}}, {{window}}, {{app}}, {{environment}} are filled in")
    server: str = Field("default", pattern=r"^[a-z0-9-]{1,100}$", description="name of the slipway-prometheus block (its URL and token)")


class CloudWatchMetric(_Strict):
    namespace: str = Field(min_length=1, max_length=255)
    metric: str = Field(min_length=1, max_length=255, description="the metric name")
    dimensions: dict[str, str] = Field(default_factory=dict, description="values may use {{version}}, {{app}}, {{environment}}")
    stat: str = Field("Average", pattern=r"^(Sum|Average|Minimum|Maximum|SampleCount|p\d{1,2}(\.\d{1,2})?)$",
                      description="Sum, Average, Minimum, Maximum, SampleCount or a percentile such as p99")


class CloudWatchQuery(CloudWatchMetric):
    """One CloudWatch metric (namespace, metric, dimensions, stat) or metric math (``expression`` over ``metrics``),
    read with GetMetricData in the environment's account over the bake's window."""

    namespace: str | None = Field(default=None, min_length=1, max_length=255)  # type: ignore[assignment]
    metric: str | None = Field(default=None, min_length=1, max_length=255)  # type: ignore[assignment]
    expression: str | None = Field(default=None, min_length=1, max_length=2048, description="metric math over the ids in metrics, e.g. 100 * errors / orders")
    metrics: dict[str, CloudWatchMetric] = Field(default_factory=dict, description="the expression's inputs by id (lowercase first letter)")
    period: int = Field(60, ge=1, le=86400, description="seconds per datapoint")
    reduce: Literal["sum", "average", "maximum", "minimum"] | None = Field(
        default=None, description="how the window's datapoints make one value (default: sum for Sum and SampleCount, else average)")

    @model_validator(mode="after")
    def one_form(self) -> "CloudWatchQuery":
        if self.expression is None:
            if not (self.namespace and self.metric) or self.metrics:
                raise ValueError("a cloudwatch query is namespace + metric (+ dimensions, stat), or expression + metrics")
        else:
            if self.namespace or self.metric or self.dimensions or not self.metrics:
                raise ValueError("a cloudwatch expression names its inputs under metrics: {id: {namespace, metric, dimensions, stat}}")
            for key in self.metrics:
                if not re.fullmatch(r"[a-z][A-Za-z0-9_]{0,254}", key):
                    raise ValueError(f"metric id {key!r} must start with a lowercase letter (letters, digits, _)")
        return self

    def texts(self) -> list[str]:
        """Everything placeholders may appear in."""
        inputs = [self] if self.expression is None else list(self.metrics.values())
        return [v for m in inputs for v in m.dimensions.values()] + ([self.expression] if self.expression else [])


class CustomMetric(_Strict):
    """A canary check on the app's own metrics: a Prometheus or CloudWatch query per version, judged against a fixed
    ``threshold`` (the canary's value) and/or against stable (``max_change``, relative). ``direction`` says which way is
    worse. No data for a side is INCONCLUSIVE, never a pass."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    prometheus: PrometheusQuery | None = None
    cloudwatch: CloudWatchQuery | None = None
    direction: Literal["higher-is-worse", "lower-is-worse"] = "higher-is-worse"
    threshold: float | None = Field(default=None, description="the canary fails past this value (above, or below for lower-is-worse)")
    max_change: float | None = Field(default=None, ge=0, description="tolerated change against stable in the worse direction, 0.2 = 20%")
    min_delta: float = Field(0.0, ge=0, description="with max_change: differences smaller than this never fail (noise near zero)")

    @model_validator(mode="after")
    def well_formed(self) -> "CustomMetric":
        if (self.prometheus is None) == (self.cloudwatch is None):
            raise ValueError(f"metric {self.name!r}: give exactly one of prometheus: or cloudwatch:")
        if self.threshold is None and self.max_change is None:
            raise ValueError(f"metric {self.name!r}: give threshold: (a limit on the canary's value) and/or max_change: (against stable)")
        texts = [self.prometheus.query] if self.prometheus else self.cloudwatch.texts()
        used = set().union(*(_placeholders(t, f"metric {self.name!r}") for t in texts))
        if "version" not in used:
            raise ValueError(f"metric {self.name!r}: the query must select one version with {{{{version}}}} "
                             "(e.g. a label or dimension version=\"{{version}}\"), or stable and canary would read the same data")
        return self

    @property
    def source(self) -> str:
        return "prometheus" if self.prometheus else "cloudwatch"


class Analysis(_Strict):
    """The canary verdict's thresholds (see slipway/verify/canary.py) and what INCONCLUSIVE does."""

    min_requests: int = Field(50, ge=1, description="per side and step; fewer → INCONCLUSIVE")
    min_latency_periods: int = Field(5, ge=1, description="Lambda: per-period Duration averages per side; fewer → latency INCONCLUSIVE")
    max_error_rate_increase: float = Field(0.01, ge=0, le=1, description="tolerated absolute increase, 0.01 = 1 percentage point")
    max_latency_increase: float = Field(1.2, gt=0, description="tolerated canary/stable median latency ratio")
    alpha: float = Field(0.05, gt=0, lt=1, description="one-sided significance of both tests")
    inconclusive: Literal["extend", "pause", "fail"] = Field("extend", description="extend the bake, pause for a human, or fail")
    max_extensions: int = Field(2, ge=0, le=100, description="extensions of one step before INCONCLUSIVE fails the stage")
    metrics: list[CustomMetric] = Field(default_factory=list, description="the app's own metrics, judged with the built-in checks")

    @field_validator("metrics")
    @classmethod
    def metric_names_unique(cls, value: list[CustomMetric]) -> list[CustomMetric]:
        names = [m.name for m in value]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes or {"error_rate", "latency"} & set(names):
            raise ValueError(f"metric names must be unique and not error_rate or latency; rename {', '.join(dupes) or 'it'}")
        return value

    def thresholds(self) -> dict:
        return {
            "min_requests": self.min_requests, "min_latency_periods": self.min_latency_periods,
            "max_error_rate_increase": self.max_error_rate_increase, "error_alpha": self.alpha,
            "latency_alpha": self.alpha, "max_latency_increase_ratio": self.max_latency_increase,
        }


class Traffic(_Strict):
    """Synthetic traffic during each bake: ``events`` (Lambda) or ``requests`` (HTTP), round-robin at ``rate``."""

    rate: str = Field(description="N/s or N/m, e.g. 20/s")
    events: list[Any] = Field(default_factory=list, description="Lambda: invoke payloads (JSON)")
    requests: list[HttpRequest] = Field(default_factory=list, description="HTTP: requests sent to the environment's endpoint")
    max_requests: int = Field(10_000, ge=1, description="never more than this per bake")

    @field_validator("rate")
    @classmethod
    def rate_parses(cls, value: str) -> str:
        parse_rate(value)
        return value

    @property
    def rate_per_s(self) -> float:
        return parse_rate(self.rate)


class Webhook(_Strict):
    """An HTTP endpoint POSTed the release's details as JSON; any 2xx answer passes. Header values may be secret
    references (``{secret: prefect:NAME}``, SSM, Secrets Manager), read at the call and never logged or recorded."""

    url: str = Field(min_length=1, max_length=2048, pattern=r"^https?://[^\s@/]+(/\S*)?$",
                     description="http(s)://host[:port]/path (no user:password@: put credentials in a secret header)")
    headers: dict[str, EnvValue] = Field(default_factory=dict, description="e.g. Authorization: {secret: prefect:deploy-hook-token}")

    @field_validator("headers")
    @classmethod
    def header_names(cls, value: dict) -> dict:
        for key in value:
            if not re.fullmatch(r"[A-Za-z0-9-]{1,100}", key):
                raise ValueError(f"{key!r} is not an HTTP header name (letters, digits and -)")
        return value


class Hook(_Strict):
    """A lifecycle hook: a Lambda function invoked with the release's details (CodeDeploy's model: it answers
    ``{"status": "Succeeded" | "Failed", "message": ...}``; a function error fails too) or an HTTP webhook (Flagger's)."""

    function: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_:.\-]{1,170}$", description="Lambda function name or ARN (in the environment's account)")
    webhook: Webhook | None = None
    timeout: Duration = Field(30.0, description="no answer in time fails the hook (at most 15m)")

    @model_validator(mode="after")
    def one_kind(self) -> "Hook":
        if (self.function is None) == (self.webhook is None):
            raise ValueError("a hook is either function: NAME (a Lambda function) or webhook: {url, headers}")
        if self.timeout > 900:
            raise ValueError("a hook's timeout is at most 15m")
        return self

    @property
    def label(self) -> str:
        if self.function:
            return f"lambda {self.function}"
        return f"webhook {self.webhook.url.split('?', 1)[0]}"


class Hooks(_Strict):
    """Called with the release's details: ``before_traffic`` once the new version is ready and before any traffic
    reaches it, ``after_traffic`` once it has all the traffic (before it is declared verified), ``during_bake`` at the
    start of each canary or linear bake (a load test). A failing or timed-out hook fails the stage: traffic goes back."""

    before_traffic: list[Hook] = Field(default_factory=list)
    after_traffic: list[Hook] = Field(default_factory=list)
    during_bake: list[Hook] = Field(default_factory=list)

    def of(self, phase: str) -> list[Hook]:
        return getattr(self, phase)


class FreezeWindow(_Strict):
    """A time when the environment takes no release: recurring (``cron`` = when each window starts, ``duration``,
    ``timezone``) or dated (``start``, ``end``, with their UTC offsets). ``reason`` is shown in the refusal."""

    reason: str = Field(min_length=1, max_length=200)
    cron: str | None = Field(default=None, description="when each window starts, e.g. '0 18 * * FRI' (minute hour day month weekday)")
    duration: Duration | None = Field(default=None, description="how long each recurring window lasts, e.g. 62h")
    timezone: str = Field("UTC", description="the time zone cron is read in, e.g. Europe/Berlin")
    start: datetime | None = Field(default=None, description="a dated window's start, with its offset (2026-12-21T00:00:00+01:00)")
    end: datetime | None = None

    @model_validator(mode="after")
    def one_kind(self) -> "FreezeWindow":
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from croniter import croniter

        if (self.cron is None) == (self.start is None):
            raise ValueError("a freeze window is either recurring (cron + duration) or dated (start + end)")
        if self.cron is not None:
            if self.duration is None or self.end is not None:
                raise ValueError(f"the recurring freeze window {self.cron!r} needs a duration (and no end)")
            if not croniter.is_valid(self.cron):
                raise ValueError(f"{self.cron!r} is not a cron expression (minute hour day month weekday, e.g. '0 18 * * FRI')")
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {self.timezone!r}; use an IANA name such as Europe/Berlin") from None
        else:
            if self.end is None or self.duration is not None:
                raise ValueError("a dated freeze window needs start and end (and no duration)")
            if self.start.tzinfo is None or self.end.tzinfo is None:
                raise ValueError("a dated freeze window's start and end need their UTC offset (e.g. 2026-12-21T00:00:00+01:00)")
            if self.end <= self.start:
                raise ValueError("a freeze window must end after it starts")
        return self

    def active_until(self, now: datetime) -> datetime | None:
        """The end of the window ``now`` is in (an aware datetime), or None when it is outside this window."""
        if self.start is not None:
            return self.end if self.start <= now < self.end else None
        from zoneinfo import ZoneInfo

        from croniter import croniter

        local = now.astimezone(ZoneInfo(self.timezone))
        started = local if croniter.match(self.cron, local) else croniter(self.cron, local).get_prev(datetime)
        until = started + timedelta(seconds=self.duration)
        return until if local < until else None

    def describe(self) -> str:
        if self.start is not None:
            return f"{self.reason} ({self.start.isoformat()} to {self.end.isoformat()})"
        seconds = int(self.duration)
        length = f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"
        return f"{self.reason} (from '{self.cron}' {self.timezone}, for {length})"


def active_freeze(windows: list[FreezeWindow], now: datetime) -> tuple[FreezeWindow, datetime] | None:
    """The window ``now`` falls in (the one that ends last), if any."""
    found = [(w, until) for w in windows if (until := w.active_until(now)) is not None]
    return max(found, key=lambda pair: pair[1]) if found else None


class Environment(_Strict):
    name: str
    type: TargetType | None = Field(default=None, description="lambda for lambda-zip; docker-host (default) or ecs for docker-image")
    target: str | None = Field(default=None, description="name of the target block (default: the environment's name, then 'default')")
    function_name: str | None = Field(default=None, description="default {app}-{env}")
    alias: str = "live"
    environment: EnvVars = Field(default_factory=dict, description="extra function environment variables for this environment")
    strategy: Annotated[Strategy | None, BeforeValidator(_strategy_shorthand)] = Field(
        None, description="all-at-once (default), canary: {steps, bake} or linear: {step, interval}")
    analysis: Analysis = Field(default_factory=Analysis)
    traffic: Traffic | None = Field(default=None, description="synthetic traffic during each bake")
    alarms: list[str] = Field(default_factory=list, description="CloudWatch alarms that must not newly go to ALARM during the release")
    approval: Literal["required", "none"] = Field("none", description="required: pause before this environment is touched")
    approval_timeout: Duration = Field(3600.0, description="no decision in time = rejected")
    freeze: list[FreezeWindow] = Field(default_factory=list, description="times this environment takes no release")
    freeze_block: str | None = Field(default=None, description="a slipway-freeze-windows block whose windows apply too (shared by many apps)")
    hooks: Hooks = Field(default_factory=Hooks, description="lifecycle hooks: before_traffic, after_traffic, during_bake")

    @property
    def progressive(self) -> Strategy | None:
        return self.strategy

    @model_validator(mode="after")
    def metrics_need_a_bake(self) -> "Environment":
        if self.analysis.metrics and self.strategy is None:
            raise ValueError(f"analysis.metrics judge each canary or linear bake, and {self.name} deploys all-at-once; "
                             "add strategy: {canary: {steps, bake}} or remove the metrics")
        if self.hooks.during_bake and self.strategy is None:
            raise ValueError(f"hooks.during_bake runs at each canary or linear bake, and {self.name} deploys all-at-once; "
                             "add a strategy or use after_traffic")
        return self

    @field_validator("alarms")
    @classmethod
    def alarm_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or len(name) > 255 or not name.isprintable():
                raise ValueError(f"{name!r} is not a CloudWatch alarm name (1-255 printable characters)")
        if len(set(value)) != len(value):
            raise ValueError("alarm names must be unique")
        return value

    @field_validator("name")
    @classmethod
    def name_is_a_slug(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError(f"{value!r} must be lowercase letters, digits and dashes (at most 40)")
        return value

    @field_validator("function_name")
    @classmethod
    def function_name_is_a_plain_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
            raise ValueError(f"{value!r} is not a Lambda function name; use letters, digits, - and _ (at most 64), not an ARN or name:qualifier")
        return value

    @field_validator("target")
    @classmethod
    def target_is_a_block_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[a-z0-9-]{1,100}", value):
            raise ValueError(f"{value!r} is not a block name; Prefect block names are lowercase letters, digits and dashes")
        return value

    @field_validator("alias")
    @classmethod
    def alias_is_valid(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,127}", value) or value.isdigit():
            raise ValueError(f"{value!r} is not a valid Lambda alias name; use letters, digits, - and _")
        return value


class Spec(_Strict):
    app: str
    artifact: Artifact
    test: TestConfig | None = None
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    environments: list[Environment] = Field(min_length=1)

    @field_validator("app")
    @classmethod
    def app_is_a_slug(cls, value: str) -> str:
        if not NAME_RE.fullmatch(value):
            raise ValueError(f"{value!r} must be lowercase letters, digits and dashes, 1-40 characters, e.g. hello-api")
        return value

    @model_validator(mode="after")
    def targets_and_checks_fit_the_artifact(self) -> "Spec":
        lambda_zip = self.artifact.type == "lambda-zip"
        allowed = ("lambda",) if lambda_zip else ("docker-host", "ecs")
        for i, env in enumerate(self.environments):
            if env.type is not None and env.type not in allowed:
                raise ValueError(
                    f"environments[{i}].type {env.type!r} cannot run a {self.artifact.type} artifact; use {' or '.join(allowed)}"
                )
            if not lambda_zip and (env.function_name or env.alias != "live"):
                raise ValueError(f"environments[{i}]: function_name and alias are Lambda settings; remove them for a docker-image artifact")
            if env.progressive is not None and self.target_type(env) == "ecs":
                raise ValueError(
                    f"environments[{i}].strategy: {env.progressive.name} is not supported on ecs (it needs a load balancer with "
                    "two target groups); use all-at-once for ecs environments"
                )
            if env.traffic is not None:
                if lambda_zip and (env.traffic.requests or not env.traffic.events):
                    raise ValueError(f"environments[{i}].traffic: a Lambda environment takes events (invoke payloads), not requests")
                if not lambda_zip and (env.traffic.events or not env.traffic.requests):
                    raise ValueError(f"environments[{i}].traffic: a docker-image environment takes requests (HTTP), not events")
        for check in self.verify.smoke:
            if lambda_zip and check.request is not None:
                raise ValueError(f"verify.smoke {check.name!r}: request is for docker-image artifacts; a Lambda check takes event")
            if not lambda_zip and check.event is not None:
                raise ValueError(f"verify.smoke {check.name!r}: event is for lambda-zip artifacts; an HTTP check takes request")
            if not lambda_zip and set(check.expect) - {"status", "body_contains"}:
                extra = ", ".join(sorted(set(check.expect) - {"status", "body_contains"}))
                raise ValueError(f"verify.smoke {check.name!r}: HTTP expect takes status and body_contains, not {extra}")
        return self

    def target_type(self, env: "Environment") -> str:
        return env.type or ("lambda" if self.artifact.type == "lambda-zip" else "docker-host")

    @model_validator(mode="after")
    def lambda_environment_fits(self) -> "Spec":
        """Lambda refuses a function whose environment variables total over 4 KB (names and values): found here, before
        anything is built, rather than by the deploy of the first environment."""
        if self.artifact.type != "lambda-zip":
            return self
        for i, env in enumerate(self.environments):
            merged = {**self.artifact.environment, **env.environment}
            size = sum(len(k.encode()) + env_size(v) for k, v in merged.items())
            if size > LAMBDA_ENV_LIMIT:
                largest = sorted(merged, key=lambda k: -env_size(merged[k]))[:3]
                raise ValueError(
                    f"environments[{i}] ({env.name}): environment variables total {size} bytes, over Lambda's 4 KB limit "
                    f"(largest: {', '.join(largest)}); keep large values in SSM Parameter Store or Secrets Manager and read "
                    "them at run time"
                )
        return self

    @model_validator(mode="after")
    def environment_names_are_unique(self) -> "Spec":
        names = [e.name for e in self.environments]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"environment names must be unique; {', '.join(dupes)} appears twice")
        return self

    # ---- derived values -------------------------------------------------------------------------
    def import_environment(self) -> dict[str, str]:
        """The variables a Lambda handler can count on at import in every environment it is built once for: the
        artifact's, plus those each environment sets (the first environment's value where they differ). A secret
        reference stands as a placeholder: its value is never read to check an import."""
        merged: dict[str, str] = {}
        for values in [self.artifact.environment, *(e.environment for e in self.environments)]:
            for key, value in values.items():
                merged.setdefault(key, "<secret: not read for the import check>" if isinstance(value, SecretRef) else str(value))
        return merged

    def environment(self, name: str) -> Environment:
        for env in self.environments:
            if env.name == name:
                return env
        raise SpecError(
            f"unknown environment {name!r}",
            target=f"app {self.app}",
            hint=f"choose one of {', '.join(e.name for e in self.environments)}",
            ref="unknown-environment",
        )

    def function_name(self, env: Environment) -> str:
        return env.function_name or f"{self.app}-{env.name}"

    def digest(self) -> str:
        """sha256 of the canonical JSON form: identifies this exact spec in provenance and the ledger."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def build_key(self, commit: str, builder_version: str) -> str:
        """What determines the artifact (and whether tests must run again): commit + build/test config."""
        material = json.dumps(
            {
                "commit": commit,
                "artifact": self.artifact.build_inputs(),
                "test": self.test.model_dump(mode="json") if self.test else None,
                "builder": builder_version,
            },
            sort_keys=True,
        )
        return hashlib.sha256(material.encode()).hexdigest()
