"""Team state on PostgreSQL through the real CLI: two CORRAL_HOMEs (two machines' worth of
agents and instances) sharing one database and environment, and an unreachable database."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.conftest import Fleet, free_port, processes_of
from tests.e2e.test_crash_and_lock import wait_for
from tests.e2e.test_logs import SAY, SAY_LOUDLY


@pytest.fixture
def team_fleet(pg_url: str, fleet: Fleet) -> Fleet:  # the database outlives the fleet
    fleet.env["CORRAL_STATE_URL"] = pg_url
    return fleet


@pytest.fixture
def second_home(team_fleet: Fleet) -> Iterator[Fleet]:
    """The same spec and database from another CORRAL_HOME (a colleague's machine)."""
    home = Path(tempfile.mkdtemp(prefix="c2-", dir="/tmp"))
    other = replace(team_fleet, home=home, env={**team_fleet.env, "CORRAL_HOME": str(home)})
    try:
        yield other
    finally:
        other.run("agent", "stop", timeout=30)
        for process in processes_of(home):
            with contextlib.suppress(OSError, psutil.Error):
                os.killpg(process.pid, signal.SIGKILL)
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow  # over ~8 s: in `make test`, not the fast subset
def test_a_second_home_is_refused_an_environment_run_by_another_agent(
    team_fleet: Fleet, second_home: Fleet
) -> None:
    team_fleet.ok("apply", "-m", "first")
    owner = team_fleet.agent_pid()
    assert owner is not None
    # a change that holds the lock for a while: its new release never gets healthy
    team_fleet.edit_spec("http: {path: /healthz}", "http: {path: /slow-never}")
    team_fleet.edit_spec("start_timeout: 10s", "start_timeout: 4s")
    first = team_fleet.popen("apply", "-m", "ship the slow one")
    try:
        seen: dict[str, Any] = {}

        def locked() -> bool:  # the lock as home 2 sees it; kept from the read that saw it held
            seen.update(json.loads(second_home.ok("lock", "status", "--json").stdout))
            return bool(seen["locked"])

        wait_for(locked)

        refused = second_home.run("apply", "-m", "second")
    finally:
        first.communicate(timeout=60)

    assert seen["message"] == "ship the slow one", seen
    assert seen["command"].startswith("corral apply") and seen["since"] > 0, seen
    assert refused.returncode == 3, refused.stdout + refused.stderr
    said = " ".join(refused.stderr.split())
    assert f"pid {owner}" in said and str(team_fleet.home) in said, said
    assert "is run by the agent on" in said
    assert second_home.agent_pid() is None
    assert first.returncode == 1  # rolled back by its own agent, untouched by the second home
    web = team_fleet.status()["services"][0]
    assert (web["release"], web["ready"]) == ("r1", 3)


def test_an_unreachable_state_database_fails_cleanly(fleet: Fleet) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://corral:s3cret-pw@127.0.0.1:{port}/team"

    result = fleet.run("plan", extra_env={"CORRAL_STATE_URL": url})

    assert result.returncode == 1, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert f"postgresql://corral:***@127.0.0.1:{port}/team" in said
    assert "Check that the PostgreSQL server" in said
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert fleet.agent_pid() is None


def _lines_of(
    process: subprocess.Popen[str], then: Callable[[], object], wanted: Callable[[str], bool]
) -> list[str]:
    """Lines `process` prints, once `then()` is done, until one is `wanted` (at most 60 s);
    the process is then ended, whatever happened."""
    found: queue.Queue[str] = queue.Queue()

    def copy() -> None:
        for text in process.stdout or []:
            found.put(text)

    pump = threading.Thread(target=copy)
    pump.start()
    seen: list[str] = []
    deadline = time.monotonic() + 60
    try:
        then()
        while time.monotonic() < deadline and not any(map(wanted, seen)):
            with contextlib.suppress(queue.Empty):
                seen.append(found.get(timeout=1.0))
    finally:
        process.terminate()
        process.wait(timeout=30)
        pump.join(timeout=30)  # the pipe ends with the process
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    return seen


@pytest.mark.slow  # an apply, an agent restart and a dozen CLI calls: ~25 s
def test_a_second_home_reads_the_owners_logs_and_events_through_its_agent(
    team_fleet: Fleet, second_home: Fleet
) -> None:
    server = team_fleet.dir / "app" / "server.py"
    text = server.read_text().replace(SAY, SAY_LOUDLY)
    ready = (
        "    print(json.dumps({'level': 'info', 'msg': 'ready', 'id': IDENTITY['instance']}),"
        " flush=True)\n    server.serve_forever("
    )
    server.write_text(text.replace("    server.serve_forever(", ready))
    team_fleet.ok("apply", "-m", "first")
    owner = team_fleet.agent_pid()

    refused = second_home.run("logs", "web")  # A's agent serves no API beyond its socket
    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = " ".join(refused.stderr.split())
    assert f"pid {owner}" in said and str(team_fleet.home) in said, said
    assert "--ui-port" in said and "CORRAL_UI_PORT" in said, said

    events = json.loads(second_home.ok("events", "--json", "--limit", "500").stdout)["events"]
    kinds = {e["kind"] for e in events}
    assert {"apply.started", "apply.succeeded"} <= kinds, kinds  # A's trail, on the shared db

    team_fleet.ok("agent", "stop")  # the instances live on; a new agent adopts them with a UI
    unowned = second_home.ok("logs", "web")
    assert unowned.stdout == "" and "its logs are where its agent ran" in unowned.stderr
    team_fleet.env["CORRAL_UI_PORT"] = str(free_port())
    team_fleet.ok("agent", "start")
    rows = [json.loads(x) for x in second_home.ok("logs", "web", "--json").stdout.splitlines()]
    ids = {i["id"] for i in team_fleet.status()["services"][0]["instances"]}
    assert {r["instance"] for r in rows} == ids and len(ids) == 3, rows
    assert sum("(r1) listening" in r["line"] for r in rows) == 3, rows
    structured = [r for r in rows if r["fields"] is not None]
    assert sorted(r["fields"]["id"] for r in structured) == sorted(ids), rows
    assert all(r["fields"]["msg"] == "ready" and r["stream"] == "stdout" for r in structured)
    assert not list((second_home.home / "logs").rglob("*.log"))  # read from A, not from B

    witness = sorted(ids)[0]
    picked = second_home.ok(
        "logs", "web", "--json", "--field", f"id={witness}", "--release", "r1", "--since", "10m"
    ).stdout.splitlines()
    assert [json.loads(x)["instance"] for x in picked] == [witness]
    human = second_home.ok("logs", "web", "--grep", "listening|ready", "--tail", "1").stdout
    assert len(human.splitlines()) == 1 and "INFO ready id=web-" in human, human
    assert second_home.ok("logs", "web", "--release", "r9").stdout == ""

    def say() -> None:  # a line written before the follower's first read shows as well
        time.sleep(1.0)
        httpx.get(team_fleet.url + "say-to-the-colleague", timeout=10.0)  # 404, but logged

    follower = second_home.popen("logs", "web", "--json", "-f", "--grep", "said")
    lines = _lines_of(follower, say, lambda x: "say-to-the-colleague" in x)
    said_rows = [json.loads(x) for x in lines if x.strip()]
    assert [(r["stream"], r["line"]) for r in said_rows] == [
        ("stderr", "said /say-to-the-colleague")
    ], lines
