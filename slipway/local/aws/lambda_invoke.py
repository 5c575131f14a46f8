"""Lambda Invoke for the local stack: a WSGI layer in front of moto that runs the *invoked version's* code.

moto stores functions, versions and aliases faithfully but cannot run them the way AWS does (measured on moto
5.2.5: the qualifier is ignored, ``name:1`` gives HTTP 500, alias weights are never applied, ``ExecutedVersion`` is
never returned). This module answers ``POST /2015-03-31/functions/{name}/invocations``
itself and lets every other request through to moto untouched. It only *reads* moto's backends (functions,
aliases) and writes metrics through the CloudWatch backend's public ``put_metric_data``; nothing in moto is
patched.

What this fake does differently from AWS, on purpose or because it cannot do better:
- One fresh ``python -I -S`` process per invoke: no warm containers, no reuse of module state between invokes,
  no cold-start/warm-start distinction, no concurrency limits or throttling.
- The handler runs on *this* machine's Python, whatever ``Runtime`` says, with the standard library only:
  real Lambda also ships boto3 in its Python runtimes; here ``import boto3`` fails unless the zip bundles it.
- ``MemorySize`` is reported (context, env, log) but not enforced; ``/var/task`` is a writable cache directory,
  not read-only; ``/tmp`` is the host's; no role credentials are handed to the handler (no AWS_* keys at all).
- Layers, container images, extensions, X-Ray and CloudWatch Logs delivery are not supported. ``Event``
  invokes run synchronously before the 202 is returned, with no retries or destinations.
- Metrics go to moto's CloudWatch backend under one dimension set; see ``_record_metrics`` for why.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs, unquote

from moto.awslambda.exceptions import UnknownAliasException, UnknownFunctionException
from moto.awslambda.models import lambda_backends
from moto.cloudwatch.models import cloudwatch_backends
from moto.core import DEFAULT_ACCOUNT_ID
from moto.iam.models import get_account_id_from

log = logging.getLogger(__name__)

_INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<ref>[^/]+)/invocations/?$")
_CREDENTIAL = re.compile(r"Credential=(?P<key>[^/,\s]+)/\d{8}/(?P<region>[^/]+)/")
_LOG_TAIL_BYTES = 4096
_MAX_SYNC_PAYLOAD = 6 * 1024 * 1024  # AWS: 6 MB request and response for synchronous invokes
# Environment variables the Lambda Python runtime sets (values as on AWS where they make sense here).
_STANDARD_ENV = {"TZ": ":UTC", "LANG": "en_US.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin"}

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]

# Runs as `python -I -S -c BOOTSTRAP SCRATCH_DIR CONTEXT_JSON` in the task root: stdlib only, no site-packages,
# PYTHON* variables ignored. The event is read from and the result written to files in SCRATCH_DIR, so whatever
# the handler prints (stdout and stderr go to one log file) is log, never payload. Error shapes and messages
# follow the AWS Python runtime (awslambdaric).
BOOTSTRAP = r"""
import importlib, json, os, sys, time, traceback
scratch, info = sys.argv[1], json.loads(sys.argv[2])
deadline = time.monotonic() + info.pop("timeout")
sys.path.insert(0, os.environ["LAMBDA_TASK_ROOT"])
for stream in (sys.stdout, sys.stderr):
    stream.reconfigure(encoding="utf-8", errors="backslashreplace", line_buffering=True)

class LambdaContext:
    def __init__(self):
        self.__dict__.update(info)
        self.log_stream_name = "local/[" + info["function_version"] + "]" + info["aws_request_id"]
        self.identity = self.client_context = None
    def get_remaining_time_in_millis(self):
        return max(0, int((deadline - time.monotonic()) * 1000))

def finish(error, body):
    with open(os.path.join(scratch, "result.json"), "w", encoding="utf-8") as out:
        json.dump({"error": error, "payload": body}, out)
    sys.exit(0)

