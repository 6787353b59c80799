"""Exec checks and startup / readiness / liveness: the spec, the release config, the probe
logic and the agent's health watch, against the in-memory driver (no process, no socket)."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from corral.agent.health_watch import HealthWatch
from corral.drivers.memory import InMemoryDriver
from corral.drivers.protocol import LaunchSpec, ObservedInstance
from corral.errors import SpecError, UsageError
from corral.exec_checks import refuse_exec_without_support
from corral.releases import config_hash, release_config
from corral.rollout.book import InstanceBook
from corral.rollout.health import (
    HealthCheck,
    Streak,
    Verdict,
    bind_exec,
    judge_liveness,
    judge_readiness,
    probe,
    wait_ready,
)
from corral.spec.load import load_spec
from corral.spec.model import ServiceSpec
from corral.state.records import InstanceRecord, InstanceState

# -- spec ---------------------------------------------------------------------------------------


def spec_file(tmp_path: Path, health: str) -> Path:
    path = tmp_path / "corral.yaml"
    path.write_text(
        "project: p\nimages:\n  app: {}\nservices:\n  web:\n    image: app\n    health:\n"
        + textwrap.indent(textwrap.dedent(health), "      ")
    )
    return path


def test_a_health_block_with_exec_startup_and_liveness_loads() -> None:
    health = ServiceSpec.model_validate(
        {
            "image": "app",
            "health": {
                "exec": ["test", "-f", "/tmp/ready"],
                "failure_threshold": 2,
                "startup": {"tcp": True, "interval": "500ms", "failure_threshold": 60},
                "liveness": {"http": {"path": "/live"}, "timeout": "2s"},
            },
        }
    ).health
    assert health.exec_ == ["test", "-f", "/tmp/ready"] and health.failure_threshold == 2
    assert health.startup is not None and health.startup.tcp
    assert (health.startup.interval, health.startup.failure_threshold) == (0.5, 60)
    assert health.liveness is not None and health.liveness.http is not None
    assert (health.liveness.http.path, health.liveness.timeout) == ("/live", 2.0)
    assert health.liveness.failure_threshold == 3  # Kubernetes' default


@pytest.mark.parametrize(
    ("health", "line", "got"),
    [
        ("exec: [/bin/true]\ntcp: true\n", 8, "got tcp and exec"),
        ("http: {path: /}\nexec: [/bin/true]\n", 8, "got http and exec"),
        ("liveness:\n  interval: 1s\n", 9, "got none"),
        ("startup: {exec: [a], http: {path: /}}\n", 8, "got http and exec"),
    ],
)
def test_a_check_is_exactly_one_kind_with_the_line_of_the_problem(
    tmp_path: Path, health: str, line: int, got: str
) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec_file(tmp_path, health))
    [problem] = info.value.problems
    assert problem.line == line, str(info.value)
    assert "exactly one of `http:`, `tcp: true` or `exec: [argv...]`" in problem.message
    assert got in problem.message


def test_an_empty_exec_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(spec_file(tmp_path, "exec: []\n"))
    assert info.value.problems[0].line == 8
    assert "health.exec" in info.value.problems[0].path


def test_new_health_fields_keep_existing_release_hashes() -> None:
    """A release made before exec/startup/liveness/failure_threshold existed keeps its hash;
    each new field shows in the config only when it says something."""
    plain = release_config(ServiceSpec(image="app"))
    assert set(plain["health"]) == {
        "http",
        "interval",
        "timeout",
        "healthy_threshold",
        "start_timeout",
    }
    same = ServiceSpec.model_validate({"image": "app", "health": {"failure_threshold": 3}})
    assert config_hash(release_config(same)) == config_hash(plain)

    full = release_config(
        ServiceSpec.model_validate(
            {
                "image": "app",
                "health": {
                    "exec": ["true"],
                    "failure_threshold": 5,
                    "liveness": {"exec": ["test", "-f", "/tmp/alive"]},
                    "startup": {"tcp": True},
                },
            }
        )
    )["health"]
    assert full["exec"] == ["true"] and full["failure_threshold"] == 5
    assert full["liveness"] == {
        "exec": ["test", "-f", "/tmp/alive"],
        "interval": 1.0,
        "timeout": 1.0,
        "failure_threshold": 3,
    }
    assert full["startup"]["tcp"] is True
    check = HealthCheck.from_config({"health": full})
    assert check.argv == ("true",) and check.failure_threshold == 5
    assert check.liveness is not None and check.liveness.argv == ("test", "-f", "/tmp/alive")
    assert check.startup is not None and check.startup.tcp


class NoExecDriver:
    name = "plain"


def test_exec_checks_on_a_driver_that_cannot_exec_are_refused_at_plan_time(
    tmp_path: Path,
) -> None:
    loaded = load_spec(spec_file(tmp_path, "liveness:\n  exec: [test, -f, /tmp/alive]\n"))
    with pytest.raises(UsageError) as info:
        refuse_exec_without_support(loaded, loaded.spec, NoExecDriver())  # type: ignore[arg-type]
    assert info.value.exit_code == 2
    message = str(info.value)
    assert "'plain' driver" in message and "services.web.health.liveness.exec" in message
    assert f"{loaded.path}:9:" in message
    refuse_exec_without_support(loaded, loaded.spec, InMemoryDriver())  # it can: no error
    http_only = load_spec(spec_file(tmp_path, "tcp: true\n"))
    refuse_exec_without_support(http_only, http_only.spec, NoExecDriver())  # type: ignore[arg-type]


# -- probes against the in-memory driver --------------------------------------------------------


def launch(instance_id: str) -> LaunchSpec:
    return LaunchSpec(instance_id, "p", "dev", "web", 0, 1, "sha256:" + "a" * 64, None)


@pytest.fixture
async def running() -> tuple[InMemoryDriver, ObservedInstance]:
    driver = InMemoryDriver("p", "dev")
    return driver, await driver.start(launch("web-1"))


EXEC_ALIVE = HealthCheck(argv=("test", "-f", "/tmp/alive"), interval=0.01, timeout=1)


async def test_an_exec_probe_runs_in_its_instance_and_passes_on_exit_0(
    running: tuple[InMemoryDriver, ObservedInstance],
) -> None:
    driver, seen = running
    check = bind_exec(EXEC_ALIVE, driver, "web-1")
    failed = await probe(seen.address or "", check)
    assert not failed.ok and failed.detail == "`test -f /tmp/alive` exited 1"
    driver.write_file("web-1", "/tmp/alive")
    assert (await probe(seen.address or "", check)).ok
    assert ("exec", "web-1") in driver.calls
    slow = bind_exec(HealthCheck(argv=("sleep", "5"), timeout=0.5), driver, "web-1")
    assert (await probe("", slow)).detail == "`sleep 5` did not end within 0.5s"
    unbound = await probe("", EXEC_ALIVE)  # a driver that cannot exec never passes one
    assert not unbound.ok and "cannot run commands" in unbound.detail


async def test_an_exec_probe_of_a_stopped_instance_fails_with_the_reason(
    running: tuple[InMemoryDriver, ObservedInstance],
) -> None:
    driver, _ = running
    await driver.stop("web-1", grace=0)
    result = await probe("", bind_exec(EXEC_ALIVE, driver, "web-1"))
    assert not result.ok and "not running" in result.detail


async def test_startup_gates_readiness_and_fails_after_its_threshold(
    running: tuple[InMemoryDriver, ObservedInstance],
) -> None:
    driver, _ = running
    startup = HealthCheck(argv=("test", "-f", "/tmp/warm"), interval=0.01, failure_threshold=4)
    ready = HealthCheck(argv=("true",), startup=startup, interval=0.01, start_timeout=5)
    failed = await wait_ready("", bind_exec(ready, driver, "web-1"))
    assert not failed.ok
    assert "startup check (exec `test -f /tmp/warm`) failed 4 times in a row" in failed.detail
    execs = [c for c in driver.calls if c[0] == "exec"]
    assert len(execs) == 4  # readiness was never probed while startup failed

    driver.write_file("web-1", "/tmp/warm")
    assert (await wait_ready("", bind_exec(ready, driver, "web-1"))).ok


def test_readiness_without_liveness_kills_and_with_it_only_routes() -> None:
    legacy = HealthCheck(failure_threshold=3, healthy_threshold=2)
    streak = Streak()
    for _ in range(2):
        streak.record(False)
    assert judge_readiness(legacy, streak, routed=True) is Verdict.KEEP
    streak.record(False)
    assert judge_readiness(legacy, streak, routed=True) is Verdict.DEAD

    modern = HealthCheck(failure_threshold=3, healthy_threshold=2, liveness=HealthCheck())
    assert judge_readiness(modern, streak, routed=True) is Verdict.UNREADY
    assert judge_readiness(modern, streak, routed=False) is Verdict.KEEP
    streak.record(True)
    assert judge_readiness(modern, streak, routed=False) is Verdict.KEEP  # 1 of 2 passes
    streak.record(True)
    assert judge_readiness(modern, streak, routed=False) is Verdict.READY
    assert judge_readiness(modern, streak, routed=True) is Verdict.KEEP

    liveness = HealthCheck(failure_threshold=2)
    live = Streak()
    live.record(False)
    assert judge_liveness(liveness, live) is Verdict.KEEP
    live.record(True)  # a pass resets the count
    live.record(False)
    assert judge_liveness(liveness, live) is Verdict.KEEP
    live.record(False)
    assert judge_liveness(liveness, live) is Verdict.DEAD


# -- the agent's health watch -----------------------------------------------------------------


class Watched:
    """A HealthWatch over the in-memory driver, with one running instance record."""

    def __init__(self, driver: InMemoryDriver, check: HealthCheck) -> None:
        self.driver = driver
        self.book = InstanceBook()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.synced: list[str] = []
        self.records: dict[str, InstanceRecord] = {}
        self.watch = HealthWatch(
            book=self.book,
            check_of=lambda r: bind_exec(check, driver, r.id),
            current=self.records.get,
            sync_routes=self.sync_routes,
            emit=self.emit,
            min_interval=0.0,
        )

    async def sync_routes(self, service: str) -> None:
        self.synced.append(service)

    def emit(self, kind: str, message: str, **extra: Any) -> None:
        self.events.append((kind, extra.get("data") or {}))

    def add(self, seen: ObservedInstance) -> InstanceRecord:
        record = InstanceRecord(
            id=seen.instance_id,
            service="web",
            release=1,
            serial=0,
            state=InstanceState.RUNNING,
            address=seen.address,
            created_at=time.time(),
            updated_at=time.time(),
        )
        self.records[record.id] = record
        return record

    @classmethod
    @contextlib.asynccontextmanager
    async def ready(
        cls, driver: InMemoryDriver, seen: ObservedInstance, check: HealthCheck
    ) -> AsyncIterator[Watched]:
        """Watching `seen`, which the executor has just found ready; closed however it ends."""
        w = cls(driver, check)
        w.add(seen)
        w.book.mark_ready(seen.instance_id)
        w.watch.sync(w.records.values())
        try:
            yield w
        finally:
            w.watch.close()

    async def until(self, predicate: Any, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"not in time; events: {self.events}"
            self.watch.sync(self.records.values())
            await asyncio.sleep(0.01)


async def test_failing_liveness_makes_the_instance_dead_with_its_evidence(
    running: tuple[InMemoryDriver, ObservedInstance],
) -> None:
    driver, seen = running
    driver.write_file("web-1", "/tmp/alive")
    liveness = HealthCheck(argv=("test", "-f", "/tmp/alive"), interval=0.01, failure_threshold=3)
    check = HealthCheck(argv=("true",), interval=0.01, liveness=liveness)
    w = Watched(driver, check)
    w.add(seen)
    w.watch.sync(w.records.values())
    assert w.watch.watched() == set()  # not ready yet: startup and readiness are the executor's
    w.book.mark_ready("web-1")
    w.watch.sync(w.records.values())
    assert w.watch.watched() == {"web-1"}
    try:
        await asyncio.sleep(0.1)
        assert "web-1" in w.book.ready  # passing: nothing happens

        driver.remove_file("web-1", "/tmp/alive")  # the app gave up
        await w.until(lambda: "web-1" in w.book.dead)
        assert "web-1" not in w.book.ready and w.synced
        [(_, data)] = [e for e in w.events if e[0] == "instance.unhealthy"]
        assert data["reason"] == "liveness"
        assert data["check"] == "liveness exec `test -f /tmp/alive`"
        assert data["error"] == "`test -f /tmp/alive` exited 1"
        assert data["failures"] == 3
        assert "liveness exec `test -f /tmp/alive`" in w.book.detail["web-1"]
        w.watch.sync(w.records.values())
        assert w.watch.watched() == set()  # a dead instance is the heal's now
    finally:
        w.watch.close()


async def test_with_liveness_failing_readiness_only_takes_it_out_of_routing(
    running: tuple[InMemoryDriver, ObservedInstance],
) -> None:
    driver, seen = running
    driver.write_file("web-1", "/tmp/ready")
    check = HealthCheck(
        argv=("test", "-f", "/tmp/ready"),
        interval=0.01,
        failure_threshold=2,
        liveness=HealthCheck(argv=("true",), interval=0.01),
    )
    async with Watched.ready(driver, seen, check) as w:
        driver.remove_file("web-1", "/tmp/ready")
        await w.until(lambda: "web-1" not in w.book.ready)
        assert "web-1" not in w.book.dead
        assert [k for k, _ in w.events] == ["instance.unready"]
        driver.write_file("web-1", "/tmp/ready")
        await w.until(lambda: "web-1" in w.book.ready)
        assert [k for k, _ in w.events] == ["instance.unready", "instance.ready"]
        assert "web-1" not in w.book.dead


async def test_without_liveness_failing_readiness_still_makes_it_dead(
    running: tuple[InMemoryDriver, ObservedInstance],
) -> None:
    driver, seen = running
    check = HealthCheck(argv=("test", "-f", "/tmp/ready"), interval=0.01, failure_threshold=3)
    async with Watched.ready(driver, seen, check) as w:
        await w.until(lambda: "web-1" in w.book.dead)
        [(_, data)] = [e for e in w.events if e[0] == "instance.unhealthy"]
        assert data["check"] == "readiness exec `test -f /tmp/ready`"


async def test_a_retired_instance_is_no_longer_judged(
    running: tuple[InMemoryDriver, ObservedInstance],
) -> None:
    driver, seen = running
    check = HealthCheck(argv=("false",), interval=0.01, failure_threshold=1)
    async with Watched.ready(driver, seen, check) as w:
        # the executor retires it: STOPPING before anything else can look
        w.records["web-1"] = replace(w.records["web-1"], state=InstanceState.STOPPING)
        await asyncio.sleep(0.1)
        assert "web-1" not in w.book.dead and w.events == []
