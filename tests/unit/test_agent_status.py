"""The agent's status over a real SQLite store: what it shows, and that it reads the store a
fixed number of times whatever the number of services (the dashboard polls it every second).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event

from corral.agent.controller import Agent
from corral.drivers.memory import InMemoryDriver
from corral.paths import Home
from corral.router.memory import InMemoryRouter
from corral.state.records import InstanceRecord, InstanceState, ServiceRecord
from corral.state.sql import SqlStateStore


def digest(service: str, number: int) -> str:
    return f"sha256:{service}-{number}"


def fill(store: SqlStateStore, services: int) -> None:
    """Each service mid roll-out: r2 current and running, one instance still on r1."""
    for n in range(services):
        name = f"svc{n:03d}"
        for number in (1, 2):
            store.get_or_create_release(name, digest(name, number), f"c{number}", {}, "t")
        store.put_service(ServiceRecord(name, current_release=2, replicas=2, route_port=None))
        for serial, release in ((1, 2), (2, 1)):
            instance_id = store.new_instance_id(name)
            state = InstanceState.RUNNING
            store.put_instance(InstanceRecord(instance_id, name, serial, release, state))


@pytest.fixture
def statements() -> Iterator[list[str]]:
    """Every SQL statement any engine runs while the test does."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def agent_over(tmp_path: Path, services: int) -> tuple[Agent, SqlStateStore]:
    store = SqlStateStore(f"sqlite:///{tmp_path / f'state-{services}.db'}", "p/dev")
    fill(store, services)
    agent = Agent(
        home=Home(tmp_path / f"home-{services}"),
        project="p",
        environment="dev",
        store=store,
        driver=InMemoryDriver("p", "dev"),
        router=InMemoryRouter(),
    )
    return agent, store


def test_status_shows_each_instances_own_release_and_image(tmp_path: Path) -> None:
    agent, store = agent_over(tmp_path, 2)
    try:
        view = agent.status()
    finally:
        store.close()
    first = view["services"][0]
    assert (first["name"], first["release"], first["desired"]) == ("svc000", "r2", 2)
    shown = [(i["release"], i["image"]) for i in first["instances"]]
    assert shown == [("r2", digest("svc000", 2)), ("r1", digest("svc000", 1))]
    assert [s["name"] for s in view["services"]] == ["svc000", "svc001"]


def test_status_reads_the_store_as_often_for_forty_services_as_for_two(
    tmp_path: Path, statements: list[str]
) -> None:
    counts = []
    for services in (2, 40):
        agent, store = agent_over(tmp_path, services)
        try:
            statements.clear()
            view = agent.status()
            counts.append(len([s for s in statements if s.lstrip().upper().startswith("SELECT")]))
        finally:
            store.close()
        assert len(view["services"]) == services
    assert counts[0] == counts[1], counts