def fail(error_type, message, trace=()):
    print("[ERROR] %s: %s" % (error_type, message), file=sys.stderr)
    if trace:
        print("Traceback (most recent call last):\n" + "".join(trace), end="", file=sys.stderr)
    finish(True, json.dumps({"errorMessage": message, "errorType": error_type,
                             "requestId": info["aws_request_id"], "stackTrace": list(trace)}))

def user_error(exc):
    frames = traceback.extract_tb(exc.__traceback__)
    while frames and not frames[0].filename.startswith(os.environ["LAMBDA_TASK_ROOT"]):
        frames.pop(0)  # the bootstrap's and importlib's frames: AWS shows the trace from the user's code on
    fail(type(exc).__name__, str(exc), traceback.format_list(frames))

def load_handler(handler):
    try:
        modname, fname = handler.rsplit(".", 1)
    except ValueError as exc:
        fail("Runtime.MalformedHandlerName", "Bad handler '%s': %s" % (handler, exc))
    try:
        module = importlib.import_module(modname.replace("/", "."))
    except ImportError as exc:
        fail("Runtime.ImportModuleError", "Unable to import module '%s': %s" % (modname, exc))
    except SyntaxError as exc:
        fail("Runtime.UserCodeSyntaxError", "Syntax error in module '%s': %s" % (modname, exc))
    except Exception as exc:
        user_error(exc)
    if not callable(getattr(module, fname, None)):
        fail("Runtime.HandlerNotFound", "Handler '%s' missing on module '%s'" % (fname, modname))
    return getattr(module, fname)

handler = load_handler(os.environ["_HANDLER"])
with open(os.path.join(scratch, "event.json"), "rb") as source:
    event = json.load(source)
try:
    result = handler(event, LambdaContext())
except Exception as exc:
    user_error(exc)
try:
    body = json.dumps(result)
except (TypeError, ValueError) as exc:
    fail("Runtime.MarshalError", "Unable to marshal response: %s" % exc)
finish(False, body)
"""


class InvokeRequestError(Exception):
    """An invoke that AWS would refuse before running anything; rendered as a modelled Lambda error."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_type, self.message = status, error_type, message


@dataclass(frozen=True)
class InvokeTarget:
    """One resolved invocation: the exact version that runs, with that version's own config and code."""

    account_id: str
    region: str
    function_name: str
    qualifier: str | None  # as requested: None, "$LATEST", "3" or an alias name
    executed_version: str
    invoked_arn: str
    handler: str
    runtime: str
    timeout: int
    memory_size: int
    environment: dict[str, str]
    code_bytes: bytes
    log_group: str

    @property
    def resource(self) -> str:
        return f"{self.function_name}:{self.qualifier}" if self.qualifier else self.function_name


@dataclass(frozen=True)
class InvokeOutcome:
    payload: bytes
    function_error: str | None  # "Unhandled" or None
    log: str  # the end of the handler's output, enough for LogType=Tail
    duration_ms: float


def _not_found(arn: str) -> InvokeRequestError:
    return InvokeRequestError(404, "ResourceNotFoundException", f"Function not found: {arn}")


def parse_function_ref(ref: str) -> tuple[str, str | None, str | None, str | None]:
    """``name``, ``name:q``, ``ACCOUNT:function:name[:q]`` or a full ARN → (name, qualifier, account, region)."""
    parts = ref.split(":")
    if "function" in parts[:-1]:
        i = parts.index("function")
        qualifier = parts[i + 2] if len(parts) > i + 2 else None
        account = parts[i - 1] if i >= 1 else None
        region = parts[i - 2] if i >= 4 else None
        return parts[i + 1], qualifier, account, region
    if len(parts) == 2:
        return parts[0], parts[1], None, None
    return ref, None, None, None


def request_account_and_region(environ: dict) -> tuple[str, str]:
    """The same precedence moto uses for the caller's account; the region is the SigV4 credential scope's."""
    match = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    region = match.group("region") if match else "us-east-1"
    if "MOTO_ACCOUNT_ID" in os.environ:
        return os.environ["MOTO_ACCOUNT_ID"], region
    if environ.get("HTTP_X_MOTO_ACCOUNT_ID"):
        return environ["HTTP_X_MOTO_ACCOUNT_ID"], region
    return (get_account_id_from(match.group("key")) if match else DEFAULT_ACCOUNT_ID), region


