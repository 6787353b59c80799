"""The auditor: proof that each instance still equals its release (image files, runtime
config) and that the host has not drifted from its baseline. It reports; the agent acts."""

from corral.audit.host import HostAuditor, boot_time, compare_host
from corral.audit.instance import InstanceAuditor, audit_instances
from corral.audit.manifest import compare_manifest
from corral.audit.report import AuditStatus, Finding, HostChange, HostReport, InstanceFinding
from corral.audit.statcache import StatCache

__all__ = [
    "AuditStatus",
    "Finding",
    "HostAuditor",
    "HostChange",
    "HostReport",
    "InstanceAuditor",
    "InstanceFinding",
    "StatCache",
    "audit_instances",
    "boot_time",
    "compare_host",
    "compare_manifest",
]
