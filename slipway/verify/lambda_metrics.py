"""Per-version canary samples for a Lambda alias, read from CloudWatch (namespace AWS/Lambda).

When an alias splits traffic between two versions, Lambda publishes Invocations, Errors and Duration under
the dimension set [FunctionName, Resource, ExecutedVersion] (Resource is ``name:alias``). Reading that set once
per version gives the stable and the canary side of the same window, ready for ``slipway.verify.canary.judge``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from slipway.verify.canary import SideSample
from slipway.core.errors import VerificationFailed

NAMESPACE = "AWS/Lambda"
MAX_DATAPOINTS = 1440  # CloudWatch refuses a GetMetricStatistics call that would return more
_SUB_MINUTE_PERIODS = (1, 5, 10, 30)  # otherwise a period must be a multiple of 60 s


def version_sample(
    cw: Any, function: str, resource: str, version: str, start: datetime, end: datetime, period_s: int = 60
) -> SideSample:
    """One side of the canary over ``[start, end)``: Invocations and Errors summed, Duration per period.

    CloudWatch keeps no individual request latencies, only per-period aggregates, so ``latencies_ms`` holds
    one value per period: that period's Average Duration (the SampleCount-weighted mean of its invokes).
    Kayenta does the same: it compares the *time series* of an aggregate metric for baseline and canary,
    not raw requests. Two consequences for the verdict: the Mann-Whitney test sees periods, not requests, and
    ``min_latency_periods`` (not ``min_requests``) applies to them. Lambda publishes at one-minute resolution
    on AWS, so a latency verdict there needs a bake of ``min_latency_periods`` minutes (5 by default);
    shorter bakes report latency as INCONCLUSIVE. (Percentiles via ExtendedStatistics would be the richer input on AWS;
    moto returns nothing for them, so they are not used here.)

    The dimensions are the exact set AWS publishes: a query on a subset returns nothing on AWS.
    """
    _validate(start, end, period_s)
    dimensions = [
        {"Name": "FunctionName", "Value": function},
        {"Name": "Resource", "Value": resource},
        {"Name": "ExecutedVersion", "Value": version},
    ]
    query = dict(Namespace=NAMESPACE, Dimensions=dimensions, StartTime=start, EndTime=end, Period=period_s)
    try:
        invocations = _datapoints(cw, query, "Invocations", ["Sum"])
        errors = _datapoints(cw, query, "Errors", ["Sum"])
        durations = _datapoints(cw, query, "Duration", ["Average", "SampleCount"])
    except (ClientError, BotoCoreError) as exc:
        code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
        raise VerificationFailed(
            "Could not read the canary's metrics from CloudWatch", target=f"{resource} version {version}",
            hint=f"{code}; check the caller may call cloudwatch:GetMetricStatistics", ref="canary-metrics-unavailable",
        ) from exc
    return SideSample(
        requests=round(sum(p["Sum"] for p in invocations)),
        errors=round(sum(p["Sum"] for p in errors)),
        latencies_ms=[float(p["Average"]) for p in durations if p.get("SampleCount", 0) > 0],
        latency_unit="period",
    )


def _datapoints(cw: Any, query: dict, metric: str, statistics: list[str]) -> list[dict]:
    reply = cw.get_metric_statistics(MetricName=metric, Statistics=statistics, **query)
    return sorted(reply["Datapoints"], key=lambda p: p["Timestamp"])


def _validate(start: datetime, end: datetime, period_s: int) -> None:
    if (start.tzinfo is None) != (end.tzinfo is None):
        raise ValueError("start and end must both be timezone-aware or both naive (UTC)")
    if start >= end:
        raise ValueError(f"metrics window is empty: start {start.isoformat()} is not before end {end.isoformat()}")
    if period_s not in _SUB_MINUTE_PERIODS and (period_s <= 0 or period_s % 60):
        raise ValueError(f"period_s must be 1, 5, 10, 30 or a multiple of 60, got {period_s}")
    if (end - start).total_seconds() / period_s > MAX_DATAPOINTS:
        raise ValueError(f"window of {end - start} at {period_s}s periods exceeds {MAX_DATAPOINTS} datapoints; "
                         "use a longer period or a shorter window")
