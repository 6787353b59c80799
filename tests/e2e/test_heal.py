"""Replace, don't repair (law 8): the agent replaces crashed instances from the same release."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from typing import Any

import pytest

from tests.e2e.conftest import Fleet, Load


def wait_for(predicate: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def kill_instance(fleet: Fleet, instance_id: str) -> None:
    """kill -9 the instance's sandbox (its init and so every process in it)."""
    pid_file = next(fleet.home.rglob(f"instances/**/{instance_id}/pid"))
    pids = json.loads(pid_file.read_text())
    os.kill(int(pids["sandbox"]["pid"]), signal.SIGKILL)


def events(fleet: Fleet) -> list[dict[str, Any]]:
    return json.loads(fleet.ok("events", "--json", "--limit", "500").stdout)["events"]  # type: ignore[no-any-return]


def test_killed_instance_is_replaced_from_the_same_release_under_load(fleet: Fleet) -> None:
    fleet.ok("apply")
    before = {i["id"]: i for i in fleet.status()["services"][0]["instances"]}
    victim = sorted(before)[1]
    with Load(fleet.url, clients=4, max_seconds=30) as load:
        time.sleep(0.5)
        kill_instance(fleet, victim)

        def replaced() -> bool:
            web = fleet.status()["services"][0]
            ids = {i["id"] for i in web["instances"]}
            return victim not in ids and web["ready"] == 3

        wait_for(replaced)
        time.sleep(0.5)
    web = fleet.status()["services"][0]
    assert web["release"] == "r1"
    assert {i["release"] for i in web["instances"]} == {"r1"}
    assert sorted(i["serial"] for i in web["instances"]) == [0, 1, 2]
    new = {i["id"] for i in web["instances"]} - set(before)
    assert len(new) == 1 and before[victim]["serial"] == next(
        i["serial"] for i in web["instances"] if i["id"] in new
    )
    # requests in flight on the killed instance are retried by the router (GET)
    assert load.failed == 0, dict(load.errors)
    kinds = [e["kind"] for e in events(fleet)]
    assert "instance.exited" in kinds and "heal.succeeded" in kinds


def test_crash_looping_release_backs_off(fleet: Fleet) -> None:
    # every instance serves, passes its health check, then dies a moment later
    fleet.edit_spec(
        'cmd: ["/usr/bin/python3", "/app/server.py"]',
        'cmd: ["/usr/bin/timeout", "1", "/usr/bin/python3", "/app/server.py"]',
    )
    fleet.edit_spec("replicas: 3", "replicas: 1")
    fleet.ok("apply")

    def backoffs() -> list[dict[str, Any]]:
        return [e for e in events(fleet) if e["kind"] == "heal.backoff"]

    wait_for(lambda: len(backoffs()) >= 2, timeout=30)
    found = backoffs()
    delays = [e["data"]["delay"] for e in found]
    assert delays[1] > delays[0]  # exponential, not spinning


@pytest.mark.slow  # over ~5 s: in `make test`, not the fast subset
def test_instances_are_healed_while_a_canary_waits_for_promotion(fleet: Fleet) -> None:
    fleet.edit_spec(
        """      type: rolling
      max_surge: 1
      max_unavailable: 0""",
        """      type: canary
      steps:
        - set_weight: 34
        - pause: {}""",
    )
    fleet.ok("apply")
    fleet.set_version("v2")
    waiting = fleet.run("apply")
    assert waiting.returncode == 0 and "rollout promote web" in waiting.stdout
    instances = fleet.status()["services"][0]["instances"]
    old = next(i["id"] for i in instances if i["release"] == "r1")
    canary = next(i["id"] for i in instances if i["release"] == "r2")
    kill_instance(fleet, old)
    kill_instance(fleet, canary)

    def healed() -> bool:
        web = fleet.status()["services"][0]
        ids = {i["id"] for i in web["instances"]}
        return old not in ids and canary not in ids and web["ready"] == len(instances)

    wait_for(healed)
    after = fleet.status()["services"][0]["instances"]
    # the roll-out's counts are untouched: as many of each release as before
    assert sorted(i["release"] for i in after) == sorted(i["release"] for i in instances)
    fleet.ok("rollout", "promote", "web")
    wait_for(lambda: fleet.status()["services"][0]["release"] == "r2")
    assert {fleet.get()["version"] for _ in range(6)} == {"v2"}


@pytest.mark.slow  # over ~8 s: in `make test`, not the fast subset
def test_an_instance_that_stops_answering_is_replaced(fleet: Fleet) -> None:
    fleet.ok("apply")
    victim = fleet.status()["services"][0]["instances"][0]["id"]
    pid_file = next(fleet.home.rglob(f"instances/**/{victim}/pid"))
    sandbox = json.loads(pid_file.read_text())["sandbox"]["pid"]
    import psutil

    app = [
        p
        for p in psutil.Process(sandbox).children(recursive=True)
        if "server.py" in " ".join(p.cmdline())
    ]
    for process in app:
        process.suspend()  # alive but deaf: only a liveness probe notices
    try:
        wait_for(
            lambda: victim not in {i["id"] for i in fleet.status()["services"][0]["instances"]}
        )
    finally:
        for process in app:
            with contextlib.suppress(psutil.Error):
                process.resume()
    wait_for(lambda: fleet.status()["services"][0]["ready"] == 3)
    assert any(e["kind"] == "instance.unhealthy" and victim in e["message"] for e in events(fleet))


def test_a_tampered_image_file_replaces_every_instance_from_verified_content(
    fleet: Fleet,
) -> None:
    fleet.ok("apply")
    before = {i["id"] for i in fleet.status()["services"][0]["instances"]}
    version = next(p for p in (fleet.home / "rootfs").glob("*/app/VERSION"))
    version.write_text("v9\n")  # one byte changed, as root on the host

    def all_replaced() -> bool:
        web = fleet.status()["services"][0]
        return not before & {i["id"] for i in web["instances"]} and web["ready"] == 3

    wait_for(all_replaced, timeout=40)
    found = [e for e in events(fleet) if e["kind"] == "instance.tampered"]
    assert {e["data"]["instance"] for e in found} == before
    assert all("/app/VERSION" in e["message"] for e in found)
    # the fresh instances run from a root made anew from the blobs: the original content
    assert {fleet.get()["version"] for _ in range(9)} == {"v1"}
    assert fleet.status()["services"][0]["release"] == "r1"
