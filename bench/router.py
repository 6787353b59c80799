"""Benchmark: corral's EmbeddedRouter against HAProxy, over the same three nginx backends.

    .venv/bin/python bench/router.py [--duration 10]

1. Three nginx processes (Debian nginx-light) serve a 1 KiB file on 127.0.0.1.
2. Max throughput, `wrk -t2 -c32`: one nginx directly; HAProxy 2.6 (roundrobin, http mode,
   keep-alive to clients and servers, `http-reuse always`, no logging) with `nbthread 1` (one
   event loop, like the router: the fair comparison) and `nbthread 2` (all cores, for
   context); the EmbeddedRouter in its own process on uvloop.
3. Latency at a fixed rate of half HAProxy's (nbthread 1) maximum: p99 for HAProxy and for
   the router, measured by `hey -q` (Debian `hey`; wrk2 is not packaged) or, without hey, by
   a bounded constant-rate generator built in here.

Goals: router >= 0.5 x HAProxy's requests/s; router p99 <= 2 x HAProxy's at the fixed rate.
Prints a table and, as the very last line, one JSON object with every figure. Every process
it starts is stopped by pid, on success, failure or Ctrl-C. Network: 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONNECTIONS = 32
WRK_THREADS = 2
HEY_WORKERS = 32


# -- processes ------------------------------------------------------------------------------


@dataclass
class Processes:
    """Every process the bench starts, stopped by pid whatever happens."""

    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **kwargs)
        self.started.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            self.stop(proc)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited at start:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not listen on 127.0.0.1:{port} within 10 s")


def require(program: str, package: str) -> str:
    path = shutil.which(program) or (
        f"/usr/sbin/{program}" if Path(f"/usr/sbin/{program}").exists() else None
    )
    if path is None:
        raise SystemExit(f"{program} is missing: apt-get install -y {package}")
    return path


# -- the three servers ----------------------------------------------------------------------

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""

HAPROXY_CONF = """\
global
    nbthread {threads}
    maxconn 4096
defaults
    mode http
    option http-keep-alive
    timeout connect 1s
    timeout client 30s
    timeout server 30s
frontend bench
    bind 127.0.0.1:{port}
    default_backend nginx
