"""hello-service: a tiny HTTP service released by Slipway as a container image.

It listens on $HOST:$PORT (Slipway runs it with host networking and picks the port) and answers
/health with "ok" and / with a JSON greeting.
"""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "1"


def respond(path: str) -> tuple[int, str, str]:
    """(status, content type, body) for a GET of ``path``: the logic the unit tests check."""
    if path == "/health":
        return 200, "text/plain", "ok"
    if path == "/":
        return 200, "application/json", json.dumps({"message": "hello from hello-service", "version": VERSION})
    return 404, "text/plain", "not found"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        status, ctype, body = respond(self.path)
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):  # quiet: one line per request is noise in the container log
        pass


def main() -> None:
    server = ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8080"))), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
