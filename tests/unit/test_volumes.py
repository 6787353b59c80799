"""Volumes (law 4): spec rules, release config, per-instance serials, stop-first hand-over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from corral.agent.controller import Agent
from corral.drivers.memory import InMemoryDriver
from corral.drivers.protocol import LaunchSpec, Mount, ObservedInstance
from corral.errors import SpecError
from corral.images.model import FileEntry
from corral.paths import Home
from corral.releases import config_hash, release_config
from corral.rollout.book import InstanceBook
from corral.rollout.executor import Executor, ServiceTarget
from corral.rollout.health import HealthCheck, ProbeResult
from corral.router.memory import InMemoryRouter
from corral.spec.load import load_spec
from corral.spec.model import ServiceSpec
from corral.state.memory import InMemoryStateStore
from corral.state.records import ServiceRecord
from corral.volumes import image_clash, launch_mounts, list_local, local_dir, users

BASE = """\
images:
  app: {}
services:
  web:
    image: app
"""


def load(tmp_path: Path, service_tail: str) -> Any:
    path = tmp_path / "corral.yaml"
    path.write_text(BASE + service_tail)
    return load_spec(path)


def problem_of(tmp_path: Path, service_tail: str) -> Any:
    with pytest.raises(SpecError) as caught:
        load(tmp_path, service_tail)
    assert caught.value.exit_code == 2
    [problem] = caught.value.problems
    return problem


@pytest.mark.parametrize("path", ["/proc", "/dev/shm", "/tmp", "/run/secrets", "/run"])
def test_a_volume_over_a_runtime_path_is_refused_with_its_line(tmp_path: Path, path: str) -> None:
    problem = problem_of(tmp_path, f"    volumes:\n      - {{name: data, path: {path}}}\n")
    assert problem.line == 7 and problem.path == "services.web.volumes[0].path"
    assert "clashes with" in problem.message


@pytest.mark.parametrize(
    ("tail", "words"),
    [
        ("    replicas: 2\n", "per_instance"),
        ("    strategy: {type: blue_green}\n", "rolling strategy"),
        ("    strategy: {type: canary, steps: [{set_weight: 10}]}\n", "rolling strategy"),
    ],
)
def test_a_shared_single_writer_volume_cannot_meet_two_live_instances(
    tmp_path: Path, tail: str, words: str
) -> None:
    problem = problem_of(
        tmp_path, tail + "    volumes:\n      - {name: data, path: /data, single_writer: true}\n"
    )
    assert problem.path == "services.web.volumes" and problem.line == 8
    assert words in problem.message and "single_writer" in problem.message


def test_per_instance_single_writer_with_replicas_is_fine(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        "    replicas: 3\n    volumes:\n"
        "      - {name: data, path: /data/, single_writer: true, per_instance: true}\n",
    )
    [volume] = loaded.spec.services["web"].volumes
    assert volume.path == "/data" and volume.per_instance


def test_two_volumes_may_not_share_a_name_or_nest(tmp_path: Path) -> None:
    twice = "    volumes:\n      - {name: a, path: /a}\n      - {name: a, path: /b}\n"
    assert "two volumes" in problem_of(tmp_path, twice).message
    nested = "    volumes:\n      - {name: a, path: /a}\n      - {name: b, path: /a/b}\n"
    assert "inside" in problem_of(tmp_path, nested).message


SECRET = "    secrets:\n      DB_PASSWORD: {from: env}\n"


@pytest.mark.parametrize("path", ["/run/secrets", "/run", "/run/secrets/DB_PASSWORD"])
def test_a_volume_over_a_secret_file_is_refused_naming_the_secret(
    tmp_path: Path, path: str
) -> None:
    problem = problem_of(tmp_path, SECRET + f"    volumes:\n      - {{name: data, path: {path}}}\n")
    assert problem.line == 9 and problem.path == "services.web.volumes[0].path"
    assert "secret DB_PASSWORD" in problem.message and "/run/secrets/DB_PASSWORD" in problem.message
    assert problem.hint and "as: env" in problem.hint


def test_a_volume_over_the_secrets_dir_is_refused_without_file_secrets(tmp_path: Path) -> None:
    env_only = "    secrets:\n      TOKEN: {from: env, as: env}\n"
    problem = problem_of(
        tmp_path, env_only + "    volumes:\n      - {name: d, path: /run/secrets}\n"
    )
    assert "clashes with /run/secrets" in problem.message and problem.hint


def test_two_volumes_on_one_path_are_refused_at_the_second_with_a_hint(tmp_path: Path) -> None:
    tail = "    volumes:\n      - {name: a, path: /data}\n      - {name: b, path: /data/}\n"
    problem = problem_of(tmp_path, tail)
    assert (problem.line, problem.path) == (8, "services.web.volumes[1].path")
    assert "'a' and 'b' are both mounted at /data" in problem.message
    assert problem.hint == "give each volume its own path"
    # a volume that contains an earlier one is refused as well as one inside it
    outer = "    volumes:\n      - {name: a, path: /data/a}\n      - {name: b, path: /data}\n"
    problem = problem_of(tmp_path, outer)
    assert "volume 'a' at /data/a is inside volume 'b' at /data" in problem.message
    assert problem.hint


def test_side_by_side_volumes_and_secrets_are_fine(tmp_path: Path) -> None:
    tail = "    volumes:\n      - {name: a, path: /data/a}\n      - {name: b, path: /data/ab}\n"
    loaded = load(tmp_path, SECRET + tail)
    assert [v.path for v in loaded.spec.services["web"].volumes] == ["/data/a", "/data/ab"]


def test_validate_refuses_a_volume_over_a_secret_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "corral.yaml").write_text(
        BASE + SECRET + "    volumes:\n      - {name: data, path: /run/secrets}\n"
    )
    corral = Path(sys.executable).parent / "corral"
    result = subprocess.run(
        [corral, "validate", "--file", tmp_path / "corral.yaml"],
        capture_output=True,
        text=True,
        env={**os.environ, "CORRAL_HOME": str(tmp_path / "home")},
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "corral.yaml:9:" in result.stderr and "as: env" in result.stderr


def test_specs_without_volumes_keep_their_release_hash() -> None:
    plain = ServiceSpec(image="app")
    assert release_config(plain)["mounts"] == []
    # the hash every existing release was recorded with (mounts: [] since v1)
    assert config_hash(release_config(plain)) == config_hash(
        {**release_config(plain), "mounts": []}
    )


def test_volumes_are_canonical_in_the_release_config() -> None:
    a = ServiceSpec.model_validate(
        {
            "image": "app",
            "volumes": [
                {"name": "logs", "path": "/logs"},
                {"name": "data", "path": "/data", "single_writer": True},
            ],
        }
    )
    b = ServiceSpec.model_validate(
        {
            "image": "app",
            "volumes": [
                {"name": "data", "path": "/data"},
                {"name": "logs", "path": "/logs"},
            ],
        }
    )
    # written order and single_writer (a roll-out setting) do not make another release
    assert config_hash(release_config(a)) == config_hash(release_config(b))
    assert release_config(a)["mounts"][0] == {
        "name": "data",
        "path": "/data",
        "per_instance": False,
    }


def test_per_instance_mounts_belong_to_the_serial() -> None:
    config = {
        "mounts": [
            {"name": "data", "path": "/data", "per_instance": True},
            {"name": "shared", "path": "/shared", "per_instance": False},
        ]
    }
    assert launch_mounts(config, 2) == [Mount("data", "/data", 2), Mount("shared", "/shared")]
    assert launch_mounts({}, 0) == []


def entry(path: str, kind: str = "file") -> FileEntry:
    return FileEntry(path=path, type=kind, mode=0o644)  # type: ignore[arg-type]


def test_image_clash() -> None:
    files = [entry("app", "dir"), entry("app/server.py"), entry("data", "dir"), entry("etc")]
    assert image_clash("/data", files) is None  # an empty dir is a fine mount point
    assert image_clash("/srv", files) is None
    assert "hide" in (image_clash("/app", files) or "")
    assert "file at /app/server.py" in (image_clash("/app/server.py", files) or "")
    assert "above" in (image_clash("/etc/x", files) or "")


def test_local_volumes_are_listed_per_serial(tmp_path: Path) -> None:
    home = Home(tmp_path)
    for mount in (Mount("db", "/d", 0), Mount("db", "/d", 1), Mount("files", "/f")):
        local_dir(home, "dev", "p", mount).mkdir(parents=True)
    (local_dir(home, "dev", "p", Mount("files", "/f")) / "x").write_text("12345")
    listed = [(v.label, v.size) for v in list_local(home, "dev", "p")]
    assert listed == [("db/0", 0), ("db/1", 0), ("files", 5)]
    assert list_local(home, "prod", "p") == []


# -- the executor: mounts in the LaunchSpec, stop-first hand-over ---------------------------


class RecordingDriver(InMemoryDriver):
    def __init__(self) -> None:
        super().__init__("p", "dev")
        self.specs: list[LaunchSpec] = []
        self.most_alive = 0

    async def start(self, spec: LaunchSpec) -> ObservedInstance:
        self.specs.append(spec)
        observed = await super().start(spec)
        alive = [o for o in await self.observe() if o.state == "running"]
        self.most_alive = max(self.most_alive, len(alive))
        return observed


async def ready(address: str, check: HealthCheck) -> ProbeResult:
    return ProbeResult(True, "answered 200")


def executor(driver: RecordingDriver, router: InMemoryRouter, store: Any) -> Executor:
    return Executor(
        store=store,
        driver=driver,
        router=router,
        book=InstanceBook(),
        project="p",
        environment="dev",
        emit=lambda *a, **k: None,
        ready_check=ready,
    )


def config(env: str, per_instance: bool) -> dict[str, Any]:
    return {
        "v": 1,
        "command": None,
        "env": {"V": env},
        "port": 8080,
        "health": {"http": {"path": "/healthz", "status": 200}},
        "mounts": [{"name": "data", "path": "/data", "per_instance": per_instance}],
    }


async def test_single_writer_rolls_stop_first_and_the_route_holds_meanwhile() -> None:
    store, driver, router = InMemoryStateStore("p/dev"), RecordingDriver(), InMemoryRouter()
    await router.open_route("web", "127.0.0.1", 8000)
    run = executor(driver, router, store)
    target = ServiceTarget(
        "web",
        1,
        {
            "strategy": {"max_surge": 1, "max_unavailable": 0},  # overridden: stop-first
            "stop_grace": 0.1,
            "drain_timeout": 0.1,
            "route": {"port": 8000},
            "handover_timeout": 4.5,
        },
    )
    r1 = store.get_or_create_release("web", "sha256:1", "sha256:a", config("1", False), "t")
    r2 = store.get_or_create_release("web", "sha256:2", "sha256:b", config("2", False), "t")
    assert (await run.converge(target, r1, None)).ok
    assert (await run.converge(target, r2, r1)).ok
    assert driver.most_alive == 1  # never two instances on the single_writer volume
    kinds = [call for call, _ in driver.calls if call in ("start", "stop")]
    assert kinds == ["start", "stop", "start"]
    assert router._routes["web"].hold_timeout == 4.5
    assert [s.mounts for s in driver.specs] == [[Mount("data", "/data")]] * 2


async def test_per_instance_volumes_follow_serials_across_a_roll_out() -> None:
    store, driver, router = InMemoryStateStore("p/dev"), RecordingDriver(), InMemoryRouter()
    run = executor(driver, router, store)
    target = ServiceTarget("web", 3, {"strategy": {"max_surge": 1}, "stop_grace": 0.1})
    r1 = store.get_or_create_release("web", "sha256:1", "sha256:a", config("1", True), "t")
    r2 = store.get_or_create_release("web", "sha256:2", "sha256:b", config("2", True), "t")
    assert (await run.converge(target, r1, None)).ok
    assert (await run.converge(target, r2, r1)).ok
    by_release: dict[int, dict[int, int | None]] = {}
    for spec in driver.specs:
        [mount] = spec.mounts
        by_release.setdefault(spec.release, {})[spec.serial] = mount.serial
    # serial n of r2 gets serial n's volume, as r1's serial n had
    assert by_release == {1: {0: 0, 1: 1, 2: 2}, 2: {0: 0, 1: 1, 2: 2}}
    # and the state knows which live instances use the volume (volume rm refuses then)
    assert sorted(users(store, "data")) == sorted(r.id for r in store.list_instances("web"))
    assert users(store, "other") == []


async def test_a_restarted_agent_holds_the_route_for_the_hand_over_again(tmp_path: Path) -> None:
    """After `agent restart` or a killed agent, recovery reopens the route of a service with
    a single_writer volume with its handover_timeout, before any roll-out sets it (law 6)."""
    store = InMemoryStateStore("p/dev")
    settings = {"route": {"port": 0}, "handover_timeout": 4.5}
    store.put_service(ServiceRecord("web", None, 1, 0, settings))
    store.put_service(ServiceRecord("api", None, 1, 0, {"route": {"port": 0}}))
    router = InMemoryRouter(hold_timeout=3.0)
    agent = Agent(
        home=Home(tmp_path),
        project="p",
        environment="dev",
        store=store,
        driver=InMemoryDriver("p", "dev"),
        router=router,
    )
    await agent.recover()
    assert router.hold_of("web") == 4.5
    assert router.hold_of("api") == 3.0  # no single_writer volume: the router's default
