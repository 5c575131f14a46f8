"""`slipway webhook`: the push-webhook receiver. A verified push (slipway.source.webhook) becomes the Prefect event
``slipway.push``, which the ``release`` deployment's trigger (prefect.yaml) turns into a release of that commit. Nothing
else is reachable: one path, POST only, a size limit before the body is read, 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import contextvars
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from slipway.source.webhook import MAX_BODY, Deliveries, Push, check_delivery

PATH = "/hooks/push"


def emit_push(push: Push) -> None:
    from prefect.events import emit_event

    emit_event(event="slipway.push",
               resource={"prefect.resource.id": f"slipway.repo.{hashlib.sha256(push.repo_url.encode()).hexdigest()[:16]}",
                         "slipway.repo_url": push.repo_url, "slipway.branch": push.branch},
               payload={"commit": push.commit, "delivery": push.delivery, "source": push.source})


def serve(host: str, port: int, secret: bytes, emit: Callable[[Push], None] = emit_push) -> ThreadingHTTPServer:
    """Start the receiver in a thread; ``server.shutdown()`` stops it."""
    deliveries = Deliveries()
    lock = threading.Lock()
    settings = contextvars.copy_context()  # the caller's Prefect settings (API URL): the handler threads emit with them

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # the answers say enough; bodies and signatures are never logged
            pass

        def _answer(self, status: int, reason: str) -> None:
            data = json.dumps({"status": status, "reason": reason}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802
            if self.path.split("?", 1)[0] != PATH:
                return self._answer(404, f"POST {PATH}")
            try:
                length = int(self.headers.get("Content-Length") or -1)
            except ValueError:
                length = -1
            if length < 0:
                self.close_connection = True
                return self._answer(411, "Content-Length required")
            if length > MAX_BODY:
                self.close_connection = True  # the body is not read
                return self._answer(413, f"body over {MAX_BODY} bytes")
            body = self.rfile.read(length)
            with lock:
                verdict = check_delivery(self.headers, body, secret, deliveries)
            if verdict.push is not None:
                from slipway.source.git import validate_repo_url

                try:
                    validate_repo_url(verdict.push.repo_url)
                except Exception as exc:  # noqa: BLE001 - a refused URL is the sender's problem, in one line
                    return self._answer(400, f"refused repository URL: {exc}")
                settings.copy().run(emit, verdict.push)
            self._answer(verdict.status, verdict.reason)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(405, f"POST {PATH}")

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
