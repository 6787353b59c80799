"""An instance's runtime config (what its process runs with) against its release. Pure.

Env values are compared, but reported only by name and keyed hash (law 5)."""

from __future__ import annotations

import shlex
from collections.abc import Collection, Mapping, Sequence

from corral.audit.keys import keyed_hash
from corral.audit.report import Finding


def compare_command(expected: Sequence[str], actual: Sequence[str]) -> list[Finding]:
    if list(expected) == list(actual):
        return []
    return [
        Finding(
            "command",
            "command",
            f"runs `{shlex.join(actual)}` ≠ release `{shlex.join(expected)}`",
        )
    ]


def compare_env(
    expected: Mapping[str, str],
    actual: Mapping[str, str],
    *,
    key: bytes,
    presence_only: Collection[str] = (),
) -> list[Finding]:
    """Findings for variables added, removed or changed. `presence_only`: names whose value
    corral cannot know (secrets injected at start), checked for presence only."""
    findings: list[Finding] = []
    for name in sorted(set(expected) | set(actual)):
        if name not in actual:
            findings.append(Finding("env", f"env.{name}", f"{name} removed (release sets it)"))
        elif name not in expected:
            mark = keyed_hash(key, name, actual[name])
            findings.append(Finding("env", f"env.{name}", f"{name} added (hmac {mark})"))
        elif name not in presence_only and actual[name] != expected[name]:
            now = keyed_hash(key, name, actual[name])
            want = keyed_hash(key, name, expected[name])
            findings.append(Finding("env", f"env.{name}", f"{name} hmac {now} ≠ release {want}"))
    return findings
