"""The Driver conformance suite: every driver passes it (local for real, memory as the fake).

Local instances are real sandboxed processes; each test stops and forgets what it started,
and kills whatever is left under its home even when it fails.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from corral.drivers.local import BWRAP_MISSING, LocalDriver
from corral.drivers.memory import InMemoryDriver, MemoryHost
from corral.drivers.protocol import (
    EXEC_OUTPUT_LIMIT,
    Driver,
    Execs,
    ImageRuntime,
    ObservedInstance,
    ObservedState,
)
from corral.drivers.registry import create_driver
from corral.errors import DriverError, PrerequisiteError, UsageError
from corral.logs.format import parse
from tests.conformance.docker_harness import DockerHarness, engine_unavailable
from tests.conformance.driver_fixtures import (
    PYTHON,
    Harness,
    LocalHarness,
    MemoryHarness,
    bwrap_pid,
    http_get,
    processes_under,
)
from tests.conformance.swarm_harness import SwarmHarness

HAS_BWRAP = shutil.which("bwrap") is not None
needs_bwrap = pytest.mark.skipif(not HAS_BWRAP, reason=BWRAP_MISSING)
NO_DOCKER = engine_unavailable()
needs_docker = [pytest.mark.docker, pytest.mark.skipif(bool(NO_DOCKER), reason=str(NO_DOCKER))]
needs_lightkube = pytest.mark.skipif(
    importlib.util.find_spec("lightkube") is None, reason="pip install 'corral[kubernetes]'"
)


@pytest.fixture(
    params=[
        pytest.param("local", marks=needs_bwrap),
        "memory",
        pytest.param("docker", marks=needs_docker),
        pytest.param("kubernetes", marks=needs_lightkube),
        pytest.param("swarm", marks=[*needs_docker, pytest.mark.swarm]),
    ],
)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    made: Harness
    if request.param == "local":
        made = LocalHarness(tmp_path)
    elif request.param == "docker":
        made = DockerHarness(tmp_path)
    elif request.param == "swarm":  # a real 3-node swarm, one per session
        made = SwarmHarness(tmp_path, request.getfixturevalue("swarm_lab"))
    elif request.param == "kubernetes":
        from tests.conformance.kube_harness import KubeHarness

        made = KubeHarness(tmp_path)
    else:
        made = MemoryHarness()
    try:
        yield made
    finally:
        await made.cleanup()


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalHarness]:
    if not HAS_BWRAP:
        pytest.skip(BWRAP_MISSING)
    made = LocalHarness(tmp_path)
    try:
        yield made
    finally:
        await made.cleanup()


async def observed_by_id(driver: Driver) -> dict[str, ObservedInstance]:
    return {o.instance_id: o for o in await driver.observe()}


async def wait_state(driver: Driver, instance_id: str, state: ObservedState) -> ObservedInstance:
    """Observe until the instance shows `state` (bounded: a crash takes a moment to show)."""
    deadline = time.monotonic() + 10
    while True:
        seen = (await observed_by_id(driver)).get(instance_id)
        if seen is not None and seen.state is state:
            return seen
        assert time.monotonic() < deadline, f"{instance_id} never became {state}: {seen}"
        await asyncio.sleep(0.05)


def is_gone(observed: ObservedInstance) -> bool:
    """The instance's bwrap no longer exists, not even as a zombie (its pid may be reused)."""
    try:
        return psutil.Process(bwrap_pid(observed)).create_time() != observed.started_at
    except psutil.NoSuchProcess:
        return True


# -- every driver ------------------------------------------------------------------------------


async def test_started_instance_is_observed_running_with_its_labels(harness: Harness) -> None:
    driver = harness.driver()
    spec = harness.spec("web-2", serial=2, release=3)
    started = await driver.start(spec)

    seen = (await observed_by_id(driver))["web-2"]
    assert seen.state is ObservedState.RUNNING
    assert (seen.service, seen.serial, seen.release) == ("web", 2, 3)
    assert seen.image_digest == spec.image_digest
    # on this host; a swarm's instances listen on their node's address
    assert seen.address is not None
    assert seen.address.startswith(getattr(harness, "address_prefix", "127.0.0.1:"))
    assert seen.address == started.address
    assert seen.driver_ref == started.driver_ref != ""
    assert seen.exit_code is None


