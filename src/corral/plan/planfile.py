"""Saved plans (`corral plan -out FILE`, `corral apply FILE`): JSON on disk, checked on load.

A saved plan carries the fingerprint of the recorded state it was made from; `ensure_fresh`
refuses it once that state has changed, as Terraform refuses a stale plan. The file holds the
full desired services (what an apply needs), never a secret value: releases keep references
only (law 5) and the diff shows even those as "(sensitive)".
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from corral.errors import StalePlanError, UsageError
from corral.plan.fingerprint import fingerprint
from corral.plan.model import (
    Action,
    ActionKind,
    DesiredService,
    ObservedInstanceView,
    Plan,
    Reason,
    RecordedService,
)

FORMAT = "corral-plan"
VERSION = 1
_RELEASE = re.compile(r"^r([1-9][0-9]*)$")


def save_plan(plan: Plan, path: str | os.PathLike[str]) -> None:
    """Write the plan to `path` atomically (a reader never sees half a file)."""
    target = Path(path)
    text = json.dumps(plan_document(plan), indent=2, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read a saved plan; UsageError when it is missing, not a corral plan, or another version."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"{source}: no such plan file", hint="Save one with `corral plan -out FILE`."
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{source}: cannot read the plan file: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _not_a_plan(source, f"not JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise _not_a_plan(source, f'no "format": "{FORMAT}" field')
    version = data.get("version")
    if version != VERSION:
        raise UsageError(
            f"{source}: a corral plan of format version {version!r}; this corral reads "
            f"version {VERSION}",
            hint="Make the plan again with this corral: `corral plan -out FILE`.",
        )
    try:
        return plan_from_document(data)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(
            f"{source}: a damaged corral plan ({type(exc).__name__}: {exc})",
            hint="Make the plan again: `corral plan -out FILE`.",
        ) from exc


def ensure_fresh(plan: Plan, recorded: Sequence[RecordedService], *, environment: str) -> None:
    """Raise StalePlanError when the plan is for another environment or the recorded state
    has changed since it was made."""
    if plan.environment != environment:
        raise StalePlanError(
            f'this plan was made for environment "{plan.environment}", not "{environment}"',
            hint=f"Apply it with `--env {plan.environment}`, or make a new plan.",
        )
    if fingerprint(recorded) != plan.state_fingerprint:
        raise StalePlanError(
            f'the recorded state of environment "{environment}" has changed since this plan '
            "was made (another apply, heal or destroy ran)",
            hint="Review a fresh plan: `corral plan -out FILE`, then apply that file.",
        )


def plan_document(plan: Plan) -> dict[str, Any]:
    """The saved form: `plan --json`'s actions, plus what an apply needs to carry them out."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "environment": plan.environment,
        "project": plan.project,
        "state_fingerprint": plan.state_fingerprint,
        "actions": [action.to_dict() for action in plan.actions],
        "summary": plan.summary(),  # for readers; recomputed, never read back
        "desired": [_desired_to_dict(service) for service in plan.desired],
        "notes": list(plan.notes),
        "orphans": [
            {"id": view.id, "service": view.service, "running": view.running}
            for view in plan.orphans
        ],
    }


def plan_from_document(data: dict[str, Any]) -> Plan:
    return Plan(
        actions=tuple(_action_from_dict(item) for item in data["actions"]),
        state_fingerprint=_text(data["state_fingerprint"]),
        desired=tuple(_desired_from_dict(item) for item in data["desired"]),
        environment=_text(data["environment"]),
        project=_text(data["project"]),
        notes=tuple(_text(note) for note in data.get("notes", [])),
        orphans=tuple(
            ObservedInstanceView(
                id=_text(item["id"]),
                service=_text(item["service"]),
                running=bool(item.get("running", True)),
            )
            for item in data.get("orphans", [])
        ),
    )


def _desired_to_dict(service: DesiredService) -> dict[str, Any]:
    return {
        "name": service.name,
        "image": service.image,
        "image_digest": service.image_digest,
        "config": service.config,
        "config_hash": service.config_hash,
        "replicas": service.replicas,
        "settings": service.settings,
    }


def _desired_from_dict(data: dict[str, Any]) -> DesiredService:
    return DesiredService(
        name=_text(data["name"]),
        image=_text(data["image"]),
        image_digest=_text(data["image_digest"]),
        config=_mapping(data["config"]),
        config_hash=_text(data["config_hash"]),
        replicas=_count(data["replicas"]),
        settings=_mapping(data["settings"]),
    )


def _action_from_dict(data: dict[str, Any]) -> Action:
    return Action(
        service=_text(data["service"]),
        kind=ActionKind(data["action"]),
        from_release=_release_number(data.get("from_release")),
        to_release=_release_number(data.get("to_release")),
        reasons=tuple(Reason.from_dict(_mapping(item)) for item in data["reasons"]),
        replicas_before=_optional_count(data.get("replicas_before")),
        replicas_after=_optional_count(data.get("replicas_after")),
        instance_ids=tuple(_text(i) for i in data.get("instance_ids", [])),
        new_release=bool(data.get("new_release", False)),
    )


def _release_number(value: Any) -> int | None:
    if value is None:
        return None
    match = _RELEASE.match(_text(value))
    if match is None:
        raise ValueError(f"{value!r} is not a release name like r3")
    return int(match.group(1))


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {value!r}")
    return value


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"expected a count (0 or more), got {value!r}")
    return value


def _optional_count(value: Any) -> int | None:
    return None if value is None else _count(value)


def _not_a_plan(source: Path, why: str) -> UsageError:
    return UsageError(
        f"{source} is not a corral plan: {why}",
        hint="Give the file written by `corral plan -out FILE`.",
    )