def resolve_target(ref: str, query_qualifier: str | None, environ: dict, pick: Callable) -> InvokeTarget:
    """Resolve name/ARN + qualifier through moto's lambda backend; ``pick(alias)`` chooses a weighted version."""
    name, ref_qualifier, account, region = parse_function_ref(ref)
    if ref_qualifier and query_qualifier and ref_qualifier != query_qualifier:
        raise InvokeRequestError(
            400,
            "InvalidParameterValueException",
            "The derived qualifier from the function name does not match the specified qualifier.",
        )
    qualifier = ref_qualifier or query_qualifier
    req_account, req_region = request_account_and_region(environ)
    account, region = account or req_account, region or req_region
    backend = lambda_backends[account][region]
    base_arn = f"arn:aws:lambda:{region}:{account}:function:{name}"
    invoked_arn = f"{base_arn}:{qualifier}" if qualifier else base_arn
    try:
        if qualifier is None or qualifier == "$LATEST" or qualifier.isdigit():
            version = qualifier or "$LATEST"
        else:
            version = pick(backend.get_alias(qualifier, name))
        fn = backend.get_function(name, version)
    except (UnknownFunctionException, UnknownAliasException) as exc:
        raise _not_found(invoked_arn) from exc
    if str(fn.version) != version:  # moto falls back to alias lookup for a digit that is no version
        raise _not_found(invoked_arn)
    return InvokeTarget(
        account_id=account,
        region=region,
        function_name=name,
        qualifier=qualifier,
        executed_version=version,
        invoked_arn=invoked_arn,
        handler=fn.handler or "",
        runtime=fn.run_time or "",
        timeout=int(fn.timeout or 3),
        memory_size=int(fn.memory_size or 128),
        environment={str(k): str(v) for k, v in (fn.environment_vars or {}).items()},
        # A published version is a copy of $LATEST taken at publish time; update_function_code rebinds
        # $LATEST's code_bytes, so each version keeps its own zip (moto's shared `code` dict does not).
        code_bytes=fn.code_bytes,
        log_group=fn.logs_group_name,
    )


class CodeCache:
    """Extracted deployment packages, one directory per sha256 of the zip, created atomically."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def task_root(self, code: bytes) -> Path:
        final = self._root / hashlib.sha256(code).hexdigest()
        if final.is_dir():
            return final
        self._root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name[:16]}-", dir=self._root))
        try:
            with zipfile.ZipFile(io.BytesIO(code)) as archive:
                archive.extractall(staging)  # zipfile strips absolute paths and ".." components
            os.rename(staging, final)
        except OSError:
            if not final.is_dir():  # a concurrent invoke won the rename: use its copy
                raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final


def _function_env(target: InvokeTarget, task_root: Path) -> dict[str, str]:
    """Only the function's variables plus Lambda's own: the host's environment never reaches the handler."""
    env = dict(target.environment)
    env.update(_STANDARD_ENV)
    env.update(
        {
            "AWS_LAMBDA_FUNCTION_NAME": target.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": target.executed_version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(target.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": target.log_group,
            "AWS_REGION": target.region,
            "AWS_DEFAULT_REGION": target.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{target.runtime}",
            "LAMBDA_TASK_ROOT": str(task_root),
            "_HANDLER": target.handler,
        }
    )
    return env


def _error_payload(error_type: str, message: str) -> bytes:
    return json.dumps({"errorMessage": message, "errorType": error_type, "stackTrace": []}).encode()