async def test_stop_ends_the_instance_and_is_idempotent(harness: Harness) -> None:
    driver = harness.driver()
    await driver.start(harness.spec("web-1"))

    await driver.stop("web-1", grace=5)
    seen = (await observed_by_id(driver))["web-1"]  # listed until forgotten
    assert seen.state is ObservedState.EXITED
    assert seen.address is None

    await driver.stop("web-1", grace=5)
    await driver.stop("never-started", grace=5)
    await driver.forget("web-1")
    await driver.forget("web-1")
    assert await driver.observe() == []


async def test_a_running_instance_cannot_be_forgotten(harness: Harness) -> None:
    driver = harness.driver()
    await driver.start(harness.spec("web-1"))
    with pytest.raises(DriverError, match="still running"):
        await driver.forget("web-1")
    assert (await observed_by_id(driver))["web-1"].state is ObservedState.RUNNING


async def test_a_crash_is_observed_as_exited(harness: Harness) -> None:
    driver = harness.driver()
    started = await driver.start(harness.spec("web-1"))
    await harness.crash(driver, started)

    if harness.kind == "swarm":  # Swarm restarts it: pending, then running again
        seen = await wait_state(driver, "web-1", ObservedState.PENDING)
        assert seen.exit_code == 137 and seen.address is None
        back = await wait_state(driver, "web-1", ObservedState.RUNNING)
        assert await http_get(back.address or "", "/") == "web-1"
        await driver.stop("web-1", grace=1)
        await driver.forget("web-1")
        return
    seen = await wait_state(driver, "web-1", ObservedState.EXITED)
    assert seen.exit_code == 137
    await driver.stop("web-1", grace=1)  # stopping what already died is fine
    await driver.forget("web-1")


async def test_observe_lists_only_its_own_project_and_environment(harness: Harness) -> None:
    mine = harness.driver()
    other_env = harness.driver(environment="other")
    other_project = harness.driver(project="elsewhere")
    await mine.start(harness.spec("web-1"))
    # Ids are unique per project and environment: another project may have its own web-1.
    await other_project.start(harness.spec("web-1", project="elsewhere", serial=7))

    assert [(o.instance_id, o.serial) for o in await mine.observe()] == [("web-1", 1)]
    assert [(o.instance_id, o.serial) for o in await other_project.observe()] == [("web-1", 7)]
    assert await other_env.observe() == []

    await other_env.stop("web-1", grace=0)  # not its instance: nothing happens to it
    await other_project.stop("web-1", grace=5)
    assert (await observed_by_id(mine))["web-1"].state is ObservedState.RUNNING


async def test_a_driver_for_another_environment_refuses_to_start(harness: Harness) -> None:
    driver = harness.driver(environment="other")
    with pytest.raises(DriverError, match="belongs to"):
        await driver.start(harness.spec("web-1"))
    assert await driver.observe() == []


async def test_a_new_driver_adopts_instances_started_by_a_previous_one(
    harness: Harness,
) -> None:
    await harness.start_elsewhere(harness.spec("web-1"))
    driver = harness.driver()  # the restarted agent's driver

    seen = await wait_state(driver, "web-1", ObservedState.RUNNING)
    if harness.kind == "local":
        assert psutil.Process(bwrap_pid(seen)).status() != psutil.STATUS_ZOMBIE  # all of it lives
    if harness.kind in ("local", "docker", "swarm"):
        assert await http_get(seen.address or "", "/") == "web-1"
    await driver.stop("web-1", grace=5)
    assert (await observed_by_id(driver))["web-1"].state is ObservedState.EXITED
    await driver.forget("web-1")
    assert await driver.observe() == []


async def test_a_start_that_fails_raises_and_leaves_nothing(harness: Harness) -> None:
    # A generous window: on a loaded machine even `sh -c 'exit 3'` may take a while to end.
    driver = harness.driver(startup_check=5.0)
    with pytest.raises(DriverError) as failure:
        await driver.start(harness.failing_spec(driver, "web-1"))
    if harness.kind in ("local", "docker", "swarm", "kubernetes"):
        assert "boom" in str(failure.value)  # the log's last lines explain it
        assert "code 3" in str(failure.value)
    assert await driver.observe() == []


