"""The supervisor judges only what the driver looked at: an instance started while the driver
was observing (a slow engine makes that window wide) is not taken for dead."""

from __future__ import annotations

import time
from pathlib import Path

from corral.agent.controller import Agent
from corral.drivers.memory import InMemoryDriver
from corral.drivers.protocol import LaunchSpec, ObservedInstance
from corral.paths import Home
from corral.router.memory import InMemoryRouter
from corral.state.memory import InMemoryStateStore
from corral.state.records import InstanceRecord, InstanceState


class SlowObserver(InMemoryDriver):
    """Takes its snapshot, then (while the engine is still answering) a start completes."""

    def __init__(self, store: InMemoryStateStore) -> None:
        super().__init__("p", "dev")
        self.store = store

    async def observe(self) -> list[ObservedInstance]:
        snapshot = await super().observe()
        if self.store.get_instance("web-2") is not None:
            return snapshot
        started = await self.start(
            LaunchSpec("web-2", "p", "dev", "web", 2, 1, "sha256:" + "a" * 64, None)
        )
        self.store.put_instance(  # what the executor records once start returns
            InstanceRecord(
                id="web-2", service="web", serial=2, release=1, state=InstanceState.RUNNING,
                address=started.address, created_at=time.time(), updated_at=time.time(),
            )
        )  # fmt: skip
        return snapshot


async def test_an_instance_started_during_an_observation_is_not_taken_for_dead(
    tmp_path: Path,
) -> None:
    store = InMemoryStateStore("p/dev")
    store.get_or_create_release("web", "sha256:" + "a" * 64, "sha256:c1", {"v": 1}, "alice")
    agent = Agent(
        home=Home(tmp_path),
        project="p",
        environment="dev",
        store=store,
        driver=SlowObserver(store),
        router=InMemoryRouter(),
    )
    await agent._observe_once()
    assert "web-2" not in agent.book.dead
    assert not [e for e in store.list_events() if e.kind == "instance.exited"]
    await agent._observe_once()  # the next look sees it running
    assert "web-2" not in agent.book.dead
