"""The shared load generator counts answers and failures by reason, and stops at its bounds."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from corral.testing.load import Load


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status, body = {
            "/": (200, b'{"release": "r1", "version": "v1"}'),
            "/broken": (503, b"down"),
            "/text": (200, b"not json"),
        }[self.path]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def base() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_counts_answers_by_release_and_stops_at_max_requests(base: str) -> None:
    with Load(base + "/", clients=2, max_requests=50, record=True) as load:
        load.wait()
    assert load.failed == 0, dict(load.errors)
    assert 50 <= load.ok <= 51  # each client checks the bound before its next request
    assert load.releases == {"r1": load.ok} and load.versions == {"v1": load.ok}
    assert load.window(load.started, load.stopped + 1)["requests"] == load.ok


def test_5xx_and_a_non_json_body_are_failures_named_by_reason(base: str) -> None:
    with Load(base + "/broken", clients=1, max_requests=5) as broken:
        broken.wait()
    assert broken.ok == 0 and broken.errors == {"HTTP 503": 5}
    with Load(base + "/text", clients=1, max_requests=5) as text:
        text.wait()
    assert text.errors == {"JSONDecodeError": 5}
    with Load(base + "/text", clients=1, max_requests=5, json_body=False) as plain:
        plain.wait()
    assert plain.ok == 5 and plain.failed == 0


def test_a_refused_connection_is_counted_and_time_bounds_the_run() -> None:
    with Load("http://127.0.0.1:9/", clients=1, max_seconds=0.3, keep_alive=False) as load:
        load.wait()
    assert load.ok == 0 and load.failed > 0
    assert set(load.errors) == {"ConnectionRefusedError"}
