"""The auditor and the self-healing on a real Docker engine (law 8): a container's files
changed from the host (through its overlay directories) → replaced with the file named; an
image layer changed on disk → reported plainly, shared by every container, not replaced; a
container recreated by hand with other env, or `docker update`d → drifted → replaced; a
container that only wears corral's labels → reported as a stranger, never touched."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_docker import NO_DOCKER, DockerFleet
from tests.e2e.test_docker_heal import dfleet, recorded_containers, status
from tests.e2e.test_heal import wait_for

__all__ = ["dfleet"]  # the fixture, imported

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.docker,
    pytest.mark.skipif(bool(NO_DOCKER), reason=str(NO_DOCKER)),
]


def events(fleet: DockerFleet) -> list[dict[str, Any]]:
    return json.loads(fleet.ok("events", "--json", "--limit", "500"))["events"]  # type: ignore[no-any-return]


def audit(fleet: DockerFleet) -> tuple[int, dict[str, Any]]:
    result = fleet.run("audit", "--json")
    return result.returncode, json.loads(result.stdout)


def flip_byte(path: Path) -> None:
    """Change one byte in place (same inode), as root on the host."""
    with path.open("r+b") as handle:
        first = handle.read(1)
        handle.seek(0)
        handle.write(bytes([first[0] ^ 0x01]))


def test_tampered_container_is_replaced_and_a_tampered_layer_is_reported(
    dfleet: DockerFleet,
) -> None:
    fleet = dfleet
    # a file of this test's own, so that its image layer is shared with no other test run
    (fleet.dir / "rootfs" / "app" / "token").write_text(fleet.project)
    fleet.ok("apply")
    code, report = audit(fleet)
    assert code == 0, report
    assert {i["status"] for i in report["instances"]} == {"clean"}

    victim = sorted(status(fleet)["instances"], key=lambda i: i["id"])[0]["id"]
    cid = recorded_containers(fleet)[victim]
    data = fleet.client.api.inspect_container(cid)["GraphDriver"]["Data"]
    flip_byte(Path(data["MergedDir"]) / "app" / "VERSION")  # copied up into its own layer

    def replaced() -> bool:
        now = status(fleet)
        return victim not in {i["id"] for i in now["instances"]} and now["ready"] == 2

    wait_for(replaced, timeout=40)
    tampered = [
        e
        for e in events(fleet)
        if e["kind"] == "instance.tampered" and e["data"]["instance"] == victim
    ]
    assert tampered and "/app/VERSION" in tampered[0]["data"]["evidence"]
    assert fleet.versions_served() == {"v1"}

    # an image layer itself: every container of the image sees it, a fresh one would too
    some = next(iter(recorded_containers(fleet).values()))
    lower = fleet.client.api.inspect_container(some)["GraphDriver"]["Data"]["LowerDir"]
    layer = next(d for d in lower.split(":") if not d.endswith("-init/diff"))
    flip_byte(Path(layer) / "app" / "token")
    code, report = audit(fleet)
    assert code == 4, report
    running = [i for i in report["instances"] if i["status"] != "skipped"]
    assert len(running) == 2
    for instance in running:
        assert [f["path"] for f in instance["layer_files"]] == ["/app/token"]
        assert instance["files"] == [] and len(instance["shared_with"]) == 1
    before = {i["id"] for i in status(fleet)["instances"]}

    def reported() -> bool:
        return any(e["kind"] == "image.layer_tampered" for e in events(fleet))

    wait_for(reported, timeout=30)
    said = [e for e in events(fleet) if e["kind"] == "image.layer_tampered"]
    assert len(said) == 1 and "/app/token" in said[0]["message"]
    assert "would inherit" in said[0]["message"]
    assert {i["id"] for i in status(fleet)["instances"]} == before  # not replaced in a loop


def test_drifted_containers_are_replaced_and_strangers_left_alone(dfleet: DockerFleet) -> None:
    fleet = dfleet
    (fleet.dir / "rootfs" / "app" / "token").write_text(fleet.project)
    fleet.ok("apply")
    api = fleet.client.api
    first, second = sorted(status(fleet)["instances"], key=lambda i: i["id"])
    owned = recorded_containers(fleet)
    made: list[str] = []
    try:
        # a stranger: corral's labels, not started by corral
        image = api.inspect_container(owned[first["id"]])["Config"]["Image"]
        stranger = api.create_container(
            image,
            command=["/bin/sleep", "300"],
            labels={"io.corral.project": fleet.project, "io.corral.environment": "dev"},
            host_config=api.create_host_config(init=True),
        )["Id"]
        made.append(stranger)
        api.start(stranger)

        # `docker update` on one of corral's own: same container, other host config
        api.update_container(owned[first["id"]], restart_policy={"Name": "always"})
        # recreated by hand under the same name, with other env
        seen = api.inspect_container(owned[second["id"]])
        name = seen["Name"].lstrip("/")
        api.rename(owned[second["id"]], f"{name}-old")
        impostor = api.create_container(
            seen["Config"]["Image"],
            command=seen["Config"]["Cmd"],
            name=name,
            labels=seen["Config"]["Labels"],
            environment=[*seen["Config"]["Env"], "STRANGER=1"],
            host_config=api.create_host_config(init=True),
        )["Id"]
        made.append(impostor)
        api.start(impostor)
        api.remove_container(owned[second["id"]], force=True)

        def healed() -> bool:
            now = status(fleet)
            ids = {i["id"] for i in now["instances"]}
            return not ids & {first["id"], second["id"]} and now["ready"] == 2

        wait_for(healed, timeout=45)
        drifted = {
            e["data"]["instance"]: e["message"]
            for e in events(fleet)
            if e["kind"] == "instance.drifted"
        }
        assert "restart policy always" in drifted[first["id"]]
        assert "recreated outside corral" in drifted[second["id"]]
        assert "STRANGER added (hmac" in drifted[second["id"]]

        def reported() -> bool:
            return {
                s["container"]
                for s in json.loads(fleet.ok("status", "--json")).get("strangers", [])
            } == {
                stranger,
                impostor,
            }

        wait_for(reported, timeout=20)
        assert "stranger" in fleet.ok("status")
        said = [e for e in events(fleet) if e["kind"] == "instance.stranger"]
        assert sorted(e["data"]["container"] for e in said) == sorted([stranger, impostor])
        code, report = audit(fleet)
        assert code == 0, report
        assert {s["container"] for s in report["strangers"]} == {stranger, impostor}
        for cid in (stranger, impostor):  # never touched
            assert api.inspect_container(cid)["State"]["Running"]
        assert fleet.versions_served() == {"v1"}
    finally:
        for cid in made:
            with contextlib.suppress(Exception):
                api.remove_container(cid, force=True)
