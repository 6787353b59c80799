"""A container's runtime config (`docker inspect`) against what corral launched. Pure.

What corral launched is the driver's record (`container.json`, written before the container is
created): image id, command, volume binds, and every env variable's keyed hash (law 5: names
and HMACs only, never values; `as: env` secrets by presence only). The engine cannot change a
container's image, env or command in place, so a difference there means the container was
recreated or committed and re-run outside corral; `docker update` can change its host config,
which is checked against the hardening every corral container gets (law 1).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from typing import Any

from corral.audit.keys import keyed_hash
from corral.audit.report import Finding


def env_marks(key: bytes, env: Mapping[str, str], secret_names: set[str]) -> dict[str, str]:
    """name → keyed hash of what the container must run with; secrets by presence ("")."""
    return {
        name: "" if name in secret_names else keyed_hash(key, name, value)
        for name, value in env.items()
    }


def compare_container(
    record: Mapping[str, Any],
    inspect: Mapping[str, Any],
    *,
    key: bytes,
    no_new_privileges: bool = True,
) -> list[Finding]:
    """Findings for `inspect` (the engine's view of a container) against the driver's
    `record`. A record without `env_marks` (older corral) has its env checked by name only.
    `no_new_privileges`: whether the driver sets it (Swarm cannot before API 1.44)."""
    config = inspect.get("Config") or {}
    host = inspect.get("HostConfig") or {}
    findings: list[Finding] = []
    image = str(inspect.get("Image") or "")
    if image != record.get("image_id"):
        findings.append(
            Finding("image", "image", f"runs image {image} ≠ launched {record.get('image_id')}")
        )
    findings += _command(record, config)
    findings += _env(record, config.get("Env") or [], key)
    findings += _mounts(record, inspect.get("Mounts") or [])
    findings += _hardening(host, no_new_privileges)
    return findings


def _command(record: Mapping[str, Any], config: Mapping[str, Any]) -> list[Finding]:
    want = record.get("command")
    now = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
    if want is None:  # launched with the image's own cmd: only an entrypoint would differ
        if config.get("Entrypoint"):
            return [
                Finding("command", "command", f"runs `{shlex.join(now)}` (an entrypoint was added)")
            ]
        return []
    if now == list(want):
        return []
    return [
        Finding("command", "command", f"runs `{shlex.join(now)}` ≠ launched `{shlex.join(want)}`")
    ]


def _env(record: Mapping[str, Any], items: list[str], key: bytes) -> list[Finding]:
    actual = dict(item.partition("=")[::2] for item in items)
    marks: Mapping[str, str] | None = record.get("env_marks")
    if marks is None:  # names only
        marks = {name: "" for name in record.get("env_names", [])}
        marks.update({name: "" for name in record.get("secret_names", [])})
    findings: list[Finding] = []
    for name in sorted(set(marks) | set(actual)):
        if name not in actual:
            findings.append(Finding("env", f"env.{name}", f"{name} removed (launched with it)"))
            continue
        now = keyed_hash(key, name, actual[name])
        if name not in marks:
            if record.get("env_marks") is not None:
                findings.append(Finding("env", f"env.{name}", f"{name} added (hmac {now})"))
        elif marks[name] and marks[name] != now:
            findings.append(
                Finding("env", f"env.{name}", f"{name} hmac {now} ≠ launched {marks[name]}")
            )
    return findings


def _mounts(record: Mapping[str, Any], mounts: list[Mapping[str, Any]]) -> list[Finding]:
    want = sorted(record.get("binds") or [])
    now = sorted(
        f"{m.get('Name') or m.get('Source')}:{m.get('Destination')}:{'rw' if m.get('RW') else 'ro'}"
        for m in mounts
    )
    if "binds" not in record or now == want:
        return []
    return [Finding("mounts", "mounts", f"mounts {now or 'none'} ≠ launched {want or 'none'}")]


def _hardening(host: Mapping[str, Any], no_new_privileges: bool) -> list[Finding]:
    """Law 1 and the no-login policy, as the driver sets them; `docker update` reaches some."""
    found: list[str] = []
    if not host.get("ReadonlyRootfs"):
        found.append("root filesystem is writable")
    if host.get("Privileged"):
        found.append("privileged")
    if no_new_privileges and "no-new-privileges" not in (host.get("SecurityOpt") or []):
        found.append("no-new-privileges is off")
    if (host.get("CapDrop") or []) != ["ALL"]:
        found.append(f"capabilities dropped {host.get('CapDrop')} ≠ ['ALL']")
    restart = (host.get("RestartPolicy") or {}).get("Name") or "no"
    if restart != "no":
        found.append(f"restart policy {restart} ≠ no (the agent replaces, the engine must not)")
    return [Finding("hostconfig", "hostconfig", detail) for detail in found]
