"""The kubernetes driver's harness for the conformance suite: the driver against the fake API
server of kube_fake.py, whose pods run the suite's HTTP server as real processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral.drivers.kubernetes import KubernetesDriver
from corral.drivers.protocol import Driver, LaunchSpec, ObservedInstance
from tests.conformance.driver_fixtures import ENVIRONMENT, PROJECT, PYTHON, SERVER, _spec
from tests.conformance.kube_fake import FakeCluster

REGISTRY = "registry.test/corral"


class KubeHarness:
    kind = "kubernetes"

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        app = tmp_path / "app"
        app.mkdir()
        (app / "server.py").write_text(SERVER)
        workdir = tmp_path / "cluster"
        workdir.mkdir()
        self.cluster = FakeCluster(workdir, [PYTHON, str(app / "server.py")]).start()
        self.kubeconfig = self.cluster.write_kubeconfig(tmp_path / "kubeconfig")
        self.drivers: list[KubernetesDriver] = []

    def settings(self, **extra: Any) -> dict[str, Any]:
        return {
            "namespace": "default",
            "kubeconfig": str(self.kubeconfig),
            "image_registry": REGISTRY,
            **extra,
        }

    def driver(
        self, environment: str = ENVIRONMENT, project: str = PROJECT, **kwargs: Any
    ) -> KubernetesDriver:
        settings = self.settings(**kwargs.pop("settings", {}))
        kwargs.setdefault("poll", 0.05)
        kwargs.setdefault("startup_check", 0.1)  # the fake's containers fail at once or run
        driver = KubernetesDriver(self.home, project, environment, settings=settings, **kwargs)
        self.drivers.append(driver)
        return driver

    def spec(self, instance_id: str, **overrides: Any) -> LaunchSpec:
        return _spec(instance_id, **overrides)

    async def crash(self, driver: Driver, observed: ObservedInstance) -> None:
        """kill -9 of the pod's container (the fake kubelet restarts it, as a real one)."""
        self.cluster.crash(observed.driver_ref.removeprefix("pod:"))

    def failing_spec(self, driver: Driver, instance_id: str) -> LaunchSpec:
        return self.spec(instance_id, command=["/bin/sh", "-c", "echo boom >&2; exit 3"])

    async def start_elsewhere(self, spec: LaunchSpec) -> None:
        other = KubernetesDriver(
            self.home, spec.project, spec.environment, settings=self.settings()
        )
        try:
            await other.start(spec)
        finally:
            await other.close()

    async def cleanup(self) -> None:
        try:
            for driver in self.drivers:
                for observed in await driver.observe():
                    await driver.stop(observed.instance_id, grace=0)
                    await driver.forget(observed.instance_id)
                await driver.close()
        finally:
            self.cluster.close()


@pytest.fixture
async def kube(tmp_path: Path) -> AsyncIterator[KubeHarness]:
    """A fake cluster and the drivers made against it, all cleaned up after the test."""
    made = KubeHarness(tmp_path)
    try:
        yield made
    finally:
        await made.cleanup()