def run_handler(target: InvokeTarget, event: bytes, task_root: Path, request_id: str) -> InvokeOutcome:
    """Run the handler in an isolated interpreter, enforcing the function's Timeout on its process group."""
    context = {
        "function_name": target.function_name,
        "function_version": target.executed_version,
        "invoked_function_arn": target.invoked_arn,
        "memory_limit_in_mb": str(target.memory_size),  # a string in the AWS runtime too
        "aws_request_id": request_id,
        "log_group_name": target.log_group,
        "timeout": target.timeout,
    }
    with tempfile.TemporaryDirectory(prefix="slipway-invoke-") as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "event.json").write_bytes(event)
        argv = [sys.executable, "-I", "-S", "-c", BOOTSTRAP, str(scratch), json.dumps(context)]
        started = time.monotonic()
        # Output goes to a file, not a pipe: a child the handler leaves running cannot hold the invoke open.
        with open(scratch / "log.txt", "wb") as log_file:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=task_root,
                env=_function_env(target, task_root),
                start_new_session=True,  # own process group, so the kill below reaches the handler's children
                close_fds=True,
            )
            try:
                proc.wait(timeout=target.timeout)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            duration_ms = (time.monotonic() - started) * 1000
            # AWS freezes the sandbox after a response and kills it on timeout; we end the whole group.
            _kill_group(proc.pid)
            proc.wait()
        output = _tail(scratch / "log.txt", _LOG_TAIL_BYTES)
        result_path = scratch / "result.json"
        result = json.loads(result_path.read_bytes()) if result_path.is_file() and not timed_out else None
    log_text = output.decode("utf-8", "replace")
    if timed_out:
        message = f"{request_id} Task timed out after {target.timeout:.2f} seconds"
        log_text += f"{message}\n"
        payload, error = json.dumps({"errorMessage": message}).encode(), "Unhandled"
        duration_ms = target.timeout * 1000.0
    elif result is None:
        message = f"RequestId: {request_id} Error: Runtime exited with error: exit status {proc.returncode}"
        payload, error = _error_payload("Runtime.ExitError", message), "Unhandled"
    else:
        payload = result["payload"].encode()
        error = "Unhandled" if result["error"] else None
    return InvokeOutcome(payload, error, log_text, duration_ms)


def _tail(path: Path, size: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - size))
        return handle.read()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _framed_log(target: InvokeTarget, outcome: InvokeOutcome, request_id: str) -> str:
    """The log lines AWS writes around a handler's output (LogType=Tail shows their last 4 KB)."""
    return (
        f"START RequestId: {request_id} Version: {target.executed_version}\n{outcome.log}"
        f"END RequestId: {request_id}\n"
        f"REPORT RequestId: {request_id}\tDuration: {outcome.duration_ms:.2f} ms\t"
        f"Billed Duration: {math.ceil(outcome.duration_ms)} ms\tMemory Size: {target.memory_size} MB\n"
    )


def _record_metrics(target: InvokeTarget, outcome: InvokeOutcome) -> None:
    """Invocations, Errors and Duration in AWS/Lambda, like AWS, through moto's CloudWatch backend.

    AWS publishes each datapoint under [FunctionName], [FunctionName, Resource] and
    [FunctionName, Resource, ExecutedVersion], and a query must name a dimension set exactly. moto matches any
    *subset* of a datum's dimensions instead, so writing all three sets would triple every Sum queried by
    FunctionName alone. Writing only the most specific set gives, under moto's subset matching, the same
    answers AWS gives for each of the three queries. The difference shows in ``list_metrics`` (one set, not
    three) and in queries on dimension sets AWS does not publish (they return data here, nothing on AWS).
    """
    dimensions = [
        {"Name": "FunctionName", "Value": target.function_name},
        {"Name": "Resource", "Value": target.resource},
        {"Name": "ExecutedVersion", "Value": target.executed_version},
    ]
    values = [
        ("Invocations", 1.0, "Count"),
        ("Errors", float(bool(outcome.function_error)), "Count"),
        ("Duration", outcome.duration_ms, "Milliseconds"),
    ]
    data = [{"MetricName": n, "Value": v, "Unit": u, "Dimensions": dimensions} for n, v, u in values]
    cloudwatch_backends[target.account_id][target.region].put_metric_data("AWS/Lambda", data)


