"""`docker exec` for exec checks, shared by the engines' drivers (docker; swarm can use it).

The SDK is synchronous: the exec runs in a worker thread while the event loop waits with a
timeout. At the timeout the command is killed by its host pid, which works when the engine
runs on this host (elsewhere it ends on its own; its output is then not waited for).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any

from corral.drivers.docker_engine import engine_call
from corral.drivers.protocol import EXEC_READ_LIMIT

TIMED_OUT = 124  # the exit code `timeout(1)` reports, for a command killed at its timeout


async def exec_in_container(
    api: Any, container: str, argv: list[str], timeout: float, *, name: str
) -> tuple[bytes, int, bool]:
    """Run `argv` in `container`: (the start of its output, exit code, whether it timed out)."""
    with engine_call(f"exec in container {name}"):
        exec_id = api.exec_create(container, argv, stdout=True, stderr=True)["Id"]
    task = asyncio.ensure_future(asyncio.to_thread(_read, api, exec_id))
    try:
        data, code = await asyncio.wait_for(asyncio.shield(task), timeout)
        return data, code, False
    except TimeoutError:
        await asyncio.to_thread(kill_exec, api, exec_id)
        data = b""
        with contextlib.suppress(Exception):
            data = (await asyncio.wait_for(task, 5.0))[0]
        return data, TIMED_OUT, True


def _read(api: Any, exec_id: str) -> tuple[bytes, int]:
    # not streamed: docker-py's streamed exec leaks its upgraded socket; a check's output is
    # small, and the timeout bounds how long it can grow
    with engine_call("read an exec's output"):
        data: bytes = api.exec_start(exec_id)
        code = api.exec_inspect(exec_id).get("ExitCode")
    return data[:EXEC_READ_LIMIT], 127 if code is None else int(code)


def kill_exec(api: Any, exec_id: str) -> None:
    """Kill a running exec by its host pid (only reachable when the engine is local)."""
    with contextlib.suppress(Exception):
        pid = int(api.exec_inspect(exec_id).get("Pid") or 0)
        if pid > 0:
            os.kill(pid, signal.SIGKILL)
