"""A fault-injecting HTTP proxy in front of the local AWS endpoint.

Blocks pointed at the proxy make every AWS call of a release go through it; a test arms a **rule** (which request:
an AWS operation on a path; which fault; how many times, after how many matching requests pass) and the proxy answers
that request with the fault instead of forwarding it. Faults are what AWS or the network really return:

- ``throttle``: Lambda ``429 TooManyRequestsException``; S3 ``503 SlowDown``
- ``5xx``: Lambda ``500 ServiceException``; S3 ``500 InternalError``
- ``denied``: Lambda ``403 AccessDeniedException``; S3 ``403 AccessDenied``
- ``reset``: the connection is closed without an answer (a network failure)
- ``timeout``: the request **is** forwarded (its side effect happens), then the answer is held past the client's read
  timeout and the connection dropped: the client cannot know whether the call took effect
- ``kill``: the flow process (``kill_pid``) is SIGKILLed when the request arrives, and the request is dropped
- ``call``: the rule's ``action`` runs when the request arrives (another process killed at that moment), then the
  request is forwarded

Nothing here knows Slipway: it is an HTTP proxy with rules. Requests that match no rule are forwarded unchanged.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import threading
from dataclasses import dataclass, field
from typing import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

LAMBDA_OPS = {  # (method, path regex) → operation
    "PublishVersion": ("POST", r"^/2015-03-31/functions/(?P<fn>[^/]+)/versions$"),
    "UpdateAlias": ("PUT", r"^/2015-03-31/functions/(?P<fn>[^/]+)/aliases/[^/]+$"),
    "Invoke": ("POST", r"^/2015-03-31/functions/(?P<fn>[^/]+)/invocations$"),
    "UpdateFunctionCode": ("PUT", r"^/2015-03-31/functions/(?P<fn>[^/]+)/code$"),
    "CreateFunction": ("POST", r"^/2015-03-31/functions/?$"),
}


@dataclass
class Rule:
    operation: str  # a LAMBDA_OPS name, "S3Put" (a PUT whose path contains ``path_contains``), "GET" (plain HTTP) or any other AWS
    #                 operation name (CloudWatch's GetMetricStatistics…: matched by protocol, see ``_operation``)
    fault: str  # throttle | 5xx | denied | reset | timeout | kill | call
    times: int = 1  # how many matching requests get the fault (-1: all)
    skip: int = 0  # let this many matching requests through first
    path_contains: str = ""
    action: Callable[[], None] | None = None  # fault "call": run this when the request arrives, then forward it
    hits: int = 0
    injected: int = 0

    def matches(self, method: str, path: str, headers=None, body: bytes = b"") -> bool:
        if self.path_contains and self.path_contains not in path:
            return False
        if self.operation == "S3Put":
            return method == "PUT"
        if self.operation == "GET":  # plain HTTP (a package index)
            return method == "GET"
        want = LAMBDA_OPS.get(self.operation)
        if want:
            return method == want[0] and bool(re.match(want[1], path.split("?", 1)[0]))
        return _operation(path, headers or {}, body) == self.operation

    @property
    def protocol(self) -> str:
        if self.operation == "GET":
            return "http"
        return "s3" if self.operation == "S3Put" else "rest-json" if self.operation in LAMBDA_OPS else "aws-rpc"


def _operation(path: str, headers, body: bytes) -> str | None:
    """The operation of a smithy-rpc-v2-cbor (``/service/S/operation/Op``), JSON (``X-Amz-Target``) or query
    (``Action=Op``) request."""
    if m := re.search(r"/operation/([A-Za-z0-9]+)$", path.split("?", 1)[0]):
        return m.group(1)
    if target := headers.get("X-Amz-Target"):
        return target.rsplit(".", 1)[-1]
    if m := re.search(rb"(?:^|&)Action=([A-Za-z0-9]+)", body):
        return m.group(1).decode()
    return None


def _cbor_map(values: dict[str, str]) -> bytes:
    """A CBOR map of short text strings (all an rpc-v2-cbor error body needs; RFC 8949 major types 5 and 3)."""
    def text(v: str) -> bytes:
        raw = v.encode()
        return (bytes([0x60 + len(raw)]) if len(raw) < 24 else bytes([0x78, len(raw)])) + raw
    return bytes([0xA0 + len(values)]) + b"".join(text(k) + text(v) for k, v in values.items())


@dataclass
class FaultProxy:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    kill_pid: int | None = None
    hold_seconds: float = 5.0  # ``timeout``: how long an answer is held (longer than the clients' read timeout)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)

    def start(self) -> str:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = _read_chunked(self.rfile)
                fault = proxy._fault_for(self.command, self.path, self.headers, body)
                if fault is not None and fault.fault == "call":
                    fault.action()  # e.g. kill the Prefect server just as this call lands
                    fault = None
                if fault is not None and fault.fault != "timeout":
                    return self._inject(fault, self.headers.get("Content-Type", ""))
                up = urlsplit(proxy.upstream)
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "content-length", "expect")}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if fault is not None:  # timeout: done upstream, but the client never hears of it
                    proxy.stopping.wait(proxy.hold_seconds)
                    self.close_connection = True
                    return
                self.send_response(resp.status, resp.reason)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _inject(self, rule: Rule, content_type: str = "") -> None:
                if rule.fault == "kill":
                    if proxy.kill_pid:
                        os.kill(proxy.kill_pid, signal.SIGKILL)
                    self.close_connection = True
                    return
                if rule.fault == "reset":
                    self.close_connection = True
                    return
                if rule.protocol == "http":
                    status = {"throttle": 429, "5xx": 503, "denied": 403}[rule.fault]
                    data = f"injected {status}\n".encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                if rule.protocol == "aws-rpc":
                    status, code, message = {"throttle": (400, "Throttling", "Rate exceeded"),
                                             "5xx": (500, "InternalServiceError", "injected service error"),
                                             "denied": (403, "AccessDenied", "injected: not authorized to perform this action")}[rule.fault]
                    self.send_response(status)
                    if "cbor" in content_type:  # answered in the protocol the client spoke
                        data = _cbor_map({"__type": code, "message": message})
                        self.send_header("Content-Type", "application/cbor")
                        self.send_header("smithy-protocol", "rpc-v2-cbor")
                    elif "json" in content_type:
                        data = ('{"__type": "%s", "message": "%s"}' % (code, message)).encode()
                        self.send_header("Content-Type", "application/x-amz-json-1.0")
                    else:
                        data = (f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
                                f"</Error><RequestId>fault</RequestId></ErrorResponse>").encode()
                        self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                s3 = rule.operation == "S3Put"
                status, code, message = {
                    ("throttle", False): (429, "TooManyRequestsException", "Rate exceeded"),
                    ("5xx", False): (500, "ServiceException", "injected service error"),
                    ("denied", False): (403, "AccessDeniedException", "injected: not authorized to perform this action"),
                    ("throttle", True): (503, "SlowDown", "Please reduce your request rate."),
                    ("5xx", True): (500, "InternalError", "We encountered an internal error. Please try again."),
                    ("denied", True): (403, "AccessDenied", "Access Denied"),
                }[(rule.fault, s3)]
                if s3:
                    data = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>'
                            f"<RequestId>fault</RequestId></Error>").encode()
                    ctype = "application/xml"
                else:
                    data = ('{"Type": "User", "message": "%s"}' % message).encode()
                    ctype = "application/json"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                if not s3:
                    self.send_header("x-amzn-ErrorType", code)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def arm(self, rule: Rule) -> Rule:
        with self.lock:
            self.rules = [rule]
        return rule

    def clear(self) -> None:
        with self.lock:
            self.rules = []

    def _fault_for(self, method: str, path: str, headers=None, body: bytes = b"") -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if not rule.matches(method, path, headers, body):
                    continue
                rule.hits += 1
                if rule.hits <= rule.skip:
                    continue
                if rule.times == -1 or rule.injected < rule.times:
                    rule.injected += 1
                    return rule
        return None


def _read_chunked(stream) -> bytes:
    out = b""
    while True:
        size = int(stream.readline().strip().split(b";")[0], 16)
        if size == 0:
            stream.readline()
            return out
        out += stream.read(size)
        stream.readline()