async def test_an_instance_id_is_never_started_twice(harness: Harness) -> None:
    driver = harness.driver()
    await driver.start(harness.spec("web-1"))
    with pytest.raises(DriverError, match="never reused"):
        await driver.start(harness.spec("web-1", serial=2))
    seen = await observed_by_id(driver)
    assert list(seen) == ["web-1"]
    assert seen["web-1"].serial == 1
    assert seen["web-1"].state is ObservedState.RUNNING


# -- exec: the optional capability, for the drivers that have it ------------------------------


def execs(driver: Driver) -> Execs:
    assert isinstance(driver, Execs), f"the {driver.name} driver should run commands inside"
    return driver


async def test_exec_runs_a_command_and_reports_its_exit_code_and_output(harness: Harness) -> None:
    driver = harness.driver()
    await driver.start(harness.spec("web-1"))

    done = await execs(driver).exec("web-1", ["echo", "hello", "there"], timeout=10)
    assert (done.exit_code, done.output.strip(), done.timed_out) == (0, "hello there", False)
    failed = await execs(driver).exec("web-1", ["cat", "/no/such/file"], timeout=10)
    assert failed.exit_code != 0 and not failed.timed_out
    missing = await execs(driver).exec("web-1", ["no-such-command-xyz"], timeout=10)
    assert missing.exit_code != 0


async def test_exec_is_killed_at_its_timeout(harness: Harness) -> None:
    driver = harness.driver()
    await driver.start(harness.spec("web-1"))
    done = await execs(driver).exec("web-1", ["sleep", "30"], timeout=0.5)
    assert done.timed_out and done.exit_code == 124


async def test_exec_output_is_truncated_and_secret_values_redacted(harness: Harness) -> None:
    driver = harness.driver()
    secret = "s3cr3t-value-42"
    await driver.start(harness.spec("web-1", secrets={"API_TOKEN": (secret, "env")}))

    env = await execs(driver).exec("web-1", ["env"], timeout=10)
    assert env.exit_code == 0
    assert secret not in env.output and "API_TOKEN=***" in env.output
    long = await execs(driver).exec("web-1", ["echo", "x" * (3 * EXEC_OUTPUT_LIMIT)], timeout=10)
    assert long.exit_code == 0
    assert len(long.output.encode()) <= EXEC_OUTPUT_LIMIT + len(" [truncated]")
    assert long.output.endswith("[truncated]")


async def test_exec_in_an_instance_that_does_not_run_raises(harness: Harness) -> None:
    driver = harness.driver()
    await driver.start(harness.spec("web-1"))
    await driver.stop("web-1", grace=5)
    with pytest.raises(DriverError, match="not running"):
        await execs(driver).exec("web-1", ["echo", "hi"], timeout=5)
    with pytest.raises(DriverError, match="not running"):
        await execs(driver).exec("never-started", ["echo", "hi"], timeout=5)


# -- local: what only real processes show -------------------------------------------------------


async def test_local_instance_serves_http_with_the_env_it_was_given(local: LocalHarness) -> None:
    driver = local.driver()
    started = await driver.start(
        local.spec("web-2", serial=2, release=3, env={"FROM_LAUNCH": "yes", "SHARED": "launch"})
    )
    assert started.address is not None

    assert await http_get(started.address, "/healthz") == "ok"
    assert await http_get(started.address, "/") == "web-2"
    env = json.loads(await http_get(started.address, "/env"))
    assert env["PORT"] == started.address.rsplit(":", 1)[1]
    assert env["CORRAL_INSTANCE"] == "web-2"
    assert env["CORRAL_SERVICE"] == "web"
    assert env["CORRAL_RELEASE"] == "r3"
    assert env["CORRAL_SERIAL"] == "2"
    assert env["SCRATCH"] == "/scratch"
    assert (env["FROM_IMAGE"], env["FROM_LAUNCH"], env["SHARED"]) == ("image", "yes", "launch")
    assert "PYTEST_CURRENT_TEST" not in env  # nothing leaks in from whoever started it


async def test_local_app_output_reaches_the_log_file(local: LocalHarness) -> None:
    driver = local.driver()
    started = await driver.start(local.spec("web-1"))
    await http_get(started.address or "", "/healthz")  # it has printed by the time it serves

    log = driver.log_path("web-1")
    assert log is not None
    text = log.read_text()
    assert "hello from web-1" in text
    assert "stderr of web-1" in text
    # Each line stamped by the collector with its time and stream (corral.logs.format).
    streams = {r.text: r.stream for r in map(parse, text.splitlines()) if r.time is not None}
    assert streams.get("hello from web-1") == "stdout", text
    assert any(s == "stderr" and "stderr of web-1" in t for t, s in streams.items()), text

    await driver.stop("web-1", grace=5)
    await driver.forget("web-1")
    assert driver.log_path("web-1") == log  # logs outlive the instance
    assert log.exists()


