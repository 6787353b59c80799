"""The executor tells a driver with its own traffic layer (`SplitsTraffic`: kubernetes' HTTPRoute)
each split the router gets; a refusal is an event, never a failed roll-out."""

from __future__ import annotations

import pytest

from corral.drivers.memory import InMemoryDriver
from corral.drivers.protocol import SplitsTraffic
from corral.errors import DriverError
from corral.rollout.executor import ServiceTarget, shares
from corral.router.protocol import Backend
from tests.unit.test_executor import TARGET, Harness


def backends(*spec: tuple[str, int]) -> list[Backend]:
    return [Backend(f"i{n}", release, "h", n, weight) for n, (release, weight) in enumerate(spec)]


def test_shares_are_percents_of_the_routed_weight_per_release() -> None:
    assert shares(backends(("r1", 1), ("r1", 1), ("r2", 1)), {1, 2}) == {1: 67, 2: 33}
    # a canary at 10 % with 1 new and 3 old: weigh() gives 10·3 and 90·1 each
    assert shares(backends(("r2", 30), ("r1", 90), ("r1", 90), ("r1", 90)), {1, 2}) == {
        1: 90,
        2: 10,
    }
    assert shares(backends(("r1", 1)), {1, 2}) == {1: 100, 2: 0}  # r2 live, nothing routed
    assert shares([], {1}) == {1: 0}  # nothing ready: nothing to split
    thirds = shares(backends(("r1", 1), ("r2", 1), ("r3", 1)), {1, 2, 3})
    assert sum(thirds.values()) == 100 and sorted(thirds.values()) == [33, 33, 34]


class SplittingDriver(InMemoryDriver):
    def __init__(self) -> None:
        super().__init__("p", "dev")
        self.splits: list[tuple[str, dict[int, int]]] = []
        self.refuse = False

    async def set_weights(self, service: str, weights: dict[int, int]) -> None:
        if self.refuse:
            raise DriverError("the Kubernetes API refused to create HTTPRoute p-dev-web")
        if not self.splits or self.splits[-1] != (service, weights):
            self.splits.append((service, dict(weights)))


def driver(harness: Harness) -> SplittingDriver:
    made = harness.executor.driver
    assert isinstance(made, SplittingDriver)
    return made


def splits(harness: Harness) -> list[tuple[str, dict[int, int]]]:
    return driver(harness).splits


@pytest.fixture
async def harness() -> Harness:
    """test_executor's harness, its driver one with a traffic layer of its own."""
    made = Harness()
    made.driver = made.executor.driver = SplittingDriver()
    await made.router.open_route("web", "127.0.0.1", 8000)
    return made


async def test_each_split_of_a_roll_out_reaches_the_driver(harness: Harness) -> None:
    assert isinstance(harness.executor.driver, SplitsTraffic)
    assert not isinstance(InMemoryDriver(), SplitsTraffic)  # the capability is optional
    await harness.executor.converge(TARGET, harness.release("sha256:1"), None)
    assert splits(harness)[-1] == ("web", {1: 100})
    splits(harness).clear()
    await harness.executor.converge(
        TARGET, harness.release("sha256:2"), harness.release("sha256:1")
    )
    seen = [weights for _, weights in splits(harness)]
    # surge one, retire one (max_surge 1, 3 replicas): the share of ready instances each time
    assert seen == [
        {1: 100, 2: 0},  # r2's first instance is live, not ready yet: its Service, no traffic
        {1: 75, 2: 25},
        {1: 67, 2: 33},
        {1: 50, 2: 50},
        {1: 33, 2: 67},
        {1: 25, 2: 75},
        {2: 100},  # r1 retired: it leaves the split
    ]

    # destroy: every instance retired, so the service's route goes (the agent then closes
    # its router route without another sync)
    await harness.executor.retire_all(ServiceTarget("web", 0, TARGET.settings), "destroyed")
    assert splits(harness)[-1] == ("web", {})


async def test_a_refused_split_is_an_event_and_the_roll_out_goes_on(harness: Harness) -> None:
    driver(harness).refuse = True
    result = await harness.executor.converge(TARGET, harness.release("sha256:1"), None)
    assert result.ok
    failed = [message for kind, message in harness.events if kind == "route.split_failed"]
    assert failed and "web: the engine's route was not set to r1 100%" in failed[-1]
    assert "refused to create HTTPRoute" in failed[-1]


async def test_a_blue_green_switch_reaches_the_driver_at_once(harness: Harness) -> None:
    settings = {
        **TARGET.settings,
        "strategy": {"type": "blue_green", "auto_promote_after": 0.01, "scale_down_delay": 0.01},
    }
    target = ServiceTarget("web", 2, settings)
    await harness.executor.converge(target, harness.release("sha256:1"), None)
    splits(harness).clear()
    await harness.executor.converge(
        target, harness.release("sha256:2"), harness.release("sha256:1")
    )
    seen = [weights for _, weights in splits(harness)]
    # the green set waits at 0 % (previewed), then takes everything in one write; blue,
    # kept for scale_down_delay, leaves the route when it is stopped
    assert seen == [{1: 100}, {1: 100, 2: 0}, {1: 0, 2: 100}, {2: 100}]
