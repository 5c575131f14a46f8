"""Canary checks on the app's own metrics (``analysis.metrics`` in slipway.yaml): a Prometheus or CloudWatch query
read once per side (stable, canary) over a bake's window, judged against a fixed threshold and/or against stable.

Each check gives a ``MetricVerdict`` that joins the built-in error-rate and latency verdicts in the same
``CanaryVerdict`` (same evidence table, same ledger entry). Unlike those two, a custom metric is one number per
side (an instant PromQL value at the window's end, or the window's CloudWatch datapoints reduced to one), so it is
judged like Flagger's and Argo Rollouts' metric checks: a limit, not a significance test. Write the query so that
it already averages over the window (``rate(...[{{window}}])``, a CloudWatch Average).

Missing data is never a pass: no series, no datapoints, NaN, an unreachable server or a refused query make the
metric INCONCLUSIVE with the reason, and the environment's ``analysis.inconclusive`` policy decides (extend the
bake, pause for a human, or fail).
"""

from __future__ import annotations

import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Protocol

from slipway.verify.canary import MetricVerdict

# ``metric`` below is slipway.yaml's ``analysis.metrics`` entry (slipway.spec.schema.CustomMetric, validated there):
# name, prometheus {query} or cloudwatch {namespace, metric, dimensions, stat | expression, metrics; period, reduce},
# direction, threshold, max_change, min_delta. This layer reads its fields and does not import the spec.
CustomMetric = CloudWatchMetric = CloudWatchQuery = Any

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_]+)\s*\}\}")
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a metrics server is reached directly


class MetricUnavailable(Exception):
    """The metric could not be read (server unreachable, query refused, ambiguous result): one line, no secret."""


class MetricSource(Protocol):
    def value(self, metric: CustomMetric, fill: Callable[[str], str], start: datetime, end: datetime) -> float | None: ...


