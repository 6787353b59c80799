"""Team state on PostgreSQL through the real CLI: two CORRAL_HOMEs (two machines' worth of
agents and instances) sharing one database and environment, and an unreachable database."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.e2e.conftest import Fleet, processes_of
from tests.e2e.test_crash_and_lock import wait_for


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
