"""The agent process: `python -m corral.agent --home H --project P --env E`.

Started on demand by the CLI (detached, in its own session), so closing the terminal or killing
the CLI never stops a roll-out. One asyncio loop (uvloop when installed) hosts the router, the
supervisor, roll-outs and the API server.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from pathlib import Path

import uvicorn

from corral.agent.api import create_app
from corral.agent.controller import Agent
from corral.agent.faults import FaultInjector
from corral.agent.runtime import build_runtime
from corral.errors import CorralError
from corral.paths import Home

log = logging.getLogger("corral.agent")


def _bind_unix(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


async def run(home: Home, project: str, environment: str, state_url: str | None) -> int:
    store, driver, router = build_runtime(home, project, environment, state_url)
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
    try:
        await agent.start()
    except CorralError as exc:
        log.error("%s", exc)
        store.close()
        return exc.exit_code
    sock_path = home.agent_socket(project, environment)
    sock = _bind_unix(sock_path)
    server: uvicorn.Server | None = None

    def request_stop() -> None:
        if server is not None:
            server.should_exit = True

    config = uvicorn.Config(
        create_app(agent, on_stop=request_stop),
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
        await server.serve(sockets=[sock])
    finally:
        await agent.shutdown()
        store.close()
        try:
            sock_path.unlink()
        except FileNotFoundError:
            pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="corral-agent")
    parser.add_argument("--home", required=True)
    parser.add_argument("--project", required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--state-url", default=None)
    args = parser.parse_args(argv)
    home = Home(Path(args.home))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # the default loop works, only slower
        pass
    return asyncio.run(run(home, args.project, args.env, args.state_url))
