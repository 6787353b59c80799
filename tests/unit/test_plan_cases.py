"""The plan's decisions as data (pyinfra style): tests/plans/<case>.yaml → diff → expected.

A case file holds:

    desired:   [{name, digest, image?, config?, raw_config?, replicas?, settings?}]
    recorded:  [{name, current: {number, digest, config?, raw_config?} | null, replicas?,
                 settings?, instances: ["web-1" | {id, release?, state?}],
                 next_release_number?, releases?: [{number, digest, config?}]}]
    observed:  null | "running" (every live record observed running)
               | ["web-1" | {id, running?, service?}]
    expect:    [{service, action, from_release, to_release, reasons: [{kind, attribute?,
                 before?, after?, instance_id?}], replicas_before?, replicas_after?,
                 instance_ids?, new_release?}]
    summary?, notes_contain?, notes_empty?, orphans?, render_contains?, render_lacks?

`config` is merged into the default release config (`releases.release_config`) so a case
names only what it changes; `raw_config` is used as given. Config hashes are computed with
`releases.config_hash`, as the real callers do. Besides each case's own expectations, every
case checks the invariants a plan must keep (ordering, determinism, fingerprint, save/load,
rendering).
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from corral.errors import StateError, UsageError
from corral.plan.diff import diff
from corral.plan.fingerprint import fingerprint
from corral.plan.model import (
    Action,
    DesiredService,
    ObservedInstanceView,
    Plan,
    Reason,
    ReasonKind,
    RecordedInstance,
    RecordedRelease,
    RecordedService,
)
from corral.plan.planfile import load_plan, save_plan
from corral.plan.render import plan_json, render_plan
from corral.releases import config_hash, release_config
from corral.spec.model import ServiceSpec

CASES_DIR = Path(__file__).resolve().parents[1] / "plans"
CASES = sorted(CASES_DIR.glob("*.yaml"))
_CASE_KEYS = {
    "description",
    "desired",
    "recorded",
    "observed",
    "expect",
    "summary",
    "notes_contain",
    "notes_empty",
    "orphans",
    "render_contains",
    "render_lacks",
}


def load_case(path: Path) -> dict[str, Any]:
    data = YAML(typ="safe", pure=True).load(path.read_text())
    assert isinstance(data, dict), f"{path.name}: a case is a mapping"
    unknown = set(data) - _CASE_KEYS
    assert not unknown, f"{path.name}: unknown keys {sorted(unknown)}"
    return data


def build_inputs(
    case: dict[str, Any],
) -> tuple[list[DesiredService], list[RecordedService], list[ObservedInstanceView] | None]:
    desired = [_desired(item) for item in case.get("desired") or []]
    recorded = [_recorded(item) for item in case.get("recorded") or []]
    return desired, recorded, _observed(case.get("observed"), recorded)


def plan_for(path: Path) -> Plan:
    desired, recorded, observed = build_inputs(load_case(path))
    return diff(desired, recorded, observed, environment="dev", project="shop")


def _config(item: dict[str, Any]) -> dict[str, Any]:
    if "raw_config" in item:
        raw: dict[str, Any] = item["raw_config"]
        return raw
    base = release_config(ServiceSpec(image="x"))
    return _merge(base, item.get("config") or {})


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and merged[key]:
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _desired(item: dict[str, Any]) -> DesiredService:
    config = _config(item)
    return DesiredService(
        name=item["name"],
        image=item.get("image", item["name"]),
        image_digest=item["digest"],
        config=config,
        config_hash=config_hash(config),
        replicas=item.get("replicas", 1),
        settings=item.get("settings") or {},
    )


def _release(item: dict[str, Any]) -> RecordedRelease:
    config = _config(item)
    return RecordedRelease(
        number=item["number"],
        image_digest=item["digest"],
        config_hash=config_hash(config),
        config=config,
    )


def _recorded(item: dict[str, Any]) -> RecordedService:
    current = _release(item["current"]) if item.get("current") else None
    releases = tuple(_release(r) for r in item.get("releases") or [])
    instances = tuple(_instance(i, current) for i in item.get("instances") or [])
    numbers = [r.number for r in releases] + ([current.number] if current else [0])
    return RecordedService(
        name=item["name"],
        current=current,
        replicas=item.get("replicas", len(instances)),
        settings=item.get("settings") or {},
        instances=instances,
        next_release_number=item.get("next_release_number", max(numbers) + 1),
        releases=releases,
    )


def _instance(item: str | dict[str, Any], current: RecordedRelease | None) -> RecordedInstance:
    data: dict[str, Any] = {"id": item} if isinstance(item, str) else item
    instance_id: str = data["id"]
    return RecordedInstance(
        id=instance_id,
        serial=int(instance_id.rsplit("-", 1)[1]),
        release=data.get("release", current.number if current else 1),
        state=data.get("state", "running"),
    )


def _observed(value: Any, recorded: list[RecordedService]) -> list[ObservedInstanceView] | None:
    if value is None:
        return None
    if value == "running":
        return [
            ObservedInstanceView(id=i.id, service=s.name, running=True)
            for s in recorded
            for i in s.instances
        ]
    views = []
    for item in value:
        data: dict[str, Any] = {"id": item} if isinstance(item, str) else item
        service = data.get("service", data["id"].rsplit("-", 1)[0])
        views.append(
            ObservedInstanceView(id=data["id"], service=service, running=data.get("running", True))
        )
    return views


def _check_action(case: str, actual: Action, expected: dict[str, Any]) -> None:
    where = f"{case}: {expected['service']}"
    assert actual.service == expected["service"], where
    assert actual.kind.value == expected["action"], where
    assert actual.from_release == expected["from_release"], f"{where}: from_release"
    assert actual.to_release == expected["to_release"], f"{where}: to_release"
    for key in ("replicas_before", "replicas_after", "new_release"):
        if key in expected:
            assert getattr(actual, key) == expected[key], f"{where}: {key}"
    if "instance_ids" in expected:
        assert list(actual.instance_ids) == expected["instance_ids"], f"{where}: instance_ids"
    reasons = expected["reasons"]
    shown = [r.to_dict() for r in actual.reasons]
    assert len(actual.reasons) == len(reasons), f"{where}: reasons {shown}"
    for got, want in zip(actual.reasons, reasons, strict=True):
        _check_reason(where, got, want)


def _check_reason(where: str, got: Reason, want: dict[str, Any]) -> None:
    assert got.kind.value == want["kind"], f"{where}: {got.to_dict()} vs {want}"
    for key in ("attribute", "before", "after", "instance_id"):
        if key in want:
            assert getattr(got, key) == want[key], f"{where}: {key} of {got.to_dict()}"
    # Only instance-defining attributes force a replacement (law 1), and they always do.
    assert got.forces_replacement == (got.kind is ReasonKind.ATTRIBUTE), where


def _check_invariants(
    path: Path,
    plan: Plan,
    inputs: tuple[list[DesiredService], list[RecordedService], list[ObservedInstanceView] | None],
    tmp_path: Path,
) -> None:
    desired, recorded, observed = inputs
    names = [a.service for a in plan.actions]
    assert names == sorted(names) and len(set(names)) == len(names), "one action per service"
    assert plan.state_fingerprint == fingerprint(recorded)

    shuffle = random.Random(path.name).shuffle
    wanted, known, seen = list(desired), list(recorded), list(observed or [])
    shuffle(wanted)
    shuffle(known)
    shuffle(seen)
    again = diff(
        wanted, known, seen if observed is not None else None, environment="dev", project="shop"
    )
    assert again == plan, "the plan must not depend on the order of its inputs"

    saved = tmp_path / "plan.json"
    save_plan(plan, saved)
    assert load_plan(saved) == plan

    text = render_plan(plan)
    if plan.is_empty:
        assert text.startswith("No changes. ")
    else:
        summary = plan.summary()
        assert (
            f"Plan: {summary['add']} to add, {summary['change']} to change, "
            f"{summary['destroy']} to destroy." in text
        )
    data = plan_json(plan)
    assert set(data["summary"]) == {"add", "change", "destroy"}
    assert [a["service"] for a in data["actions"]] == names


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_plan_case(path: Path, tmp_path: Path) -> None:
    case = load_case(path)
    inputs = build_inputs(case)
    plan = diff(*inputs, environment="dev", project="shop")

    expected = case.get("expect") or []
    got = [a.to_dict() for a in plan.actions]
    assert len(plan.actions) == len(expected), f"{path.name}: actions {got}"
    for actual, want in zip(plan.actions, expected, strict=True):
        _check_action(path.name, actual, want)

    if "summary" in case:
        assert plan.summary() == case["summary"], path.name
    for fragment in case.get("notes_contain") or []:
        assert any(fragment in note for note in plan.notes), f"{fragment!r} in {plan.notes}"
    if case.get("notes_empty"):
        assert plan.notes == ()
    if "orphans" in case:
        assert [view.id for view in plan.orphans] == case["orphans"]
    text = render_plan(plan)
    for fragment in case.get("render_contains") or []:
        assert fragment in text, f"{fragment!r} not in:\n{text}"
    for fragment in case.get("render_lacks") or []:
        assert fragment not in text, f"{fragment!r} in:\n{text}"

    _check_invariants(path, plan, inputs, tmp_path)


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 24


def test_a_service_named_twice_is_refused() -> None:
    case = load_case(CASES_DIR / "two_services.yaml")
    desired, recorded, observed = build_inputs(case)
    with pytest.raises(UsageError, match="'web' appears twice in the desired services"):
        diff([*desired, desired[0]], recorded, observed)
    with pytest.raises(StateError, match="'web' appears twice in the recorded services"):
        diff(desired, [*recorded, recorded[0]], observed)
