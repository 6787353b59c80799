"""The agent process: `python -m corral.agent --home H --project P --env E`.

Started on demand by the CLI (detached, in its own session), so closing the terminal or killing
the CLI never stops a roll-out. One asyncio loop (uvloop when installed) hosts the router, the
supervisor, roll-outs and the API server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from corral.agent.api import create_app
from corral.agent.controller import Agent
from corral.agent.dashboard import DEFAULT_HOST, Guard, bind_ui, install
from corral.agent.dashboard.listen import advertised_url
from corral.agent.faults import FaultInjector
from corral.agent.metrics import PORT_ENV, port_from
from corral.agent.runtime import build_runtime
from corral.agent.tokens import TokenStore
from corral.errors import AgentError, CorralError
from corral.paths import Home
from corral.secrets.crypto import load_key_if_present

log = logging.getLogger("corral.agent")


def _bind_unix(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


INHERIT_ENV = "CORRAL_INHERIT_ROUTES"
BIND_ENV = "CORRAL_API_BIND"


def _inherited_routes() -> dict[str, socket.socket]:
    """Listening sockets handed over by the previous agent: `web=7,api=8` (service=fd)."""
    found: dict[str, socket.socket] = {}
    for item in filter(None, os.environ.pop(INHERIT_ENV, "").split(",")):
        service, _, fd = item.partition("=")
        found[service] = socket.socket(fileno=int(fd))
    return found


async def _hand_over(
    agent: Agent, home: Home, args: list[str], sock_path: Path, timeout: float = 20.0
) -> int:
    """Start the next agent on our route sockets; return its pid once it serves the API.

    Both agents accept on the same listening sockets for a moment, so no connection is
    refused; this one then stops accepting, lets in-flight requests finish, and exits."""
    await agent.pause_for_handover()
    sockets = agent.route_sockets()
    env = dict(os.environ)
    env[INHERIT_ENV] = ",".join(f"{name}={s.fileno()}" for name, s in sockets.items())
    env.pop("CORRAL_FAULT", None)
    # the successor binds a side path; renaming it over ours is the atomic switch, so a
    # successor that fails never leaves the API path dead
    next_path = sock_path.with_name(sock_path.name + ".next")
    env[BIND_ENV] = str(next_path)
    log_path = home.agent_log(agent.project, agent.environment)
    with open(log_path, "ab") as log, open(os.devnull, "rb") as devnull:
        process = subprocess.Popen(
            [sys.executable, "-m", "corral.agent", *args],
            stdin=devnull, stdout=log, stderr=log, env=env,
            pass_fds=[s.fileno() for s in sockets.values()],
            start_new_session=True,
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    transport = httpx.AsyncHTTPTransport(uds=str(next_path))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            try:
                # a fresh connection each time: a kept-alive one would still reach us
                answer = await client.get("/v1/agent", timeout=1.0, headers={"Connection": "close"})
                info = answer.json()
                if int(info["pid"]) == process.pid:
                    os.replace(next_path, sock_path)
                    agent.handed_over = True
                    return process.pid
            except (httpx.HTTPError, OSError, ValueError, KeyError):
                pass
            await asyncio.sleep(0.05)
    if process.poll() is None:
        process.kill()
    process.wait()
    agent.resume_after_failed_handover()
    raise AgentError(f"the new agent did not come up; this one keeps running (see {log_path})")


async def run(
    home: Home,
    project: str,
    environment: str,
    state_url: str | None,
    args: list[str],
    driver_name: str = "local",
    ui: tuple[str, int] | None = None,
    driver_settings: dict[str, Any] | None = None,
) -> int:
    store, driver, router = build_runtime(
        home, project, environment, state_url, driver_name, driver_settings
    )
    agent = Agent(
        home=home,
        project=project,
        environment=environment,
        store=store,
        driver=driver,
        router=router,
        tick=float(os.environ.get("CORRAL_AGENT_TICK", "1.0")),
        fault=FaultInjector.from_env(),
    )
    agent.inherited = _inherited_routes()
    agent.api_url = advertised_url(*ui) if ui is not None else ""  # recorded at start
    # 127.0.0.1 only; kept referenced until it has bound (or given up)
    metrics_task = asyncio.create_task(agent.metrics.serve_when_free(port_from(None)))
    try:  # read once, kept in memory: unattended replacements need no file later (law 5)
        agent.secrets_key = load_key_if_present(home=home.root)
    except CorralError as exc:
        log.error("%s", exc)
        store.close()
        return exc.exit_code
    try:
        await agent.start()
    except CorralError as exc:
        log.error("%s", exc)
        store.close()
        return exc.exit_code
    sock_path = home.agent_socket(project, environment)
    sock = _bind_unix(Path(os.environ.pop(BIND_ENV, "") or sock_path))
    server: uvicorn.Server | None = None

    def request_stop() -> None:
        if server is not None:
            server.should_exit = True

    async def restart() -> int:
        new_pid = await _hand_over(agent, home, args, sock_path)
        # stop accepting on the shared sockets, finish in-flight requests, then exit
        await router.retire()
        asyncio.get_running_loop().call_later(0.2, request_stop)
        return new_pid

    app = create_app(agent, on_stop=request_stop, on_restart=restart)
    install(app, agent)  # the dashboard page and its endpoints
    sockets = [sock]
    if ui is not None:  # the same app on TCP, behind the Host/Origin/token guard
        try:
            sockets.append(bind_ui(*ui))
        except OSError as exc:
            log.error("cannot listen on %s:%d for the dashboard: %s", *ui, exc)
            await agent.shutdown()
            store.close()
            return 2
    config = uvicorn.Config(
        Guard(app, TokenStore.of_home(home.root), ui_host=ui[0] if ui else None),
        log_level="warning",
        lifespan="off",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop)
    log.info("agent %s serving on %s", agent.agent_id, sock_path)
    try:
        await server.serve(sockets=sockets)
    finally:
        await agent.shutdown()
        metrics_task.cancel()
        agent.metrics.close()
        store.close()
        if not agent.handed_over:  # the successor serves on this path now
            with contextlib.suppress(FileNotFoundError):
                sock_path.unlink()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="corral-agent")
    parser.add_argument("--home", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--state-url", default=None)
    parser.add_argument(
        "--driver", default="local", choices=["local", "docker", "swarm", "kubernetes"]
    )
    parser.add_argument(
        "--driver-settings", default="", help="the driver's spec settings, as JSON (swarm: …)"
    )
    parser.add_argument(
        "--ui-port",
        type=int,
        default=int(os.environ.get("CORRAL_UI_PORT") or 0),
        help="serve the API and dashboard on TCP too (0: off; env CORRAL_UI_PORT)",
    )
    parser.add_argument(
        "--ui-host", default=DEFAULT_HOST, help="address for --ui-port; beyond loopback: a warning"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help=f"serve Prometheus metrics on 127.0.0.1:PORT (else ${PORT_ENV}; unset: off)",
    )
    args = parser.parse_args(argv)
    if args.metrics_port is not None:  # through the env, so a restarted agent keeps it
        os.environ[PORT_ENV] = str(args.metrics_port)
    home = Home(Path(args.home))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # the default loop works, only slower
        pass
    own_args = ["--home", args.home, "--project", args.project, "--env", args.env]
    if args.state_url:
        own_args += ["--state-url", args.state_url]
    own_args += ["--driver", args.driver]  # a successor (agent restart) runs the same driver
    if args.driver_settings:
        own_args += ["--driver-settings", args.driver_settings]
    settings = json.loads(args.driver_settings) if args.driver_settings else None
    ui = (args.ui_host, args.ui_port) if args.ui_port else None
    if ui:
        own_args += ["--ui-port", str(args.ui_port), "--ui-host", args.ui_host]
    return asyncio.run(
        run(home, args.project, args.env, args.state_url, own_args, args.driver, ui, settings)
    )