backend nginx
    balance roundrobin
    http-reuse always
{servers}
"""


def start_nginx(procs: Processes, work: Path, index: int, root: Path) -> int:
    nginx = require("nginx", "nginx-light")
    port = free_port()
    conf_dir = work / f"nginx{index}"
    conf_dir.mkdir()
    conf = conf_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=conf_dir, port=port, root=root))
    log = conf_dir / "stdout.log"
    proc = procs.start(
        [nginx, "-p", str(conf_dir), "-e", str(conf_dir / "error.log"), "-c", str(conf)], log
    )
    wait_for_port(port, proc, "nginx", log)
    return port


def start_haproxy(
    procs: Processes, work: Path, backends: list[int], threads: int
) -> tuple[subprocess.Popen[bytes], int]:
    haproxy = require("haproxy", "haproxy")
    port = free_port()
    servers = "\n".join(f"    server s{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
    conf = work / f"haproxy{threads}.cfg"
    conf.write_text(HAPROXY_CONF.format(threads=threads, port=port, servers=servers))
    log = work / f"haproxy{threads}.log"
    proc = procs.start([haproxy, "-db", "-f", str(conf)], log)
    wait_for_port(port, proc, "haproxy", log)
    return proc, port


def start_router(
    procs: Processes, work: Path, backends: list[int]
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = work / "router.log"
    argv = [sys.executable, __file__, "--serve-router", str(port)]
    argv += [str(p) for p in backends]
    proc = procs.start(argv, log)
    wait_for_port(port, proc, "the router", log)
    return proc, port


# -- load -----------------------------------------------------------------------------------


@dataclass
class Throughput:
    requests_per_s: float
    p99_ms: float
    errors: int


def run_wrk(port: int, duration: int) -> Throughput:
    wrk = require("wrk", "wrk")
    argv = [wrk, f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency"]
    out = subprocess.run(
        [*argv, f"http://127.0.0.1:{port}/index.html"],
        capture_output=True,
        text=True,
        timeout=duration + 30,
        check=True,
    ).stdout
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Throughput(
        rps, _to_ms(float(p99.group(1)), p99.group(2)) if p99 else float("nan"), errors
    )


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise SystemExit(f"unexpected load generator output (no {pattern!r}):\n{text[-2000:]}")
    return match.group(1)


def _to_ms(value: float, unit: str) -> float:
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


@dataclass
class FixedRate:
    tool: str
    target_rps: float
    achieved_rps: float
    p99_ms: float
    errors: int


def run_fixed_rate(port: int, rate: float, duration: int) -> FixedRate:
    url = f"http://127.0.0.1:{port}/index.html"
    hey = shutil.which("hey")
    if hey is None:
        return asyncio.run(constant_rate(port, rate, duration))
    per_worker = rate / HEY_WORKERS
    out = subprocess.run(
        [hey, "-z", f"{duration}s", "-c", str(HEY_WORKERS), "-q", f"{per_worker:.3f}", url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
        env={**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"},
    ).stdout
    summary, _, failures = out.partition("Error distribution:")
    achieved = float(_find(r"Requests/sec:\s+([\d.]+)", summary))
    p99 = float(_find(r"99% in ([\d.]+) secs", summary)) * 1000  # hey prints 0.1 ms steps
    statuses = re.findall(r"\[(\d{3})\]\s+(\d+) responses", summary)
    errors = sum(int(n) for code, n in statuses if code != "200")
    errors += sum(int(n) for n in re.findall(r"\[(\d+)\]", failures))
    return FixedRate("hey", rate, achieved, p99, errors)


async def constant_rate(port: int, rate: float, duration: int) -> FixedRate:
    """Without hey: requests sent on a fixed schedule over keep-alive connections; latency
    is counted from the scheduled send time (no coordinated omission). Bounded in time."""
    request = b"GET /index.html HTTP/1.1\r\nHost: bench\r\n\r\n"
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2
    interval = CONNECTIONS / rate

    async def connection(offset: float) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            due = start + offset
            while due < start + duration:
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
                await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                latencies.append(loop.time() - due)
                due += interval
        finally:
            writer.close()

    await asyncio.wait_for(
        asyncio.gather(*(connection(i * interval / CONNECTIONS) for i in range(CONNECTIONS))),
        duration + 30,
    )
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
    return FixedRate("built-in", rate, len(latencies) / duration, p99, errors)


# -- the router process ---------------------------------------------------------------------


def serve_router(port: int, backends: list[int]) -> None:
    """Runs in its own process: the EmbeddedRouter on uvloop until SIGTERM."""
    import uvloop

    from corral.router.protocol import Backend
    from corral.router.proxy import EmbeddedRouter

    async def main() -> None:
        router = EmbeddedRouter()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await router.open_route("bench", "127.0.0.1", port)
        await router.set_backends(
            "bench", [Backend(f"nginx{i}", "r1", "127.0.0.1", p) for i, p in enumerate(backends)]
        )
        await stop.wait()
        stats = router.stats("bench")
        print(json.dumps({"requests": stats.requests, "router_errors": stats.router_errors}))
        await router.close()

    uvloop.run(main())


# -- report ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    parser.add_argument("--serve-router", nargs="+", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_router:
        serve_router(args.serve_router[0], args.serve_router[1:])
        return
    # SIGTERM ends the bench like Ctrl-C does: through `finally`, which stops every process
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="corral-bench-router-"))
    try:
        figures = measure(procs, work, args.duration)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    report(figures, args.duration)


def measure(procs: Processes, work: Path, duration: int) -> dict[str, Any]:
    root = work / "www"
    root.mkdir()
    (root / "index.html").write_bytes(b"x" * 1023 + b"\n")
    backends = [start_nginx(procs, work, i, root) for i in range(3)]
    print(f"3 nginx backends on ports {backends}; {duration} s per run", file=sys.stderr)

    figures: dict[str, Any] = {"duration_s": duration, "connections": CONNECTIONS}
    figures["direct"] = run_wrk(backends[0], duration).__dict__

    for threads in (1, 2):
        proc, port = start_haproxy(procs, work, backends, threads)
        figures[f"haproxy_nbthread{threads}"] = run_wrk(port, duration).__dict__
        if threads == 1:
            reference = figures["haproxy_nbthread1"]["requests_per_s"]
            rate = reference / 2
            figures["fixed_rate_haproxy"] = run_fixed_rate(port, rate, duration).__dict__
        procs.stop(proc)

    proc, port = start_router(procs, work, backends)
    figures["router"] = run_wrk(port, duration).__dict__
    figures["fixed_rate_router"] = run_fixed_rate(port, rate, duration).__dict__
    procs.stop(proc)
    lines = (work / "router.log").read_text().strip().splitlines()
    figures["router_counters"] = json.loads(lines[-1]) if lines else None
    return figures


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(f: dict[str, Any], duration: int) -> None:
    hap1 = f["haproxy_nbthread1"]["requests_per_s"]
    hap2 = f["haproxy_nbthread2"]["requests_per_s"]
    rows = [
        ("nginx directly (1 of 3)", f["direct"]),
        ("HAProxy 2.6, nbthread 1", f["haproxy_nbthread1"]),
        ("HAProxy 2.6, nbthread 2", f["haproxy_nbthread2"]),
        ("corral EmbeddedRouter (uvloop)", f["router"]),
    ]
    print(f"\nmax throughput: wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{duration}s, 1 KiB file")
    print(f"{'target':32} {'requests/s':>11} {'x HAProxy nb1':>14} {'p99 ms':>8} {'errors':>7}")
    for name, row in rows:
        print(
            f"{name:32} {row['requests_per_s']:11.0f} {row['requests_per_s'] / hap1:14.2f} "
            f"{row['p99_ms']:8.2f} {row['errors']:7d}"
        )
    hap_fixed, router_fixed = f["fixed_rate_haproxy"], f["fixed_rate_router"]
    print(
        f"\nfixed rate: {hap_fixed['target_rps']:.0f} requests/s (half HAProxy nbthread 1's "
        f"max), {hap_fixed['tool']}, {HEY_WORKERS} connections, {duration} s"
    )
    print(f"{'target':32} {'achieved/s':>11} {'p99 ms':>8} {'errors':>7}")
    for name, row in (
        ("HAProxy 2.6, nbthread 1", hap_fixed),
        ("corral EmbeddedRouter", router_fixed),
    ):
        print(f"{name:32} {row['achieved_rps']:11.0f} {row['p99_ms']:8.2f} {row['errors']:7d}")

    throughput_ratio = f["router"]["requests_per_s"] / hap1
    p99_ratio = router_fixed["p99_ms"] / hap_fixed["p99_ms"]
    f["goals"] = {
        "throughput_ratio_vs_nbthread1": round(throughput_ratio, 3),
        "throughput_ratio_vs_nbthread2": round(f["router"]["requests_per_s"] / hap2, 3),
        "p99_ratio_at_fixed_rate": round(p99_ratio, 3),
        "throughput_ok": throughput_ratio >= 0.5,
        "p99_ok": p99_ratio <= 2.0,
    }
    print(
        f"\ngoal router >= 0.5 x HAProxy requests/s: {throughput_ratio:.2f} x nbthread 1 "
        f"({f['goals']['throughput_ratio_vs_nbthread2']:.2f} x nbthread 2) - "
        f"{verdict(f['goals']['throughput_ok'])}"
    )
    print(
        f"goal router p99 <= 2 x HAProxy's at the fixed rate: {p99_ratio:.2f} x - "
        f"{verdict(f['goals']['p99_ok'])}"
    )
    print(json.dumps(f, sort_keys=True))


if __name__ == "__main__":
    main()
