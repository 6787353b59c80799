"""Where corral cannot look (kubernetes pods), an audit says `not audited` with the reason,
never `clean`; local, docker and swarm are audited (swarm: tests/e2e/test_swarm_audit.py)."""

from __future__ import annotations

import pytest

from corral.audit import unaudited
from corral.audit.report import AuditStatus
from corral.state.memory import InMemoryStateStore
from corral.state.records import InstanceRecord, InstanceState


@pytest.mark.parametrize("driver", ["kubernetes", "nomad"])
def test_instances_of_a_driver_corral_cannot_audit_are_never_clean(driver: str) -> None:
    store = InMemoryStateStore("p/prod")
    store.get_or_create_release("web", "sha256:" + "a" * 64, "sha256:c1", {"v": 1}, "alice")
    for serial, state in enumerate((InstanceState.RUNNING, InstanceState.STOPPING)):
        store.put_instance(
            InstanceRecord(id=f"web-{serial}", service="web", serial=serial, release=1, state=state)
        )
    found = unaudited.UnauditedFleet(driver).audit(store)
    assert [f.status for f in found] == [AuditStatus.NOT_AUDITED, AuditStatus.SKIPPED]
    assert found[0].not_audited == (unaudited.UnauditedFleet(driver).reason,)
    assert found[0].image_digest == "sha256:" + "a" * 64


def test_local_docker_and_swarm_are_audited() -> None:
    assert unaudited.audits("local") and unaudited.audits("docker") and unaudited.audits("swarm")
    assert not unaudited.audits("kubernetes")
