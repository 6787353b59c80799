"""Instances corral cannot audit from here: reported `not audited`, with the reason, never
`clean` (a clean report must mean that corral looked).

A Kubernetes pod's files are not readable through the API corral uses; the local auditor
would otherwise compare this host's unpacked image root and call the remote instances clean.
(Swarm tasks are audited through their node's engine: audit/swarm.py.)
"""

from __future__ import annotations

from dataclasses import replace

from corral.audit.live import live_instances
from corral.audit.report import InstanceFinding
from corral.state.protocol import StateStore
from corral.state.records import InstanceState

REASONS = {
    "kubernetes": "corral cannot read a pod's files through the Kubernetes API",
}


def audits(driver: str) -> bool:
    """Whether corral audits the instances of `driver` (local, docker and swarm do)."""
    return driver not in REASONS


class UnauditedFleet:
    """The auditor of a driver corral cannot audit: each live instance is `not audited`."""

    def __init__(self, driver: str) -> None:
        self.reason = REASONS.get(driver, f"the {driver} driver's instances are not audited")

    def audit(
        self, store: StateStore, *, service: str | None = None, full: bool = False
    ) -> list[InstanceFinding]:
        found = []
        for record, base in live_instances(store, service):
            if record.state is not InstanceState.RUNNING:
                found.append(replace(base, skipped=f"{record.state} (in a roll-out's hands)"))
            else:
                found.append(replace(base, not_audited=(self.reason,)))
        return sorted(found, key=lambda f: (f.service, f.instance_id))
