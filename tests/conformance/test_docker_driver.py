"""What only real containers show: the Docker driver against a real engine.

Every test stops what it started and removes, by id, whatever container of its harness is
left, even when it fails.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.drivers import docker_secrets
from corral.drivers.docker import LABEL, DockerDriver
from corral.drivers.protocol import Driver, ObservedInstance, ObservedState
from corral.drivers.registry import create_driver
from corral.errors import DriverError, PrerequisiteError
from corral.logs.engine_copy import ENGINE_LOG_FLOOR
from corral.logs.format import parse
from corral.logs.retention import LogPolicy
from tests.conformance.docker_harness import DockerHarness, engine_unavailable
from tests.conformance.driver_fixtures import http_get

NO_DOCKER = engine_unavailable()
pytestmark = [pytest.mark.docker, pytest.mark.skipif(bool(NO_DOCKER), reason=str(NO_DOCKER))]


@pytest.fixture
async def docker(tmp_path: Path) -> AsyncIterator[DockerHarness]:
    made = DockerHarness(tmp_path)
    try:
        yield made
    finally:
        await made.cleanup()


async def observed(driver: Driver, instance_id: str) -> ObservedInstance | None:
    return {o.instance_id: o for o in await driver.observe()}.get(instance_id)


async def log_text(driver: Driver, instance_id: str, until: str) -> str:
    """The instance's log file once it holds `until` (observe copies the engine's log)."""
    deadline = time.monotonic() + 10
    while True:
        await driver.observe()
        path = driver.log_path(instance_id)
        text = path.read_text() if path is not None and path.exists() else ""
        if until in text:  # each line stamped `TIME STREAM text` (corral.logs.format)
            assert all(parse(line).time is not None for line in text.splitlines()), text
            return "\n".join(parse(line).text for line in text.splitlines())
        assert time.monotonic() < deadline, text
        await asyncio.sleep(0.05)


async def test_container_serves_http_on_loopback_with_its_env(docker: DockerHarness) -> None:
    driver = docker.driver()
    started = await driver.start(docker.spec("web-2", serial=2, release=3))
    assert started.address is not None and started.address.startswith("127.0.0.1:")
    assert await http_get(started.address, "/healthz") == "ok"
    assert await http_get(started.address, "/") == "web-2"

    probe = docker.spec(
        "env-1",
        serial=5,
        release=3,
        command=["/bin/sh", "-c", "env; echo done; exec sleep 60"],
        env={"FROM_LAUNCH": "yes", "SHARED": "launch", "PORT": "1", "CORRAL_SERIAL": "0"},
    )
    await driver.start(probe)
    env = dict(
        line.split("=", 1)
        for line in (await log_text(driver, "env-1", "done")).splitlines()
        if "=" in line
    )
    assert env["PORT"] == "8080"  # inside the container; published elsewhere on the host
    assert (env["CORRAL_INSTANCE"], env["CORRAL_SERVICE"]) == ("env-1", "web")
    assert (env["CORRAL_RELEASE"], env["CORRAL_SERIAL"]) == ("r3", "5")  # corral's win
    assert (env["FROM_IMAGE"], env["FROM_LAUNCH"], env["SHARED"]) == ("image", "yes", "launch")
    assert "PYTEST_CURRENT_TEST" not in env


async def test_container_is_labelled_named_and_locked_down(docker: DockerHarness) -> None:
    driver = docker.driver()
    started = await driver.start(docker.spec("web-1", serial=4, release=2))
    info = docker.client.api.inspect_container(started.driver_ref)

    project = docker.project("proj")
    assert info["Name"] == f"/corral-{project}-test-web-web-1"
    labels = info["Config"]["Labels"]
    assert {k: v for k, v in labels.items() if k.startswith(LABEL)} == {
        LABEL + "project": project,
        LABEL + "environment": "test",
        LABEL + "service": "web",
        LABEL + "release": "r2",
        LABEL + "instance": "web-1",
        LABEL + "serial": "4",
        LABEL + "image": docker.digest,
    }
    host = info["HostConfig"]
    assert host["ReadonlyRootfs"] is True  # law 1
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Init"] is True
    assert "/tmp" in host["Tmpfs"]
    bindings = [b for port in host["PortBindings"].values() for b in port]
    assert bindings and all(b["HostIp"] == "127.0.0.1" for b in bindings)
    tags = docker.client.api.inspect_image(info["Image"])["RepoTags"]
    assert f"corral/{project}:{docker.digest.split(':')[1][:12]}" in tags


async def test_container_cannot_write_its_image(docker: DockerHarness) -> None:
    driver = docker.driver()
    script = (
        "touch /app/probe || echo app=denied; touch /tmp/probe && echo tmp=ok; "
        "grep CapEff /proc/self/status; echo done; exec sleep 60"
    )
    await driver.start(docker.spec("web-1", command=["/bin/sh", "-c", script]))
    text = await log_text(driver, "web-1", "done")
    assert "app=denied" in text
    assert "Read-only file system" in text
    assert "tmp=ok" in text
    assert "CapEff:\t0000000000000000" in text


async def test_file_secrets_are_read_only_files_in_memory_gone_with_the_container(
    docker: DockerHarness,
) -> None:
    driver = docker.driver()
    value = "f1le-s3cret-" + str(time.time_ns())
    script = (
        "cat /run/secrets/DB_PASSWORD; echo; ls -ln /run/secrets; "
        "echo x > /run/secrets/DB_PASSWORD || echo write=denied; echo done; exec sleep 60"
    )
    spec = docker.spec(
        "web-1", command=["/bin/sh", "-c", script], secrets={"DB_PASSWORD": (value, "file")}
    )
    await driver.start(spec)
    text = await log_text(driver, "web-1", "done")
    assert value in text  # the app read it (the log is the app's own doing here)
    assert "-r--------" in text and "write=denied" in text
    assert isinstance(driver, DockerDriver)
    held = docker_secrets.secrets_dir(driver.project, driver.environment, "web-1")
    assert held.parent == Path("/dev/shm") and held.exists()  # memory, not disk
    on_disk = [p for p in docker.home.rglob("*") if p.is_file() and value in p.read_text("latin-1")]
    assert [p.name for p in on_disk] == ["web-1.log"]  # only what the app printed itself
    inspect = docker.client.api.inspect_container(docker.containers()[0]["Id"])
    assert value not in str(inspect)  # not in the env, labels or command (law 5)

    await driver.stop("web-1", grace=5)
    assert not held.exists()  # gone with the container


async def test_output_reaches_the_log_file_and_outlives_the_container(
    docker: DockerHarness,
) -> None:
    driver = docker.driver()
    await driver.start(docker.spec("web-1"))
    text = await log_text(driver, "web-1", "stderr of web-1")
    assert "hello from web-1" in text

    await driver.stop("web-1", grace=5)
    await driver.forget("web-1")
    log = driver.log_path("web-1")
    assert log is not None and "hello from web-1" in log.read_text()
    assert docker.containers() == []  # stop removed the container; its log stays


async def test_log_copies_append_only_new_lines_and_rotate_by_the_policy(
    docker: DockerHarness,
) -> None:
    """Each copy asks the engine for the lines since the last one: none twice, none lost,
    the file rotated at the spec's max_size, and the engine's own log capped alike."""
    driver = docker.driver(log_policy=LogPolicy(max_size=4096))
    chatty = "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); sleep 0.01; done; sleep 60"
    started = await driver.start(docker.spec("web-1", command=["/bin/sh", "-c", chatty]))
    host = docker.client.api.inspect_container(started.driver_ref)["HostConfig"]
    assert host["LogConfig"]["Type"] == "json-file"  # bounded, never below what a copy needs
    assert host["LogConfig"]["Config"] == {"max-size": str(ENGINE_LOG_FLOOR), "max-file": "2"}

    deadline = time.monotonic() + 30
    path = driver.log_path("web-1")
    assert path is not None
    while True:  # observe copies while the app writes: many small appends
        await driver.observe()
        if path.exists() and "line-299" in path.read_text():
            break
        assert time.monotonic() < deadline
        await asyncio.sleep(0.3)
    rotated = path.with_name(path.name + ".1")
    assert rotated.exists() and path.stat().st_size <= 4096
    lines = [parse(line).text for f in (rotated, path) for line in f.read_text().splitlines()]
    numbers = [int(text.removeprefix("line-")) for text in lines if text.startswith("line-")]
    assert numbers == sorted(set(numbers))  # in order, none twice
    assert numbers[-1] == 299 and numbers == list(range(numbers[0], 300))  # none lost since


async def test_stop_sends_sigterm_first_then_kills_after_grace(docker: DockerHarness) -> None:
    driver = docker.driver()
    await driver.start(docker.spec("web-1"))
    ignores = "trap '' TERM; echo ready; while :; do sleep 1; done"
    await driver.start(docker.spec("web-2", command=["/bin/sh", "-c", ignores]))
    await log_text(driver, "web-2", "ready")

    await driver.stop("web-1", grace=10)
    await driver.stop("web-2", grace=0.5)
    seen = {o.instance_id: o for o in await driver.observe()}
    assert seen["web-1"].exit_code == 128 + 15  # httpd ended on SIGTERM, passed on by the init
    assert seen["web-2"].exit_code == 137  # killed when the grace ran out
    assert docker.containers() == []


async def test_an_image_removed_by_hand_is_loaded_again(docker: DockerHarness) -> None:
    """The driver remembers which images it loaded (a roll-out's starts skip the lookup);
    an image removed behind its back is loaded again, not a failed start."""
    driver = docker.driver()
    await driver.start(docker.spec("web-1"))
    await driver.stop("web-1", grace=0)
    await driver.forget("web-1")
    docker.client.api.remove_image(docker.store.info(docker.digest).config_digest, force=True)

    started = await driver.start(docker.spec("web-2"))
    assert started.address is not None
    assert await http_get(started.address, "/healthz") == "ok"


async def test_a_container_removed_by_hand_is_reported_exited(docker: DockerHarness) -> None:
    driver = docker.driver()
    started = await driver.start(docker.spec("web-1"))
    docker.client.api.remove_container(started.driver_ref, force=True)

    seen = await observed(driver, "web-1")
    assert seen is not None and seen.state is ObservedState.EXITED
    assert seen.address is None
    await driver.stop("web-1", grace=1)
    await driver.forget("web-1")
    assert await driver.observe() == []


async def test_a_container_with_corrals_labels_is_not_corrals(docker: DockerHarness) -> None:
    """Ownership is the record, not the labels: a look-alike is never observed or touched."""
    driver = docker.driver()
    await driver.start(docker.spec("web-1"))
    project = docker.project("proj")
    image = docker.store.info(docker.digest).config_digest  # loaded by the start above
    stranger = docker.client.api.create_container(
        image=image,
        command=["/bin/sleep", "60"],
        name=f"stranger-{project}",
        labels={
            LABEL + "project": project,
            LABEL + "environment": "test",
            LABEL + "service": "web",
            LABEL + "instance": "web-9",
            LABEL + "serial": "9",
            LABEL + "release": "r1",
        },
        host_config=docker.client.api.create_host_config(init=True),
    )["Id"]
    docker.client.api.start(stranger)

    assert [o.instance_id for o in await driver.observe()] == ["web-1"]
    await driver.stop("web-9", grace=0)
    await driver.forget("web-9")
    await driver.stop("web-1", grace=0)
    await driver.forget("web-1")
    assert docker.client.api.inspect_container(stranger)["State"]["Running"] is True


async def test_a_container_that_exits_at_once_is_removed(docker: DockerHarness) -> None:
    driver = docker.driver(startup_check=5.0)  # generous: a loaded engine may be slow
    with pytest.raises(DriverError, match="exited at once") as failure:
        await driver.start(docker.spec("web-1", command=["/no/such/program"]))
    assert "code 127" in str(failure.value)  # the init could not run it
    assert await driver.observe() == []
    assert docker.containers() == []  # no orphan


async def test_an_unreachable_engine_is_a_clear_error(
    docker: DockerHarness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")
    driver = DockerDriver(docker.home, docker.project("proj"), "test", docker.store)
    docker.drivers.append(driver)
    with pytest.raises(DriverError, match="does not answer") as failure:
        await driver.start(docker.spec("web-1"))
    assert failure.value.exit_code == 1
    assert "dockerd" in str(failure.value)  # says how to start one
    assert await DockerDriver(docker.home, "proj", "test", docker.store).observe() == []


def test_a_missing_sdk_names_the_extra(
    docker: DockerHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "docker", None)  # import docker → ImportError
    with pytest.raises(PrerequisiteError, match=r"pip install 'corral\[docker\]'") as failure:
        create_driver("docker", home=docker.home, project="p", environment="e", images=docker.store)
    assert failure.value.exit_code == 2
