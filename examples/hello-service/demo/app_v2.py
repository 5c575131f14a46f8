"""hello-service v2: the broken release the demo ships. It starts, but its health endpoint reports a missing
dependency (a database URL no environment sets), so the new container never becomes healthy and traffic
never leaves v1. The unit tests set DATABASE_URL, so they pass."""

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = "2"


def respond(path: str) -> tuple[int, str, str]:
    if path == "/health":
        if not os.environ.get("DATABASE_URL"):
            return 503, "text/plain", "DATABASE_URL is not set"
        return 200, "text/plain", "ok"
    if path == "/":
        return 200, "application/json", json.dumps({"message": "hello from hello-service", "version": VERSION})
    return 404, "text/plain", "not found"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        status, ctype, body = respond(self.path)
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        pass


def main() -> None:
    server = ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8080"))), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
