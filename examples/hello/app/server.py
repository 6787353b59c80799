"""A tiny HTTP app for corral's example fleet (standard library only).

Listens on 127.0.0.1:$PORT. `GET /` names the version, release and instance that answered;
`GET /healthz` is the health check. On SIGTERM it stops accepting, lets in-flight requests
finish, then exits, as a well-behaved instance should.
"""

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

VERSION = (Path(__file__).parent / "VERSION").read_text().strip()
IDENTITY = {
    "version": VERSION,
    "release": os.environ.get("CORRAL_RELEASE", "?"),
    "instance": os.environ.get("CORRAL_INSTANCE", "?"),
    "greeting": os.environ.get("GREETING", "hello"),
}


# FAIL_EVERY=N makes every Nth request to / answer 500: a bad release, for canary analysis
FAIL_EVERY = int(os.environ.get("FAIL_EVERY", "0"))
COUNTER = iter(range(1, 1 << 62))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status = 200
        if self.path == "/healthz":
            body = b"ok\n"
            content_type = "text/plain"
        elif self.path == "/":
            body = (json.dumps(IDENTITY) + "\n").encode()
            content_type = "application/json"
            if FAIL_EVERY and next(COUNTER) % FAIL_EVERY == 0:
                status, body, content_type = 500, b"injected failure\n", "text/plain"
        else:
            status, body, content_type = 404, b"not found\n", "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would drown the central log


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Handler)
    server.daemon_threads = False
    server.block_on_close = True

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(
        f"{IDENTITY['instance']} {VERSION} ({IDENTITY['release']}) listening on "
        f"port {server.server_address[1]}",
        flush=True,
    )
    server.serve_forever(poll_interval=0.1)
    server.server_close()
    print(f"{IDENTITY['instance']} stopped", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
