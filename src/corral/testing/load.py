"""Bounded HTTP load from a few client threads, counting answers and failures by reason.

One implementation for the end-to-end tests (law 6: no request dropped during a roll-out),
the benches (requests/s, failures, latency windows) and the demo. A failed request is a
connection error, a 5 s timeout, a 5xx, or (with `json_body`) a body that is not JSON. It
uses the standard library's keep-alive client: lighter than httpx, so a few threads reach a
few hundred requests/s on a busy 2-core machine. Bounded in time and in request count.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

Target = tuple[str, int, str]  # host, port, path
Sample = tuple[float, float, bool]  # started at (monotonic), seconds, ok


class Load:
    """`with Load(url) as load: ...`, then read `ok`, `failed`, `errors`, `releases`.

    `releases`/`versions` count the `release`/`version` field of JSON answers; `record=True`
    keeps every request's (start, latency, ok) in `samples` for `window()`."""

    def __init__(
        self,
        url: str,
        *,
        clients: int = 4,
        max_seconds: float = 60.0,
        max_requests: int = 200_000,
        keep_alive: bool = True,
        json_body: bool = True,
        record: bool = False,
        pace: float | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.url = url
        self.target: Target = (parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/")
        self.clients = clients
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.keep_alive = keep_alive
        self.json_body = json_body
        self.record = record
        # requests/s over all clients, or None for as fast as answers come back; a paced load
        # leaves the CPU to what is measured on a small machine
        self.pace = pace
        self.ok = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.releases: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.samples: list[Sample] = []
        self.started = 0.0
        self.stopped = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def next_target(self, client: int, turn: int) -> Target:
        """Where the next request goes; a subclass may spread requests over endpoints."""
        return self.target

    def _request(
        self, conn: http.client.HTTPConnection, path: str
    ) -> tuple[str | None, dict[str, object]]:
        """One GET: (failure reason or None, the JSON answer or {})."""
        conn.request("GET", path, headers={} if self.keep_alive else {"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        if response.status >= 500:
            return f"HTTP {response.status}", {}
        if not self.json_body:
            return None, {}
        answer = json.loads(body)
        return None, answer if isinstance(answer, dict) else {}

    def _run(self, client: int) -> None:
        deadline = self.started + self.max_seconds
        conn: http.client.HTTPConnection | None = None
        at: Target | None = None
        samples: list[Sample] = []
        turn = 0
        gap = self.clients / self.pace if self.pace else 0.0
        due = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < deadline:
            if gap:
                due = max(due + gap, time.monotonic() - gap)  # late: no burst to catch up
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
            with self._lock:
                if self.ok + self.failed >= self.max_requests:
                    break
            host, port, path = self.next_target(client, turn)
            turn += 1
            begin = time.monotonic()
            try:
                if conn is None or at != (host, port, path):
                    if conn is not None:
                        conn.close()
                    conn, at = (
                        http.client.HTTPConnection(host, port, timeout=5.0),
                        (host, port, path),
                    )
                reason, answer = self._request(conn, path)
                if not self.keep_alive:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, ValueError) as exc:
                reason, answer = type(exc).__name__, {}
                if conn is not None:
                    conn.close()
                conn = None
            if self.record:
                samples.append((begin, time.monotonic() - begin, reason is None))
            with self._lock:
                if reason is None:
                    self.ok += 1
                    if self.json_body:
                        self.releases[str(answer.get("release"))] += 1
                        self.versions[str(answer.get("version"))] += 1
                else:
                    self.failed += 1
                    self.errors[reason] += 1
        if conn is not None:
            conn.close()
        with self._lock:
            self.samples += samples

    def threads(self) -> list[threading.Thread]:
        """The threads to run; a subclass may add its own (say, a discovery loop)."""
        return [
            threading.Thread(target=self._run, args=(client,), daemon=True)
            for client in range(self.clients)
        ]

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        self._threads = self.threads()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.stopped = time.monotonic()

    def wait(self, timeout: float = 10.0) -> None:
        """Until every client stopped on its own bound (time or count), at most `timeout` each."""
        for thread in self._threads:
            thread.join(timeout=timeout)

    @property
    def stopping(self) -> threading.Event:
        return self._stop

    @property
    def rate(self) -> float:
        """Requests per second over the whole run."""
        return (self.ok + self.failed) / max(1e-9, self.stopped - self.started)

    def window(self, start: float, end: float) -> dict[str, float]:
        """Figures of the recorded requests that began in [start, end) (needs `record=True`)."""
        chosen = [s for s in self.samples if start <= s[0] < end]
        latencies = sorted(s[1] for s in chosen)
        p99 = latencies[int(0.99 * (len(latencies) - 1))] * 1000 if latencies else float("nan")
        return {
            "requests": len(chosen),
            "failed": sum(1 for s in chosen if not s[2]),
            "rate": len(chosen) / max(end - start, 1e-9),
            "p99_ms": round(p99, 2),
        }