async def test_local_stop_sends_sigterm_first(local: LocalHarness) -> None:
    driver = local.driver()
    started = await driver.start(local.spec("web-1"))
    await http_get(started.address or "", "/healthz")  # its SIGTERM handler is installed

    await driver.stop("web-1", grace=10)
    seen = (await observed_by_id(driver))["web-1"]
    assert seen.exit_code == 0  # it exited on its own, as its handler does
    assert "web-1: got SIGTERM" in (driver.log_path("web-1") or Path()).read_text()
    assert processes_under(local.home) == []
    assert is_gone(started)  # reaped: not even a zombie lingers


async def test_local_stop_kills_an_app_that_ignores_sigterm_after_grace(
    local: LocalHarness,
) -> None:
    driver = local.driver()
    started = await driver.start(
        local.spec("web-1", command=[PYTHON, "/app/server.py", "--ignore-term"])
    )
    await http_get(started.address or "", "/healthz")  # SIGTERM is ignored from now on

    await driver.stop("web-1", grace=0.3)
    seen = (await observed_by_id(driver))["web-1"]
    assert seen.state is ObservedState.EXITED
    assert seen.exit_code == 137
    assert processes_under(local.home) == []


async def test_local_command_not_found_raises(local: LocalHarness) -> None:
    driver = local.driver()
    with pytest.raises(DriverError, match="exited at once"):
        await driver.start(local.spec("web-1", command=["/no/such/program"]))
    assert await driver.observe() == []
    assert processes_under(local.home) == []


async def test_local_instance_cannot_write_its_image_and_has_private_scratch(
    local: LocalHarness,
) -> None:
    driver = local.driver()
    one = await driver.start(local.spec("web-1"))
    two = await driver.start(local.spec("web-2", serial=2))

    probe_one = json.loads(await http_get(one.address or "", "/probe"))
    probe_two = json.loads(await http_get(two.address or "", "/probe"))

    for probe in (probe_one, probe_two):
        assert probe["writes"]["/app/probe"] == "EROFS"  # law 1: its image is read-only
        assert probe["writes"]["/usr/probe"] == "EROFS"  # so is the runtime lent to it
        assert probe["writes"]["/probe"] == "EROFS"
        assert probe["caps"] == "0000000000000000"  # so it cannot remount anything writable
    assert not (local.rootfs / "app" / "probe").exists()
    assert probe_one["writes"]["/scratch/web-1"] == "ok"
    assert probe_one["scratch"] == ["web-1"]
    assert probe_two["scratch"] == ["web-2"]
    assert probe_one["tmp"] == ["web-1"]
    assert probe_two["tmp"] == ["web-2"]


async def test_local_instance_starts_with_default_signal_handling(local: LocalHarness) -> None:
    """Not inheriting the agent's: Python ignores SIGPIPE, and an ignored signal survives exec."""
    driver = local.driver()
    script = "grep -E '^Sig(Ign|Blk)' /proc/self/status; echo done; exec sleep 60"
    await driver.start(local.spec("web-1", command=["/bin/sh", "-c", script]))
    log = driver.log_path("web-1") or Path()
    deadline = time.monotonic() + 10
    while "done" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        await asyncio.sleep(0.05)
    texts = [parse(line).text for line in log.read_text().splitlines()]
    masks = dict(text.split(":\t") for text in texts if ":" in text)
    assert int(masks["SigBlk"], 16) == 0
    assert int(masks["SigIgn"], 16) & 0x7FFFFFFF == 0  # signals 1-31 (glibc keeps 32, 33 its own)


