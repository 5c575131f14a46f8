"""``JournalMiddleware``: the local AWS endpoint keeps its state across restarts.

moto keeps everything in memory, so a restarted endpoint would forget the artifact store, the ledger, the Lambda
functions and the feature flags while the Prefect server (on disk) still shows the runs that made them. This layer
appends every request that changed state (a 2xx answer to anything but a read) to a journal in the work directory,
and at start replays the journal, in order, before serving. The replayed state is the same: Lambda versions and
S3 ETags come out identical; what moto draws at random (S3 version ids, Secrets Manager ARN suffixes, request ids)
differs, and Slipway refers to none of it. An S3 multipart upload, which Slipway does not use, would not replay (its
upload id is drawn anew).

Reads (GET, HEAD, and operations named Get…, List…, Describe…), Lambda Invoke and CloudWatch metric data are not
kept. Request bodies are stored once per content (``bodies/<sha256>``), so a zip uploaded to S3 and then given to
Lambda is kept once. ``POST /moto-api/reset`` empties the journal as it empties moto. Writes are serialized: the
journal's order is the order in which the changes were made, which is what makes the replay the same.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import parse_qs

log = logging.getLogger("slipway.local.aws")

WsgiApp = Callable[[dict, Callable], Iterable[bytes]]

_READ_METHODS = {"GET", "HEAD", "OPTIONS"}
_READ_OPERATION = re.compile(r"^(Get|List|Describe|Head|Lookup|Search|Scan|BatchGet|Filter|Simulate|Test|Assume|Decode|Poll|Receive)")
_NOT_KEPT = {"PutMetricData"}  # metrics are a window on the recent past: replaying old samples helps no canary
_INVOKE = re.compile(r"^/\d{4}-\d{2}-\d{2}/functions/[^/]+/invocations/?$")
_KEPT_HEADERS = re.compile(r"^(HTTP_|CONTENT_TYPE$)")
_INLINE_BYTES = 4096


class JournalMiddleware:
    """Keeps ``app``'s state changes in ``journal_dir`` and replays them on ``replay()``."""

    def __init__(self, app: WsgiApp, journal_dir: Path) -> None:
        self._app = app
        self._dir = Path(journal_dir)
        self._bodies = self._dir / "bodies"
        self._bodies.mkdir(parents=True, exist_ok=True)
        self._path = self._dir / "journal.jsonl"
        self._lock = threading.Lock()

    # ---- serving -------------------------------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "")
        if method in _READ_METHODS or _INVOKE.match(path):
            return self._app(environ, start_response)
        body = _read_body(environ)
        if path.rstrip("/") == "/moto-api/reset":
            with self._lock:
                result = _run(self._app, environ, start_response)
                self._path.unlink(missing_ok=True)
            return result
        if not _changes_state(environ, body):
            return self._app(environ, start_response)
        status: list[str] = []

        def capture(status_line: str, headers: list, exc_info: Any = None):
            status.append(status_line)
            return start_response(status_line, headers, exc_info) if exc_info else start_response(status_line, headers)

        with self._lock:  # the journal's order is the order of the changes
            result = _run(self._app, environ, capture)
            if status and status[0][:1] == "2":
                self._append(environ, body)
        return result

    def _append(self, environ: dict, body: bytes) -> None:
        record: dict[str, Any] = {
            "method": environ["REQUEST_METHOD"], "path": environ.get("PATH_INFO", ""), "query": environ.get("QUERY_STRING", ""),
            "headers": {k: v for k, v in environ.items() if _KEPT_HEADERS.match(k) and isinstance(v, str)
                        and k not in ("HTTP_TRANSFER_ENCODING", "HTTP_CONTENT_LENGTH")},
        }
        if len(body) <= _INLINE_BYTES:
            record["body"] = body.decode("latin-1")
        else:
            digest = hashlib.sha256(body).hexdigest()
            stored = self._bodies / digest
            if not stored.exists():
                tmp = stored.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_bytes(body)
                os.replace(tmp, stored)
            record["body_sha256"] = digest
        with open(self._path, "a", encoding="utf-8") as out:
            out.write(json.dumps(record, separators=(",", ":")) + "\n")

    # ---- replay --------------------------------------------------------------------------------------------------
    def replay(self) -> tuple[int, int]:
        """Apply the journal to ``app`` in order: (requests replayed, requests that did not answer 2xx)."""
        if not self._path.exists():
            return 0, 0
        done = failed = 0
        with self._lock, open(self._path, encoding="utf-8") as journal:
            for line in journal:
                try:
                    record = json.loads(line)
                except ValueError:  # a last line cut short by a crash: everything before it is whole
                    log.warning("journal %s: an incomplete entry was skipped", self._path)
                    continue
                body = (record["body"].encode("latin-1") if "body" in record
                        else (self._bodies / record["body_sha256"]).read_bytes())
                environ = {
                    **record["headers"], "REQUEST_METHOD": record["method"], "PATH_INFO": record["path"],
                    "QUERY_STRING": record["query"], "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
                    "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "0", "SERVER_PROTOCOL": "HTTP/1.1", "SCRIPT_NAME": "",
                    "wsgi.url_scheme": "http", "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0),
                    "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False, "REMOTE_ADDR": "127.0.0.1",
                }
                status: list[str] = []
                _run(self._app, environ, lambda s, h, e=None: status.append(s))
                done += 1
                failed += not (status and status[0][:1] == "2")
        if failed:
            log.warning("journal %s: %d of %d replayed requests did not succeed", self._path, failed, done)
        return done, failed


def _run(app: WsgiApp, environ: dict, start_response: Callable) -> list[bytes]:
    """Call the app and drain its answer (so the change is complete before the journal records it)."""
    result = app(environ, start_response)
    try:
        return [chunk for chunk in result]
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()


def _read_body(environ: dict) -> bytes:
    length = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    body = stream.read(length) if length else (stream.read() if environ.get("wsgi.input_terminated") else b"")
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def _changes_state(environ: dict, body: bytes) -> bool:
    """Not a read by its operation's name: JSON protocols name it in X-Amz-Target, query protocols in ``Action``."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    operation = target.rsplit(".", 1)[-1] if target else ""
    if not operation and "x-www-form-urlencoded" in environ.get("CONTENT_TYPE", ""):
        operation = (parse_qs(body.decode("utf-8", "replace")).get("Action") or [""])[0]
    if not operation:
        operation = (parse_qs(environ.get("QUERY_STRING", "")).get("Action") or [""])[0]
    return not (operation and (_READ_OPERATION.match(operation) or operation in _NOT_KEPT))


__all__ = ["JournalMiddleware"]
