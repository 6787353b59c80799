"""The agent's side of instances an engine moves by itself (src/corral/agent/moves.py), with the
in-memory driver standing in for Swarm: a task it brings back (PENDING) leaves routing at once,
comes back at a new address as `instance.moved` (old → new), and is routed again only after
its probe; one away longer than its start timeout is dead (then replaced by the heal)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from corral.agent.controller import Agent
from corral.drivers.memory import InMemoryDriver
from corral.drivers.protocol import LaunchSpec
from corral.paths import Home
from corral.router.memory import InMemoryRouter
from corral.state.memory import InMemoryStateStore
from corral.state.records import InstanceRecord, InstanceState

DIGEST = "sha256:" + "a" * 64
READY_FILE = "/tmp/ready"


async def fleet(tmp_path: Path, start_timeout: float = 30.0) -> tuple[Agent, InMemoryDriver]:
    """An agent with one routed instance web-1, probed by an exec check (the driver's files)."""
    store = InMemoryStateStore("p/dev")
    health = {"exec": ["test", "-f", READY_FILE], "interval": 0.01, "timeout": 1.0}
    config = {"health": health | {"start_timeout": start_timeout}}
    store.get_or_create_release("web", DIGEST, "sha256:c1", config, "alice")
    driver = InMemoryDriver("p", "dev")
    router = InMemoryRouter()
    agent = Agent(
        home=Home(tmp_path),
        project="p",
        environment="dev",
        store=store,
        driver=driver,
        router=router,
    )
    started = await driver.start(LaunchSpec("web-1", "p", "dev", "web", 0, 1, DIGEST, None))
    driver.write_file("web-1", READY_FILE)
    before = time.time() - 60  # recorded before the supervisor's first look
    store.put_instance(
        InstanceRecord(
            id="web-1", service="web", serial=0, release=1, state=InstanceState.RUNNING,
            address=started.address, created_at=before, updated_at=before,
        )
    )  # fmt: skip
    await router.open_route("web", "127.0.0.1", 0)
    agent.book.mark_ready("web-1", "ok")
    await agent.executor(None).sync_routes("web")
    return agent, driver


def routed(agent: Agent) -> list[str]:
    router = agent.router
    assert isinstance(router, InMemoryRouter)
    return [f"{b.host}:{b.port}" for b in router.routed("web")]


def kinds(agent: Agent) -> list[str]:
    return [e.kind for e in agent.store.list_events()]


async def test_a_moved_instance_leaves_routing_at_once_and_returns_at_its_new_address(
    tmp_path: Path,
) -> None:
    agent, driver = await fleet(tmp_path)
    old = routed(agent)
    assert len(old) == 1
    driver.away("web-1", exit_code=137)  # Swarm restarts the crashed task elsewhere
    await agent._observe_once()
    assert routed(agent) == []  # out of routing before the engine has it back
    away = [e for e in agent.store.list_events() if e.kind == "instance.away"]
    assert len(away) == 1 and away[0].data["address"] == old[0]
    record = agent.store.get_instance("web-1")
    assert record is not None and record.address is None  # nothing probes the old address
    await agent._observe_once()  # still away: no second event, still not routed
    assert kinds(agent).count("instance.away") == 1 and routed(agent) == []

    driver.remove_file("web-1", READY_FILE)  # running again, not ready yet
    new = driver.reschedule("web-1")
    await agent._observe_once()
    moved = [e for e in agent.store.list_events() if e.kind == "instance.moved"]
    assert len(moved) == 1
    assert (moved[0].data["from_address"], moved[0].data["to_address"]) == (old[0], new)
    await asyncio.sleep(0.1)
    assert routed(agent) == []  # not routed before its probe passes
    driver.write_file("web-1", READY_FILE)
    for _ in range(200):  # bounded: the probe runs every 10 ms
        if routed(agent):
            break
        await asyncio.sleep(0.01)
    assert routed(agent) == [new]
    assert "web-1" not in agent.book.dead
    agent.moves.close()


async def test_an_instance_away_longer_than_its_start_timeout_is_dead(tmp_path: Path) -> None:
    agent, driver = await fleet(tmp_path, start_timeout=0.05)
    driver.away("web-1")  # its node lost; Swarm has not placed it anywhere yet
    await agent._observe_once()
    assert routed(agent) == [] and "web-1" not in agent.book.dead
    await asyncio.sleep(0.1)
    await agent._observe_once()
    assert "web-1" in agent.book.dead  # the supervisor's heal replaces it (law 8)
    assert "instance.exited" in kinds(agent)
    assert routed(agent) == []
    agent.moves.close()


async def test_a_task_away_when_the_agent_restarts_is_followed_by_its_successor(
    tmp_path: Path,
) -> None:
    """The successor (`agent restart`, or a killed agent) finds the record without an address
    (law 7: cleared before anything else): it follows the move on, never replaces it."""
    agent, driver = await fleet(tmp_path)
    driver.away("web-1", exit_code=137)
    await agent._observe_once()
    agent.moves.close()
    successor = Agent(
        home=Home(tmp_path),
        project="p",
        environment="dev",
        store=agent.store,
        driver=driver,
        router=agent.router,
    )
    await successor._observe_once()  # still away: not dead, not announced twice
    assert "web-1" not in successor.book.dead
    assert kinds(successor).count("instance.away") == 1

    new = driver.reschedule("web-1")
    await successor._observe_once()
    moved = [e for e in successor.store.list_events() if e.kind == "instance.moved"]
    assert len(moved) == 1 and moved[0].data["to_address"] == new
    for _ in range(200):  # bounded: the probe runs every 10 ms
        if routed(successor) == [new]:
            break
        await asyncio.sleep(0.01)
    assert routed(successor) == [new]
    assert "web-1" not in successor.book.dead and "instance.exited" not in kinds(successor)
    successor.moves.close()
