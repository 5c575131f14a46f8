"""A fault-injecting HTTP proxy in front of the local AWS endpoint.

Blocks pointed at the proxy make every AWS call of a release go through it; a test arms a **rule** (which request:
an AWS operation on a path; which fault; how many times, after how many matching requests pass) and the proxy answers
that request with the fault instead of forwarding it. Faults are what AWS or the network really return:

- ``throttle``: Lambda ``429 TooManyRequestsException``; S3 ``503 SlowDown``
- ``5xx``: Lambda ``500 ServiceException``; S3 ``500 InternalError``
- ``denied``: Lambda ``403 AccessDeniedException``; S3 ``403 AccessDenied``
- ``reset``: the connection is closed without an answer (a network failure)
- ``kill``: the flow process (``kill_pid``) is SIGKILLed when the request arrives, and the request is dropped

Nothing here knows Slipway: it is an HTTP proxy with rules. Requests that match no rule are forwarded unchanged.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import threading
from dataclasses import dataclass, field
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
    operation: str  # a LAMBDA_OPS name, or "S3Put" (a PUT whose path contains ``path_contains``)
    fault: str  # throttle | 5xx | denied | reset | kill
    times: int = 1  # how many matching requests get the fault (-1: all)
    skip: int = 0  # let this many matching requests through first
    path_contains: str = ""
    hits: int = 0
    injected: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.path_contains and self.path_contains not in path:
            return False
        if self.operation == "S3Put":
            return method == "PUT"
        want = LAMBDA_OPS.get(self.operation)
        return bool(want and method == want[0] and re.match(want[1], path.split("?", 1)[0]))


@dataclass
class FaultProxy:
    upstream: str
    rules: list[Rule] = field(default_factory=list)
    kill_pid: int | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

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
                fault = proxy._fault_for(self.command, self.path)
                if fault is not None:
                    return self._inject(fault)
                up = urlsplit(proxy.upstream)
                conn = http.client.HTTPConnection(up.hostname, up.port, timeout=120)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "content-length", "expect")}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status, resp.reason)
                for key, value in resp.getheaders():
                    if key.lower() not in ("transfer-encoding", "content-length", "connection"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            def _inject(self, rule: Rule) -> None:
                if rule.fault == "kill":
                    if proxy.kill_pid:
                        os.kill(proxy.kill_pid, signal.SIGKILL)
                    self.close_connection = True
                    return
                if rule.fault == "reset":
                    self.close_connection = True
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
        self.server.shutdown()
        self.server.server_close()

    def arm(self, rule: Rule) -> Rule:
        with self.lock:
            self.rules = [rule]
        return rule

    def clear(self) -> None:
        with self.lock:
            self.rules = []

    def _fault_for(self, method: str, path: str) -> Rule | None:
        with self.lock:
            for rule in self.rules:
                if not rule.matches(method, path):
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