async def test_local_driver_never_signals_a_pid_that_now_names_another_process(
    local: LocalHarness,
) -> None:
    driver = local.driver()
    started = await driver.start(local.spec("web-1"))
    await driver.stop("web-1", grace=5)
    # As if the pid had been recycled: the record now names a stranger (with the old start time).
    stranger = subprocess.Popen(["/usr/bin/sleep", "30"], start_new_session=True)
    try:
        record = {"pid": stranger.pid, "start_time": started.started_at}
        pid_file = local.instance_dir("web-1") / "pid"
        pid_file.write_text(json.dumps({**record, "sandbox": record}))

        assert (await observed_by_id(driver))["web-1"].state is ObservedState.EXITED
        await driver.stop("web-1", grace=0)
        await driver.forget("web-1")
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.skipif(not Path("/usr/bin/busybox").exists(), reason="needs busybox-static")
async def test_local_image_with_its_own_os_sees_only_its_own_files(
    local: LocalHarness, tmp_path: Path
) -> None:
    rootfs = tmp_path / "os-image"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2("/usr/bin/busybox", rootfs / "bin" / "busybox")
    (rootfs / "sbin").symlink_to("bin")  # top-level symlinks are kept as symlinks
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "motd").write_text("from the image\n")
    local.image = ImageRuntime(rootfs=rootfs, cmd=["/bin/busybox", "sh", "-c"], has_os=True)
    script = "ls /; ls /etc; cat /etc/motd; /sbin/busybox echo done; exec busybox sleep 60"
    driver = local.driver()
    await driver.start(local.spec("os-1", command=["/bin/busybox", "sh", "-c", script]))

    log = driver.log_path("os-1") or Path()
    deadline = time.monotonic() + 10
    while "done" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        await asyncio.sleep(0.05)
    lines = " ".join(parse(line).text for line in log.read_text().splitlines()).split()
    assert lines == [
        *["bin", "dev", "etc", "proc", "sbin", "scratch", "tmp"],  # no host /usr, /lib
        "motd",  # the image's /etc, not the host's
        *["from", "the", "image", "done"],
    ]


async def test_local_instance_started_but_not_recorded_is_found_and_cleaned(
    local: LocalHarness,
) -> None:
    """A driver killed between spawning and writing the pid file leaves a running sandbox
    with only launch.json: it is reported exited, and forget kills what runs."""
    driver = local.driver()
    started = await driver.start(local.spec("web-1"))
    (local.instance_dir("web-1") / "pid").unlink()

    seen = (await observed_by_id(driver))["web-1"]
    assert seen.state is ObservedState.EXITED
    assert psutil.Process(bwrap_pid(started)).is_running()

    await driver.forget("web-1")
    assert await driver.observe() == []
    assert processes_under(local.home) == []


def test_local_driver_needs_bwrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(PrerequisiteError, match="apt-get install bubblewrap"):
        LocalDriver(tmp_path, "proj", "test", lambda digest: LocalHarness(tmp_path).image)
    with pytest.raises(PrerequisiteError):
        create_driver("local", home=tmp_path, project="p", environment="e", resolve_image=print)


# -- memory: its knobs ----------------------------------------------------------------------------


async def test_memory_driver_is_deterministic() -> None:
    async def run() -> list[ObservedInstance]:
        driver = InMemoryDriver("proj", "test", clock=lambda: 1.0)
        for n in (1, 2, 3):
            await driver.start(MemoryHarness().spec(f"web-{n}", serial=n))
        driver.crash("web-2", exit_code=1)
        await driver.stop("web-3", grace=1)
        return await driver.observe()

    assert await run() == await run()


async def test_memory_driver_fails_only_the_next_start() -> None:
    driver = InMemoryDriver("proj", "test", host=MemoryHost())
    driver.fail_next_start("disk full")
    with pytest.raises(DriverError, match="disk full"):
        await driver.start(MemoryHarness().spec("web-1"))
    await driver.start(MemoryHarness().spec("web-2"))
    assert [o.instance_id for o in await driver.observe()] == ["web-2"]
    assert driver.calls == [("start", "web-1"), ("start", "web-2")]


# -- registry ------------------------------------------------------------------------------------


def test_registry_builds_drivers_by_name(tmp_path: Path) -> None:
    assert isinstance(create_driver("memory", project="p", environment="e"), InMemoryDriver)
    if HAS_BWRAP:
        local = create_driver(
            "local",
            home=tmp_path,
            project="p",
            environment="e",
            resolve_image=lambda digest: None,
        )
        assert local.name == "local"


@pytest.mark.parametrize("name", ["bogus", "Kubernetes"])
def test_registry_refuses_unknown_drivers_and_names_the_known_ones(name: str) -> None:
    with pytest.raises(UsageError) as failure:
        create_driver(name)
    assert "local, docker, swarm, kubernetes, memory" in str(failure.value)
