"""Benchmark: corral's EmbeddedRouter against HAProxy, over the same three nginx backends.

    .venv/bin/python bench/router.py [--duration 10] [--rounds 2]

1. Three nginx processes (Debian nginx-light) serve a 1 KiB file on 127.0.0.1.
2. Max throughput, `wrk -t2 -c32`: one nginx directly; HAProxy 2.6 (roundrobin, http mode,
   keep-alive to clients and servers, `http-reuse always`, no logging) with `nbthread 1` (one
   event loop, like the router: the fair comparison) and `nbthread 2` (every core, for
   context); the EmbeddedRouter in a process of its own on uvloop.
3. Latency at a fixed rate of half HAProxy's (nbthread 1) maximum: p99 for HAProxy and for
   the router, measured by `hey -q` (Debian `hey`; wrk2 is not packaged) or, without hey, by
   a bounded constant-rate generator built in here.

The machine may be shared, so targets are measured in interleaved rounds and each keeps its
best round (every round is in the JSON). CPU time per request of the proxy process is shown
too: it depends little on what else runs. Goals: router >= 0.5 x HAProxy's requests/s;
router p99 <= 2 x HAProxy's at the fixed rate. Prints a table and, as the very last line, one
JSON object with every figure. Every process it starts is stopped by pid, on success,
failure or Ctrl-C. Network: 127.0.0.1 only.
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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
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

    def start(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        self.started.append(proc)
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes]) -> None:
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
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/sbin")
    if path is None:
        raise SystemExit(f"{program} is missing: apt-get install -y {package}")
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the servers ----------------------------------------------------------------------------

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


@dataclass
class Target:
    name: str
    proc: subprocess.Popen[bytes]
    port: int


def start_nginx(procs: Processes, work: Path, index: int, root: Path) -> Target:
    nginx = require("nginx", "nginx-light")
    port = free_port()
    conf_dir = work / f"nginx{index}"
    conf_dir.mkdir()
    conf = conf_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dir=conf_dir, port=port, root=root))
    log = conf_dir / "stdout.log"
    argv = [nginx, "-p", str(conf_dir), "-e", str(conf_dir / "error.log"), "-c", str(conf)]
    proc = procs.start(argv, log)
    wait_for_port(port, proc, "nginx", log)
    return Target(f"nginx{index}", proc, port)


def start_haproxy(procs: Processes, work: Path, backends: list[int], threads: int) -> Target:
    haproxy = require("haproxy", "haproxy")
    port = free_port()
    servers = "\n".join(f"    server s{i} 127.0.0.1:{p}" for i, p in enumerate(backends))
    conf = work / f"haproxy{threads}.cfg"
    conf.write_text(HAPROXY_CONF.format(threads=threads, port=port, servers=servers))
    log = work / f"haproxy{threads}.log"
    proc = procs.start([haproxy, "-db", "-f", str(conf)], log)
    wait_for_port(port, proc, "haproxy", log)
    return Target(f"haproxy_nbthread{threads}", proc, port)


def start_router(procs: Processes, work: Path, backends: list[int]) -> Target:
    port = free_port()
    log = work / "router.log"
    argv = [sys.executable, __file__, "--serve-router", str(port), *map(str, backends)]
    proc = procs.start(argv, log)
    wait_for_port(port, proc, "the router", log)
    return Target("router", proc, port)


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


# -- load -----------------------------------------------------------------------------------


@dataclass
class Run:
    requests_per_s: float
    p99_ms: float
    errors: int
    cpu_us_per_request: float = 0.0  # of the target process
    target_rps: float = 0.0  # fixed-rate runs only
    tool: str = "wrk"


def run_wrk(port: int, duration: int) -> Run:
    wrk = require("wrk", "wrk")
    argv = [wrk, f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{duration}s", "--latency"]
    out = _run([*argv, f"http://127.0.0.1:{port}/index.html"], duration)
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out))
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out).groups()  # type: ignore[union-attr]
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    failed = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if failed:
        errors += sum(int(n) for n in failed.groups())
    p99 = float(value) / 1000 if unit == "us" else float(value) * (1000 if unit == "s" else 1)
    return Run(rps, p99, errors)


def run_fixed_rate(port: int, rate: float, duration: int) -> Run:
    hey = shutil.which("hey")
    if hey is None:
        return asyncio.run(constant_rate(port, rate, duration))
    url = f"http://127.0.0.1:{port}/index.html"
    per_worker = f"{rate / HEY_WORKERS:.3f}"
    out = _run([hey, "-z", f"{duration}s", "-c", str(HEY_WORKERS), "-q", per_worker, url], duration)
    summary, _, failures = out.partition("Error distribution:")
    achieved = float(_find(r"Requests/sec:\s+([\d.]+)", summary))
    p99 = float(_find(r"99% in ([\d.]+) secs", summary)) * 1000  # hey prints 0.1 ms steps
    statuses = re.findall(r"\[(\d{3})\]\s+(\d+) responses", summary)
    errors = sum(int(n) for code, n in statuses if code != "200")
    errors += sum(int(n) for n in re.findall(r"\[(\d+)\]", failures))
    return Run(achieved, p99, errors, target_rps=rate, tool="hey")


async def constant_rate(port: int, rate: float, duration: int) -> Run:
    """Without hey: requests on a fixed schedule over keep-alive connections; latency counts
    from the scheduled send time (no coordinated omission). Bounded in time."""
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
                if (delay := due - loop.time()) > 0:
                    await asyncio.sleep(delay)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(int(_find(r"(?i)content-length:\s*(\d+)", head.decode())))
                errors += not head.startswith(b"HTTP/1.1 200")
                latencies.append(loop.time() - due)
                due += interval
        finally:
            writer.close()

    offsets = [i * interval / CONNECTIONS for i in range(CONNECTIONS)]
    await asyncio.wait_for(asyncio.gather(*map(connection, offsets)), duration + 30)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] * 1000 if latencies else float("nan")
    return Run(len(latencies) / duration, p99, errors, target_rps=rate, tool="built-in")


def _run(argv: list[str], duration: int) -> str:
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=duration + 60, check=True, env=env
    )
    return done.stdout


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise SystemExit(f"unexpected load generator output (no {pattern!r}):\n{text[-2000:]}")
    return match.group(1)


def with_cpu(target: Target, duration: int, load: Callable[[], Run]) -> Run:
    """Run `load()` and add the target's CPU time per request to its figures."""
    before = cpu_seconds(target.proc.pid)
    run = load()
    spent = cpu_seconds(target.proc.pid) - before
    requests = run.requests_per_s * duration
    run.cpu_us_per_request = round(spent / requests * 1e6, 2) if requests else float("nan")
    return run


