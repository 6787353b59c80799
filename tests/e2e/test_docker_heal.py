"""Law 8 and law 7 on a real Docker engine: a container removed by hand is replaced from its
release while a stranger wearing corral's labels is left alone; a `kill -9` of the agent
mid roll-out is adopted and converged with no orphan and no duplicate container."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_docker import NO_DOCKER, DockerFleet, docker_fleet
from tests.e2e.test_heal import wait_for

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.docker,
    pytest.mark.skipif(bool(NO_DOCKER), reason=str(NO_DOCKER)),
]


@pytest.fixture
def dfleet() -> Iterator[DockerFleet]:
    yield from docker_fleet()


def status(fleet: DockerFleet) -> dict[str, Any]:
    return json.loads(fleet.ok("status", "--json"))["services"][0]  # type: ignore[no-any-return]


def recorded_containers(fleet: DockerFleet) -> dict[str, str]:
    """instance id → container id, as the driver recorded them (what corral owns)."""
    owned = {}
    for path in fleet.home.rglob("container.json"):
        record = json.loads(path.read_text())
        if record.get("container_id"):
            owned[str(record["instance_id"])] = str(record["container_id"])
    return owned


def running(fleet: DockerFleet) -> dict[str, dict[str, Any]]:
    return {str(c["Id"]): c for c in fleet.containers() if c["State"] == "running"}


def test_removed_container_is_replaced_and_a_labelled_stranger_is_left_alone(
    dfleet: DockerFleet,
) -> None:
    fleet = dfleet
    fleet.ok("apply")
    web = status(fleet)
    assert web["ready"] == 2
    victim = sorted(web["instances"], key=lambda i: i["id"])[0]
    owned = recorded_containers(fleet)
    victim_cid = owned[victim["id"]]
    seen = fleet.client.api.inspect_container(victim_cid)

    fleet.client.api.remove_container(victim_cid, force=True)  # `docker rm -f` by hand
    # a stranger: the same image, name and labels as the removed one, other env and command
    stranger = fleet.client.api.create_container(
        seen["Config"]["Image"],
        command=["/bin/sleep", "300"],
        name=seen["Name"].lstrip("/"),
        labels=seen["Config"]["Labels"],
        environment={"STRANGER": "1"},
        host_config=fleet.client.api.create_host_config(init=True),
    )["Id"]
    try:
        fleet.client.api.start(stranger)

        def healed() -> bool:
            now = status(fleet)
            ids = {i["id"] for i in now["instances"]}
            return victim["id"] not in ids and now["ready"] == 2

        wait_for(healed, timeout=40)
        time.sleep(0.6)  # a few more ticks: the stranger must still be left alone
        web = status(fleet)
        assert {i["release"] for i in web["instances"]} == {"r1"}
        replacement = next(i for i in web["instances"] if i["id"] not in owned)
        assert replacement["serial"] == victim["serial"]  # same release, same serial
        assert fleet.versions_served() == {"v1"}
        assert fleet.client.api.inspect_container(stranger)["State"]["Running"]
        assert stranger not in recorded_containers(fleet).values()  # never adopted
        events = json.loads(fleet.ok("events", "--json", "--limit", "500"))["events"]
        assert any(
            # drifted when the tick sees the stranger already holding its name
            e["kind"] in ("instance.exited", "instance.drifted")
            and e["data"].get("instance") == victim["id"]
            for e in events
        )

        fleet.ok("destroy")  # destroy takes corral's own containers, not the stranger
        assert fleet.client.api.inspect_container(stranger)["State"]["Running"]
        assert set(running(fleet)) == {stranger}
    finally:
        with contextlib.suppress(Exception):
            fleet.client.api.remove_container(stranger, force=True)


def test_agent_killed_mid_rollout_on_docker_is_adopted_and_converged(dfleet: DockerFleet) -> None:
    fleet = dfleet
    fleet.ok("apply")
    fleet.ok("agent", "stop")  # the next agent starts with the fault armed
    fleet.set_version("v2")
    fleet.env["CORRAL_FAULT"] = "instance.started:1"  # first v2 container started, journaled
    try:
        crashed = fleet.run("apply")
    finally:
        fleet.env.pop("CORRAL_FAULT")
    assert crashed.returncode == 1, crashed.stdout + crashed.stderr  # the agent died under it
    started_before_crash = {
        cid for cid, c in running(fleet).items() if c["Labels"].get("io.corral.release") == "r2"
    }
    assert len(started_before_crash) == 1

    fleet.ok("apply")  # a new agent: recovers from the journal, then converges
    web = status(fleet)
    assert web["release"] == "r2" and web["ready"] == 2
    assert {i["release"] for i in web["instances"]} == {"r2"}
    owned = recorded_containers(fleet)
    live_ids = {i["id"] for i in web["instances"]}
    assert set(owned) >= live_ids
    final = running(fleet)
    # exactly the recorded containers run: no orphan, no duplicate serial
    assert set(final) == {owned[i] for i in live_ids}
    assert sorted(i["serial"] for i in web["instances"]) == [0, 1]
    assert started_before_crash <= set(final)  # adopted, not started again
    assert fleet.versions_served() == {"v2"}
    assert not [c for c in fleet.containers() if c["State"] != "running"]  # nothing left over
