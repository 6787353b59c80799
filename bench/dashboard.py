"""Dashboard bench: 100 services x 10 instances in a SQLite state, the agent's app on TCP.

Measures the fleet endpoint's latency (p50, p99) under 20 concurrent clients, beside the
trunk's /v1/status (the peer it extends), and the page's time to first paint in chromium
(skipped when chromium or playwright is missing). Last line: one JSON object with the figures.

    .venv/bin/python bench/dashboard.py [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from corral.agent.api import create_app
from corral.agent.controller import Agent
from corral.agent.dashboard import Guard, install
from corral.agent.runtime import open_store
from corral.agent.tokens import TokenStore
from corral.drivers.memory import InMemoryDriver
from corral.paths import Home
from corral.router.memory import InMemoryRouter
from corral.state.records import InstanceRecord, InstanceState, ServiceRecord

SERVICES, INSTANCES, CLIENTS = 100, 10, 20


def fill(home: Home) -> Any:
    store = open_store(home, "bench", "dev", None)
    now = time.time()
    for s in range(SERVICES):
        name = f"svc{s:03d}"
        store.get_or_create_release(name, "sha256:" + f"{s:064x}", "sha256:c", {"v": s}, "bench")
        store.put_service(
            ServiceRecord(name=name, current_release=1, replicas=INSTANCES, route_port=None)
        )
        for i in range(INSTANCES):
            store.put_instance(
                InstanceRecord(
                    id=f"{name}-{i}", service=name, serial=i, release=1,
                    state=InstanceState.RUNNING, address=f"127.0.0.1:{20000 + i}", created_at=now,
                )
            )  # fmt: skip
    return store


def serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    return server, thread, int(sock.getsockname()[1])


async def latency(base: str, path: str, total: int) -> dict[str, float]:
    timings: list[float] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:

        async def worker(n: int) -> None:
            for _ in range(n):
                started = time.perf_counter()
                (await client.get(path)).raise_for_status()
                timings.append((time.perf_counter() - started) * 1000)

        await asyncio.gather(*(worker(total // CLIENTS) for _ in range(CLIENTS)))
    timings.sort()
    return {
        "p50_ms": round(statistics.median(timings), 2),
        "p99_ms": round(timings[int(len(timings) * 0.99) - 1], 2),
        "requests": len(timings),
    }


def first_paint(base: str) -> float | None:
    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if chromium is None:
        return None
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=args)
        try:
            page = browser.new_page()
            started = time.perf_counter()
            page.goto(base + "/ui")
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            return round((time.perf_counter() - started) * 1000, 1)
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cb-dash-"))
    home = Home(root)
    store = fill(home)
    agent = Agent(home=home, project="bench", environment="dev", store=store,
                  driver=InMemoryDriver("bench", "dev"), router=InMemoryRouter())  # fmt: skip
    app = create_app(agent)
    install(app, agent)
    server, thread, port = serve(Guard(app, TokenStore.of_home(root)))
    base = f"http://127.0.0.1:{port}"
    try:
        fleet = asyncio.run(latency(base, "/v1/fleet", args.requests))
        status = asyncio.run(latency(base, "/v1/status", args.requests))
        paint = first_paint(base)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        store.close()
        shutil.rmtree(root, ignore_errors=True)
    print(f"{SERVICES} services x {INSTANCES} instances, {CLIENTS} concurrent clients")
    print(f"{'endpoint':<12} {'p50 ms':>8} {'p99 ms':>8} {'requests':>9}")
    for name, row in (("/v1/fleet", fleet), ("/v1/status", status)):
        print(f"{name:<12} {row['p50_ms']:>8} {row['p99_ms']:>8} {row['requests']:>9}")
    print(f"page ready (first paint with data): {paint if paint is not None else 'skipped'} ms")
    ratio = round(fleet["p50_ms"] / status["p50_ms"], 2) if status["p50_ms"] else None
    print(json.dumps({"fleet": fleet, "status_peer": status, "fleet_vs_status_p50": ratio,
                      "first_paint_ms": paint}))  # fmt: skip


if __name__ == "__main__":
    main()