# -- measuring and reporting ----------------------------------------------------------------


def measure(procs: Processes, work: Path, duration: int, rounds: int) -> dict[str, Any]:
    root = work / "www"
    root.mkdir()
    (root / "index.html").write_bytes(b"x" * 1023 + b"\n")
    nginx = [start_nginx(procs, work, i, root) for i in range(3)]
    backends = [t.port for t in nginx]
    proxies = [start_haproxy(procs, work, backends, n) for n in (1, 2)]
    proxies.append(start_router(procs, work, backends))
    direct = Target("direct", nginx[0].proc, nginx[0].port)
    print(f"3 nginx on {backends}; {rounds} rounds of {duration} s", file=sys.stderr)

    runs: dict[str, list[Run]] = {}
    for _ in range(rounds):
        for target in [direct, *proxies]:
            run = with_cpu(target, duration, partial(run_wrk, target.port, duration))
            runs.setdefault(target.name, []).append(run)
    best = {name: max(r, key=lambda run: run.requests_per_s) for name, r in runs.items()}

    rate = best["haproxy_nbthread1"].requests_per_s / 2
    fixed: dict[str, list[Run]] = {}
    for _ in range(rounds):
        for target in (proxies[0], proxies[2]):
            run = with_cpu(target, duration, partial(run_fixed_rate, target.port, rate, duration))
            fixed.setdefault(target.name, []).append(run)
    best_fixed = {name: min(r, key=lambda run: run.p99_ms) for name, r in fixed.items()}

    procs.stop(proxies[2].proc)
    lines = (work / "router.log").read_text().strip().splitlines()
    return {
        "duration_s": duration,
        "rounds": rounds,
        "connections": CONNECTIONS,
        "max": {name: asdict(run) for name, run in best.items()},
        "fixed_rate": {name: asdict(run) for name, run in best_fixed.items()},
        "all_rounds": {
            "max": {name: [asdict(run) for run in r] for name, r in runs.items()},
            "fixed_rate": {name: [asdict(run) for run in r] for name, r in fixed.items()},
        },
        "router_counters": json.loads(lines[-1]) if lines else None,
    }