def fill_placeholders(text: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def window_text(start: datetime, end: datetime) -> str:
    """``{{window}}``: the bake's length as a PromQL duration, at least 1s."""
    return f"{max(1, round((end - start).total_seconds()))}s"


class PrometheusSource:
    """Prometheus's HTTP API (``GET /api/v1/query``), evaluated at the window's end. ``token``: a bearer token (from
    the block's secret), sent only to this server."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 10.0,
                 open_url: Callable[..., Any] | None = None) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s
        self._open = open_url or _OPENER.open

    def value(self, metric: CustomMetric, fill: Callable[[str], str], start: datetime, end: datetime) -> float | None:
        query = fill(metric.prometheus.query)
        params = urllib.parse.urlencode({"query": query, "time": f"{end.timestamp():.3f}"})
        request = urllib.request.Request(f"{self.url}/api/v1/query?{params}", headers={"Accept": "application/json"})
        if self._token:
            request.add_header("Authorization", f"Bearer {self._token}")
        try:
            with self._open(request, timeout=self.timeout_s) as response:
                body = json.loads(response.read(2_000_000) or b"{}")
        except urllib.error.HTTPError as exc:  # 400 bad_data, 422 execution error: the answer says why
            raise MetricUnavailable(f"Prometheus refused the query (HTTP {exc.code}): {_prom_error(exc)}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise MetricUnavailable(f"Prometheus at {self.url} could not be read: {reason}") from None
        if body.get("status") != "success":
            raise MetricUnavailable(f"Prometheus answered {body.get('errorType') or body.get('status')}: {body.get('error', '')}"[:300])
        return _prom_value(body.get("data") or {})


def _prom_error(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read(20_000) or b"{}")
        return str(body.get("error") or body)[:300]
    except ValueError:
        return exc.reason if isinstance(exc.reason, str) else "no detail"


def _prom_value(data: dict) -> float | None:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        return _number(result[1])
    if kind != "vector":
        raise MetricUnavailable(f"the query returned a {kind}, not one value; use an instant query (rate(x[{{{{window}}}}]), not x[5m])")
    if not result:
        return None
    if len(result) > 1:
        labels = ", ".join(json.dumps(r.get("metric", {}), sort_keys=True) for r in result[:3])
        raise MetricUnavailable(f"the query returned {len(result)} series ({labels}…); aggregate it to one, e.g. sum(...) or max(...)")
    return _number(result[0]["value"][1])


def _number(text: Any) -> float | None:
    value = float(text)
    return None if math.isnan(value) else value


class CloudWatchSource:
    """CloudWatch ``GetMetricData`` over the window: one metric, or metric math over named inputs; the datapoints
    reduced to one value (sum for Sum and SampleCount, else the average, unless ``reduce`` says otherwise)."""

    def __init__(self, cw: Any) -> None:
        self.cw = cw

    def value(self, metric: CustomMetric, fill: Callable[[str], str], start: datetime, end: datetime) -> float | None:
        from botocore.exceptions import BotoCoreError, ClientError

        q = metric.cloudwatch
        queries = _cw_queries(q, fill)
        result_id = queries[-1]["Id"]
        values: list[float] = []
        kwargs: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": start, "EndTime": end, "ScanBy": "TimestampAscending"}
        try:
            while True:
                page = self.cw.get_metric_data(**kwargs)
                for series in page.get("MetricDataResults", []):
                    if series.get("Id") == result_id:
                        values += [float(v) for v in series.get("Values", []) if not math.isnan(float(v))]
                if not page.get("NextToken"):
                    break
                kwargs["NextToken"] = page["NextToken"]
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise MetricUnavailable(f"CloudWatch refused GetMetricData ({err.get('Code')}): {err.get('Message', '')}"[:300]) from None
        except BotoCoreError as exc:
            raise MetricUnavailable(f"CloudWatch could not be read: {exc}") from None
        if not values:
            return None
        how = q.reduce or ("sum" if q.expression is None and q.stat in ("Sum", "SampleCount") else "average")
        return {"sum": sum, "maximum": max, "minimum": min, "average": lambda v: sum(v) / len(v)}[how](values)


def _cw_stat(metric_id: str, m: CloudWatchMetric, period: int, fill: Callable[[str], str], returned: bool) -> dict:
    return {"Id": metric_id, "ReturnData": returned, "MetricStat": {
        "Metric": {"Namespace": m.namespace, "MetricName": m.metric,
                   "Dimensions": [{"Name": k, "Value": fill(v)} for k, v in sorted(m.dimensions.items())]},
        "Period": period, "Stat": m.stat}}


def _cw_queries(q: CloudWatchQuery, fill: Callable[[str], str]) -> list[dict]:
    if q.expression is None:
        return [_cw_stat("result", q, q.period, fill, True)]
    inputs = [_cw_stat(key, m, q.period, fill, False) for key, m in q.metrics.items()]
    return inputs + [{"Id": "result", "Expression": fill(q.expression), "Period": q.period, "ReturnData": True}]


@dataclass(frozen=True)
class CustomCheck:
    """One ``analysis.metrics`` entry with the source it is read from."""

    metric: CustomMetric
    source: MetricSource
    app: str
    environment: str

    def judge(self, stable_version: str, canary_version: str, start: datetime, end: datetime) -> MetricVerdict:
        m = self.metric
        base = {"app": self.app, "environment": self.environment, "window": window_text(start, end)}
        threshold = {"source": m.source, "direction": m.direction, "threshold": m.threshold, "max_change": m.max_change,
                     "min_delta": m.min_delta or None}
        threshold = {k: v for k, v in threshold.items() if v is not None}
        read = {}
        for side, version in (("canary", canary_version), ("stable", stable_version)):
            if side == "stable" and m.max_change is None:
                break  # a threshold alone looks at the canary only
            try:
                read[side] = self.source.value(m, lambda text, v=version: fill_placeholders(text, {**base, "version": v}), start, end)
            except MetricUnavailable as exc:
                return _verdict(m, "INCONCLUSIVE", f"{side} (version {version}) not readable: {exc}", read, threshold, None)
        return decide(m, read.get("stable"), read["canary"], stable_version, canary_version, threshold)


def decide(m: CustomMetric, stable: float | None, canary: float | None, stable_version: str, canary_version: str,
           threshold: dict) -> MetricVerdict:
    """The rules: no canary data → INCONCLUSIVE; past ``threshold`` → FAIL; with ``max_change``: no stable data →
    INCONCLUSIVE, worse than stable by more than the tolerated change (and ``min_delta``) → FAIL; else PASS."""
    read = {"stable": stable, "canary": canary}
    higher = m.direction == "higher-is-worse"
    if canary is None:
        return _verdict(m, "INCONCLUSIVE", f"no data for the canary (version {canary_version}) in the window", read, threshold, None)
    notes = []
    if m.threshold is not None:
        past = canary > m.threshold if higher else canary < m.threshold
        seen = f"canary {_num(canary)} {'above' if higher else 'below'} the threshold {_num(m.threshold)}"
        if past:
            return _verdict(m, "FAIL", seen, read, threshold, canary)
        notes.append(f"canary {_num(canary)} within the threshold {_num(m.threshold)}")
    effect = None
    if m.max_change is not None:
        if stable is None:
            return _verdict(m, "INCONCLUSIVE", f"no data for stable (version {stable_version}) to compare with", read, threshold, None)
        limit = stable * (1 + m.max_change) if higher else stable * (1 - m.max_change)
        worse = (canary > limit if higher else canary < limit) and abs(canary - stable) > m.min_delta
        effect = canary / stable if stable else None
        change = f"{(canary - stable) / abs(stable):+.0%}" if stable else f"{canary - stable:+g}"
        seen = (f"canary {_num(canary)} vs stable {_num(stable)} ({change}, tolerated "
                f"{'+' if higher else '-'}{m.max_change:.0%}{f' and ±{_num(m.min_delta)}' if m.min_delta else ''})")
        if worse:
            return _verdict(m, "FAIL", seen, read, threshold, effect)
        notes.append(seen)
    return _verdict(m, "PASS", "; ".join(notes), read, threshold, effect if effect is not None else canary)


def _verdict(m: CustomMetric, verdict: str, reason: str, read: dict, threshold: dict, effect: float | None) -> MetricVerdict:
    return MetricVerdict(metric=m.name, verdict=verdict, reason=reason, stable={"value": read.get("stable")},
                         canary={"value": read.get("canary")}, p_value=None, effect=effect, threshold=threshold)


def _num(x: float) -> str:
    return f"{x:.4g}"


__all__ = ["CloudWatchSource", "CustomCheck", "MetricUnavailable", "PrometheusSource", "decide", "fill_placeholders", "window_text"]