class LambdaInvokeMiddleware:
    """WSGI middleware: Lambda Invoke is answered here, everything else goes to ``app`` (moto) unchanged."""

    def __init__(self, app: WsgiApp, work_dir: Path, seed: int | None = None) -> None:
        self._app = app
        self._code = CodeCache(Path(work_dir) / "code")
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        match = _INVOKE_PATH.match(environ.get("PATH_INFO", ""))
        if environ.get("REQUEST_METHOD") != "POST" or not match:
            return self._app(environ, start_response)
        request_id = str(uuid.uuid4())
        try:
            status, headers, body = self._invoke(environ, unquote(match.group("ref")), request_id)
        except InvokeRequestError as exc:
            status, body = exc.status, json.dumps({"Type": "User", "message": exc.message}).encode()
            headers = {"x-amzn-ErrorType": exc.error_type, "Content-Type": "application/json"}
        except Exception as exc:  # a bug here must reach the client as a modelled error, not a hung socket
            log.exception("local Lambda invoke failed")
            message = f"{type(exc).__name__}: {exc}"
            status, body = 500, json.dumps({"Type": "Service", "message": message}).encode()
            headers = {"x-amzn-ErrorType": "ServiceException", "Content-Type": "application/json"}
        headers.update({"x-amzn-RequestId": request_id, "Content-Length": str(len(body))})
        start_response(f"{status} {HTTPStatus(status).phrase}", list(headers.items()))
        return [body]

    def _pick_version(self, alias: Any) -> str:
        """Weighted choice between the alias's version and its AdditionalVersionWeights, as AWS routes."""
        weights = ((alias.routing_config or {}).get("AdditionalVersionWeights")) or {}
        with self._rng_lock:
            draw = self._rng.random()
        cumulative = 0.0
        for version, weight in sorted(weights.items()):
            cumulative += float(weight)
            if draw < cumulative:
                return str(version)
        return str(alias.function_version)

    def _invoke(self, environ: dict, ref: str, request_id: str) -> tuple[int, dict, bytes]:
        query = parse_qs(environ.get("QUERY_STRING", ""))
        target = resolve_target(ref, (query.get("Qualifier") or [None])[0], environ, self._pick_version)
        invocation_type = environ.get("HTTP_X_AMZ_INVOCATION_TYPE", "RequestResponse")
        headers = {"X-Amz-Executed-Version": target.executed_version, "Content-Type": "application/json"}
        if invocation_type == "DryRun":
            return 204, headers, b""
        event = _read_event(environ)
        if not target.handler or target.code_bytes[:2] != b"PK":
            outcome = InvokeOutcome(
                _error_payload("Runtime.InvalidEntrypoint", "This local stack runs zip packages with a Handler only"),
                "Unhandled", "", 0.0,
            )
        else:
            outcome = run_handler(target, event, self._task_root(target), request_id)
        _record_metrics(target, outcome)
        if invocation_type == "Event":
            return 202, headers, b""
        if outcome.function_error:
            headers["X-Amz-Function-Error"] = outcome.function_error
        if environ.get("HTTP_X_AMZ_LOG_TYPE") == "Tail":
            tail = _framed_log(target, outcome, request_id).encode()[-_LOG_TAIL_BYTES:]
            headers["X-Amz-Log-Result"] = base64.b64encode(tail).decode()
        return 200, headers, outcome.payload

    def _task_root(self, target: InvokeTarget) -> Path:
        try:
            return self._code.task_root(target.code_bytes)
        except zipfile.BadZipFile as exc:
            raise InvokeRequestError(502, "InvalidZipFileException", f"Could not unzip the package: {exc}") from exc


def _read_event(environ: dict) -> bytes:
    """The request body; AWS rejects a payload that is too large or not JSON, and passes {} for an empty one."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    body = stream.read(length) if length else (stream.read() if environ.get("wsgi.input_terminated") else b"")
    if len(body) > _MAX_SYNC_PAYLOAD:
        message = f"Request must be smaller than {_MAX_SYNC_PAYLOAD} bytes for the InvokeFunction operation"
        raise InvokeRequestError(413, "RequestTooLargeException", message)
    if not body.strip():
        return b"{}"
    try:
        json.loads(body)
    except ValueError as exc:
        raise InvokeRequestError(
            400, "InvalidRequestContentException", f"Could not parse request body into json: {exc}"
        ) from exc
    return body