def report(f: dict[str, Any]) -> None:
    best, fixed = f["max"], f["fixed_rate"]
    hap1 = best["haproxy_nbthread1"]["requests_per_s"]
    hap2 = best["haproxy_nbthread2"]["requests_per_s"]
    rows = [
        ("nginx directly (1 of 3)", best["direct"]),
        ("HAProxy 2.6, nbthread 1", best["haproxy_nbthread1"]),
        ("HAProxy 2.6, nbthread 2", best["haproxy_nbthread2"]),
        ("corral EmbeddedRouter (uvloop)", best["router"]),
    ]
    print(
        f"\nmax throughput: wrk -t{WRK_THREADS} -c{CONNECTIONS} -d{f['duration_s']}s, "
        f"1 KiB file, best of {f['rounds']} interleaved rounds"
    )
    print(
        f"{'target':31} {'requests/s':>10} {'x HAProxy nb1':>13} {'p99 ms':>7} "
        f"{'CPU us/req':>10} {'errors':>6}"
    )
    for name, row in rows:
        print(
            f"{name:31} {row['requests_per_s']:10.0f} {row['requests_per_s'] / hap1:13.2f} "
            f"{row['p99_ms']:7.2f} {row['cpu_us_per_request']:10.1f} {row['errors']:6d}"
        )
    hap_fixed, router_fixed = fixed["haproxy_nbthread1"], fixed["router"]
    print(
        f"\nfixed rate {hap_fixed['target_rps']:.0f} requests/s (half HAProxy nbthread 1's max), "
        f"{hap_fixed['tool']}, {HEY_WORKERS} connections, best p99 of {f['rounds']} rounds"
    )
    print(f"{'target':31} {'achieved/s':>10} {'p99 ms':>7} {'CPU us/req':>10} {'errors':>6}")
    for name, row in (
        ("HAProxy 2.6, nbthread 1", hap_fixed),
        ("corral EmbeddedRouter", router_fixed),
    ):
        print(
            f"{name:31} {row['requests_per_s']:10.0f} {row['p99_ms']:7.2f} "
            f"{row['cpu_us_per_request']:10.1f} {row['errors']:6d}"
        )
    throughput_ratio = best["router"]["requests_per_s"] / hap1
    p99_ratio = router_fixed["p99_ms"] / hap_fixed["p99_ms"]
    f["goals"] = {
        "throughput_ratio_vs_nbthread1": round(throughput_ratio, 3),
        "throughput_ratio_vs_nbthread2": round(best["router"]["requests_per_s"] / hap2, 3),
        "p99_ratio_at_fixed_rate": round(p99_ratio, 3),
        "throughput_ok": throughput_ratio >= 0.5,
        "p99_ok": p99_ratio <= 2.0,
    }
    goals = f["goals"]
    print(
        f"\ngoal router >= 0.5 x HAProxy requests/s: {throughput_ratio:.2f} x nbthread 1, "
        f"{goals['throughput_ratio_vs_nbthread2']:.2f} x nbthread 2: "
        f"{'met' if goals['throughput_ok'] else 'MISSED'}"
    )
    print(
        f"goal router p99 <= 2 x HAProxy's at the fixed rate: {p99_ratio:.2f} x: "
        f"{'met' if goals['p99_ok'] else 'MISSED'}"
    )
    print(json.dumps(f, sort_keys=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument("--serve-router", nargs="+", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_router:
        serve_router(args.serve_router[0], args.serve_router[1:])
        return
    # SIGTERM and Ctrl-C end the bench through `finally`, which stops every process (SIGINT
    # is set explicitly: a shell starting the bench in the background leaves it ignored)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="corral-bench-router-"))
    try:
        figures = measure(procs, work, args.duration, max(args.rounds, 1))
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    report(figures)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: every process the bench started has been stopped")
