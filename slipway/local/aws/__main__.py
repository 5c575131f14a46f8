"""``python -m slipway.local.aws --host 127.0.0.1 --port N [--work-dir DIR] [--ready-file PATH] [--seed N]``.

Serves in the foreground until SIGTERM or SIGINT, then exits 0. Once listening it writes
``{"endpoint": ..., "pid": ...}`` to the ready file atomically (temp file + rename), so a reader never sees a
partial file.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from slipway.local.aws.server import LocalAws


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m slipway.local.aws", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    parser.add_argument("--work-dir", type=Path, default=None, help="where extracted Lambda packages are kept")
    parser.add_argument("--ready-file", type=Path, default=None, help="JSON file written once listening")
    parser.add_argument("--seed", type=int, default=None, help="seed for alias weighted routing")
    return parser.parse_args(argv)


def write_ready_file(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(content, out)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    with LocalAws(host=args.host, port=args.port, work_dir=args.work_dir, seed=args.seed) as aws:
        if args.ready_file is not None:
            write_ready_file(args.ready_file, {"endpoint": aws.endpoint, "pid": os.getpid()})
        print(f"slipway local AWS listening on {aws.endpoint}", flush=True)
        while not stopping.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
