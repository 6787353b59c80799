"""The executor against in-memory driver, router and store: fast logic, no process or socket.

The same executor runs end to end against real processes in tests/e2e.
"""

from __future__ import annotations

from typing import Any

import pytest

from corral.drivers.memory import InMemoryDriver
from corral.rollout.book import InstanceBook
from corral.rollout.executor import Executor, ServiceTarget
from corral.rollout.health import HealthCheck, ProbeResult
from corral.router.memory import InMemoryRouter
from corral.state.memory import InMemoryStateStore
from corral.state.records import InstanceState, Release

CONFIG: dict[str, Any] = {
    "v": 1,
    "command": None,
    "env": {},
    "port": 8080,
    "health": {"http": {"path": "/healthz", "status": 200}},
}


class Harness:
    def __init__(self, unhealthy: set[int] | None = None) -> None:
        self.store = InMemoryStateStore("p/dev")
        self.driver = InMemoryDriver("p", "dev")
        self.router = InMemoryRouter()
        self.events: list[tuple[str, str]] = []
        self.unhealthy = unhealthy or set()
        self.routed_snapshots: list[set[str]] = []
        self.executor = Executor(
            store=self.store,
            driver=self.driver,
            router=self.router,
            book=InstanceBook(),
            project="p",
            environment="dev",
            emit=self.emit,
            ready_check=self.ready,
        )

    def emit(self, kind: str, message: str, **_: Any) -> None:
        self.events.append((kind, message))

    async def ready(self, address: str, check: HealthCheck) -> ProbeResult:
        record = next(r for r in self.store.list_instances() if r.address == address)
        if record.release in self.unhealthy:
            return ProbeResult(False, "answered 500")
        return ProbeResult(True, "answered 200")

    def release(self, digest: str) -> Release:
        return self.store.get_or_create_release("web", digest, "sha256:c", CONFIG, "test")

    def live(self) -> list[tuple[int, int]]:
        return sorted((r.serial, r.release) for r in self.store.list_instances("web"))


TARGET = ServiceTarget(
    "web",
    3,
    {
        "strategy": {"max_surge": 1, "max_unavailable": 0},
        "stop_grace": 0.1,
        "drain_timeout": 0.1,
        "route": {"port": 8000},
    },
)


@pytest.fixture
async def harness() -> Harness:
    h = Harness()
    await h.router.open_route("web", "127.0.0.1", 8000)
    return h


async def test_create_then_roll_routes_only_ready_instances_and_drains_before_stop(
    harness: Harness,
) -> None:
    r1 = harness.release("sha256:1")
    result = await harness.executor.converge(TARGET, r1, None)
    assert result.ok and harness.live() == [(0, 1), (1, 1), (2, 1)]
    assert len(harness.router.routed("web")) == 3
    r2 = harness.release("sha256:2")
    result = await harness.executor.converge(TARGET, r2, r1)
    assert result.ok and harness.live() == [(0, 2), (1, 2), (2, 2)]
    assert {b.release for b in harness.router.routed("web")} == {"r2"}
    # law 6: every stop of an old instance came after it was drained
    drained: set[str] = set()
    for kind, _, ids in harness.router.history:
        if kind == "drain":
            drained.update(ids)
    stopped = [i for call, i in harness.driver.calls if call == "stop"]
    assert stopped and set(stopped) <= drained
    # law 1: no instance was restarted or changed: every start is a fresh id
    started = [i for call, i in harness.driver.calls if call == "start"]
    assert len(started) == len(set(started)) == 6


async def test_unhealthy_release_rolls_back_to_previous(harness: Harness) -> None:
    r1 = harness.release("sha256:1")
    await harness.executor.converge(TARGET, r1, None)
    harness.unhealthy = {2}
    r2 = harness.release("sha256:2")
    result = await harness.executor.converge(TARGET, r2, r1)
    assert not result.ok and result.rolled_back_to == 1
    assert harness.live() == [(0, 1), (1, 1), (2, 1)]
    assert "rollout.failed" in [k for k, _ in harness.events]
    # the unhealthy instance never received traffic (law 6)
    for kind, _, backends in harness.router.history:
        if kind == "set_backends":
            assert all(b.release == "r1" for b in backends)


async def test_start_failure_rolls_back(harness: Harness) -> None:
    r1 = harness.release("sha256:1")
    await harness.executor.converge(TARGET, r1, None)
    harness.driver.fail_next_start("exec failed")
    r2 = harness.release("sha256:2")
    result = await harness.executor.converge(TARGET, r2, r1)
    assert not result.ok and "could not start" in result.reason
    assert harness.live() == [(0, 1), (1, 1), (2, 1)]
    failed = [
        r
        for r in harness.store.list_instances("web", include_gone=True)
        if r.state is InstanceState.FAILED
    ]
    assert len(failed) == 1


async def test_instance_is_recorded_before_the_driver_starts_it(harness: Harness) -> None:
    """Law 7: a crash right after the record leaves a PENDING instance, never an unknown one."""

    class Crash(Exception):
        pass

    def fault(point: str) -> None:
        if point == "instance.pending":
            raise Crash

    harness.executor.fault = fault
    with pytest.raises(Crash):
        await harness.executor.converge(TARGET, harness.release("sha256:1"), None)
    pending = [r for r in harness.store.list_instances("web") if r.state is InstanceState.PENDING]
    assert pending and not harness.driver.calls


async def test_first_release_that_fails_leaves_nothing_running(harness: Harness) -> None:
    harness.unhealthy = {1}
    result = await harness.executor.converge(TARGET, harness.release("sha256:1"), None)
    assert not result.ok and result.rolled_back_to is None
    assert harness.live() == []


async def test_min_ready_seconds_checks_again_before_an_instance_counts(harness: Harness) -> None:
    calls: list[str] = []
    original = harness.ready

    async def counting(address: str, check: HealthCheck) -> ProbeResult:
        calls.append(address)
        return await original(address, check)

    harness.executor.ready_check = counting
    target = ServiceTarget(
        "web",
        2,
        {
            **TARGET.settings,
            "strategy": {"max_surge": 1, "max_unavailable": 0, "min_ready_seconds": 0.01},
        },
    )
    result = await harness.executor.converge(target, harness.release("sha256:1"), None)
    assert result.ok
    assert len(calls) == 4  # each of the 2 instances probed, then probed again after the wait
