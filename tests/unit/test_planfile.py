"""Saved plans: they round-trip, refuse what is not theirs, and go stale when the state moves."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from corral.errors import StalePlanError, UsageError, exit_code_for
from corral.plan.diff import diff
from corral.plan.fingerprint import fingerprint
from corral.plan.model import ObservedInstanceView, Plan, RecordedInstance, RecordedService
from corral.plan.planfile import ensure_fresh, load_plan, save_plan
from tests.unit.test_plan_cases import CASES_DIR, build_inputs, load_case


def _inputs(case: str) -> tuple[Plan, list[RecordedService]]:
    desired, recorded, observed = build_inputs(load_case(CASES_DIR / f"{case}.yaml"))
    return diff(desired, recorded, observed, environment="dev", project="shop"), recorded


def test_a_saved_plan_loads_back_equal(tmp_path: Path) -> None:
    # Rich on purpose: several actions, list-valued reasons, secrets, notes and orphans.
    plan, _ = _inputs("multiple_attributes")
    for case in ("two_services", "secret_reference_changed", "orphan_observed", "dead_instance"):
        other, _ = _inputs(case)
        plan = dataclasses.replace(
            plan,
            actions=plan.actions + other.actions,
            desired=plan.desired + other.desired,
            notes=plan.notes + other.notes,
            orphans=plan.orphans + other.orphans,
        )
    assert len(plan.actions) == 6 and plan.orphans and plan.notes
    path = tmp_path / "web.plan"
    save_plan(plan, path)
    assert load_plan(path) == plan
    assert [p.name for p in tmp_path.iterdir()] == ["web.plan"]  # no temporary file left


def test_the_file_is_the_documented_json(tmp_path: Path) -> None:
    plan, _ = _inputs("image_change")
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    data = json.loads(path.read_text())
    assert (data["format"], data["version"]) == ("corral-plan", 1)
    assert data["environment"] == "dev" and data["project"] == "shop"
    assert data["state_fingerprint"] == plan.state_fingerprint
    assert data["actions"][0]["action"] == "replace"
    assert data["actions"][0]["reasons"][0]["attribute"] == "image"
    assert data["desired"][0]["name"] == "web"
    assert data["desired"][0]["config"]["v"] == 1


def test_the_file_holds_no_secret_reference(tmp_path: Path) -> None:
    plan, _ = _inputs("secret_reference_changed")
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    actions = json.dumps(json.loads(path.read_text())["actions"])
    assert "secrets.DB_PASSWORD" in actions and "db-pass" not in actions


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("hello: world\n", "is not a corral plan: not JSON"),
        ("[1, 2]", 'is not a corral plan: no "format": "corral-plan" field'),
        ('{"format": "terraform-plan", "version": 1}', "is not a corral plan"),
        ('{"format": "corral-plan", "version": 2}', "format version 2; this corral reads"),
        ('{"format": "corral-plan"}', "format version None"),
        ('{"format": "corral-plan", "version": 1, "actions": []}', "a damaged corral plan"),
    ],
)
def test_load_refuses_what_is_not_a_plan_it_reads(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "plan.json"
    path.write_text(content)
    with pytest.raises(UsageError) as raised:
        load_plan(path)
    assert message in str(raised.value)
    assert str(path) in str(raised.value)
    assert "corral plan -out" in str(raised.value)  # says what to do
    assert exit_code_for(raised.value) == 2


def test_load_refuses_an_unknown_action(tmp_path: Path) -> None:
    plan, _ = _inputs("dead_instance")
    path = tmp_path / "plan.json"
    save_plan(plan, path)
    data = json.loads(path.read_text())
    data["actions"][0]["action"] = "repair"
    path.write_text(json.dumps(data))
    with pytest.raises(UsageError, match="damaged corral plan"):
        load_plan(path)


def test_load_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such plan file"):
        load_plan(tmp_path / "nope.json")


def test_a_plan_is_fresh_until_the_recorded_state_changes() -> None:
    plan, recorded = _inputs("dead_instance")
    ensure_fresh(plan, recorded, environment="dev")
    ensure_fresh(plan, list(reversed(recorded)), environment="dev")

    web = recorded[0]
    healed = dataclasses.replace(
        web,
        instances=(
            *web.instances[:1],
            *web.instances[2:],
            RecordedInstance(id="web-4", serial=2, release=4, state="running"),
        ),
    )
    with pytest.raises(StalePlanError, match="has changed since this plan was made") as raised:
        ensure_fresh(plan, [healed], environment="dev")
    assert exit_code_for(raised.value) == 2
    with pytest.raises(StalePlanError, match='made for environment "dev", not "prod"'):
        ensure_fresh(plan, recorded, environment="prod")


def test_the_fingerprint_ignores_observations_and_order_but_not_state() -> None:
    _, recorded = _inputs("two_services")
    base = fingerprint(recorded)
    assert base == fingerprint(list(reversed(recorded)))
    web = next(s for s in recorded if s.name == "web")
    shuffled = dataclasses.replace(web, instances=tuple(reversed(web.instances)))
    assert fingerprint([shuffled if s is web else s for s in recorded]) == base

    desired, _, _ = build_inputs(load_case(CASES_DIR / "two_services.yaml"))
    dead = [ObservedInstanceView(id="web-1", service="web", running=False)]
    assert diff(desired, recorded, dead).state_fingerprint == base
    assert diff(desired, recorded, None).state_fingerprint == base

    for change in (
        {"replicas": 4},
        {"settings": {"route": {"port": 1}}},
        {"next_release_number": 9},
        {"instances": web.instances[:-1]},
        {"current": dataclasses.replace(web.current, config_hash="sha256:0")}
        if web.current
        else {},
    ):
        moved = dataclasses.replace(web, **change)
        assert fingerprint([moved if s is web else s for s in recorded]) != base, change
