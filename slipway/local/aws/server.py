"""``LocalAws``: moto's WSGI app behind the Lambda Invoke layer, served by werkzeug on a background thread.

moto's state is global to the process: two ``LocalAws`` in one process share it, and entering ``mock_aws()``
in the same process wipes it. Run one per process (per test module, per job).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import BaseWSGIServer, make_server

from slipway.core.errors import LocalStackError
from slipway.local.aws.ecs_rollout import EcsRolloutMiddleware
from slipway.local.aws.journal import JournalMiddleware
from slipway.local.aws.lambda_invoke import LambdaInvokeMiddleware

SEED_ENV = "SLIPWAY_LOCALAWS_SEED"


def _seed_from_env() -> int | None:
    raw = os.environ.get(SEED_ENV, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise LocalStackError(
            "Alias routing seed is not an integer",
            target=f"{SEED_ENV}={raw!r}",
            hint="set it to an integer or unset it",
        ) from exc


class LocalAws:
    """A moto server on ``host:port`` (port 0 picks a free one) whose Lambda Invoke runs the invoked version.

    ``work_dir`` holds extracted deployment packages (kept, keyed by sha256) and the journal of every change, replayed
    at ``start()``, so a restarted endpoint has the state it had (``slipway.local.aws.journal``); without one a
    temporary directory is used and removed by ``stop()``, and nothing outlives the process. ``seed`` (else ``$SLIPWAY_LOCALAWS_SEED``) makes alias routing repeatable.

        with LocalAws() as aws:
            boto3.client("lambda", endpoint_url=aws.endpoint, region_name="us-east-1", ...)
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, work_dir: Path | None = None, seed: int | None = None
    ) -> None:
        if not 0 <= int(port) <= 65535:
            raise LocalStackError("Port out of range", target=str(port), hint="use 0 for a free port, or 1-65535")
        self._host = host
        self._port = int(port)
        self._work_dir = Path(work_dir) if work_dir is not None else None
        self._seed = seed if seed is not None else _seed_from_env()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._owned_dir: Path | None = None

    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise LocalStackError("Local AWS endpoint is not running", hint="call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        if self._server is not None:
            raise LocalStackError("Local AWS endpoint already started", target=self.endpoint)
        # werkzeug logs one line per request; moto's own loggers stay as configured.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        if self._work_dir is None:
            self._owned_dir = Path(tempfile.mkdtemp(prefix="slipway-localaws-"))
        work_dir = self._work_dir or self._owned_dir
        app = EcsRolloutMiddleware(LambdaInvokeMiddleware(DomainDispatcherApplication(create_backend_app), work_dir, self._seed))
        if self._work_dir is not None:  # a kept work directory keeps the state too: changes are journaled, replayed here
            journal = JournalMiddleware(app, self._work_dir / "journal")
            replayed, failed = journal.replay()
            if replayed:
                logging.getLogger("slipway.local.aws").info("restored %d change(s) from the journal (%d failed)", replayed, failed)
            app = journal
        try:
            # Bind exactly the host given (127.0.0.1 by default), never 0.0.0.0 as moto's defaults do.
            self._server = make_server(self._host, self._port, app, threaded=True, request_handler=MotoRequestHandler)
        except OSError as exc:
            self._remove_owned_dir()
            raise LocalStackError(
                "Could not bind the local AWS endpoint", target=f"{self._host}:{self._port}", hint=str(exc)
            ) from exc
        self._thread = threading.Thread(target=self._server.serve_forever, name="slipway-localaws", daemon=True)
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=10)
        self._remove_owned_dir()

    def _remove_owned_dir(self) -> None:
        if self._owned_dir is not None:
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None

    def __enter__(self) -> LocalAws:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
