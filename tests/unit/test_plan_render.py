"""How a plan reads: Terraform-style text for people, stable JSON for scripts."""

from __future__ import annotations

import json
import re

from corral.plan.diff import diff
from corral.plan.model import (
    DesiredService,
    ObservedInstanceView,
    RecordedInstance,
    RecordedRelease,
    RecordedService,
)
from corral.plan.render import plan_json, render_plan, short_value
from corral.releases import config_hash, release_config
from corral.spec.model import ServiceSpec

OLD = "sha256:" + "1a2b3c4d5e6f" + "0" * 52
NEW = "sha256:" + "9f8e7d6c5b4a" + "1" * 52
SECRET_REF = {"ref": "db-pass", "version": 7}


def _config(**changes: object) -> dict[str, object]:
    config = release_config(ServiceSpec(image="app"))
    config.update(changes)
    return config


def _desired(name: str, digest: str, replicas: int = 2, **changes: object) -> DesiredService:
    config = _config(**changes)
    return DesiredService(
        name=name,
        image="app",
        image_digest=digest,
        config=config,
        config_hash=config_hash(config),
        replicas=replicas,
        settings={"strategy": {"type": "rolling", "max_surge": 1, "max_unavailable": 0}},
    )


def _recorded(name: str, digest: str, ids: tuple[str, ...], **changes: object) -> RecordedService:
    config = _config(**changes)
    return RecordedService(
        name=name,
        current=RecordedRelease(1, digest, config_hash(config), config),
        replicas=len(ids),
        settings={"strategy": {"type": "rolling", "max_surge": 1, "max_unavailable": 0}},
        instances=tuple(
            RecordedInstance(id=i, serial=n, release=1, state="running")
            for n, i in enumerate(ids, start=1)
        ),
        next_release_number=2,
    )


def _running(*ids: str) -> list[ObservedInstanceView]:
    return [ObservedInstanceView(id=i, service=i.rsplit("-", 1)[0], running=True) for i in ids]


def test_digests_are_short_in_text_and_whole_in_json() -> None:
    plan = diff(
        [_desired("web", NEW)], [_recorded("web", OLD, ("web-1", "web-2"))], _running("web-1")
    )
    text = render_plan(plan)
    assert '~ image = "sha256:1a2b3c4d5e6f…" -> "sha256:9f8e7d6c5b4a…"  # forces replacement' in (
        text
    )
    assert OLD not in text and NEW not in text
    reasons = plan_json(plan)["actions"][0]["reasons"]
    assert reasons[0] == {
        "kind": "attribute",
        "attribute": "image",
        "before": OLD,
        "after": NEW,
        "forces_replacement": True,
    }


def test_the_replace_headline_names_releases_count_and_strategy() -> None:
    plan = diff([_desired("web", NEW, replicas=3)], [_recorded("web", OLD, ("a-1", "a-2"))], None)
    assert (
        "  # web will be replaced: r1 → r2 (new), 3 instances, rolling "
        '(max_surge 1, max_unavailable 0)\n-/+ service "web" {\n'
    ) in render_plan(plan)


def test_a_value_under_secrets_is_never_printed_nor_planned() -> None:
    created = diff([_desired("api", NEW, secrets={"DB_PASSWORD": SECRET_REF})], [], None)
    changed = diff(
        [_desired("api", NEW, secrets={"DB_PASSWORD": {**SECRET_REF, "version": 8}})],
        [_recorded("api", NEW, ("api-1",), secrets={"DB_PASSWORD": SECRET_REF})],
        None,
    )
    for plan, shown in ((created, "v7"), (changed, "v8")):
        text = render_plan(plan)
        assert "secrets.DB_PASSWORD" in text
        assert shown in text  # the version label, never the reference or value
        assert "db-pass" not in text
        actions = json.dumps(plan_json(plan)["actions"])
        assert "db-pass" not in actions


def test_an_empty_plan_says_no_changes_then_why() -> None:
    recorded = _recorded("web", OLD, ("web-1", "web-2"))
    plan = diff([_desired("web", OLD)], [recorded], _running("web-1", "web-2"))
    assert render_plan(plan) == (
        "No changes. The fleet matches the spec.\n\n  web: r1 already running 2/2; nothing to do\n"
    )


def test_every_line_of_a_plan_carries_a_prefix_the_cli_can_colour() -> None:
    plan = diff(
        [_desired("api", NEW), _desired("web", NEW, replicas=1)],
        [_recorded("old", OLD, ("old-1",)), _recorded("web", OLD, ("web-1", "web-2"))],
        [*_running("old-1", "web-1", "stray-1")],
    )
    text = render_plan(plan)
    blocks = text.split("\n\n")[1:-2]  # between the header and the counts/notes
    assert len(blocks) == 3
    for block in blocks:
        for line in block.splitlines():
            assert re.match(r"^ *(#|\+|-|~|-/\+|\}) ", line + " "), line
    notes = text.split("\n\nNotes:\n", 1)[1]
    assert notes.startswith("  stray: instance stray-1 runs with no live record")


def test_plan_json_has_the_documented_shape() -> None:
    plan = diff(
        [_desired("web", NEW)],
        [_recorded("web", OLD, ("web-1", "web-2")), _recorded("old", OLD, ("old-1",))],
        _running("web-1", "web-2", "old-1"),
        environment="staging",
        project="shop",
    )
    data = json.loads(json.dumps(plan_json(plan)))  # JSON-clean
    assert data["summary"] == {"add": 2, "change": 0, "destroy": 3}
    assert [(a["service"], a["action"]) for a in data["actions"]] == [
        ("old", "destroy"),
        ("web", "replace"),
    ]
    web = data["actions"][1]
    assert {"service", "action", "from_release", "to_release", "reasons"} <= set(web)
    assert (web["from_release"], web["to_release"]) == ("r1", "r2")
    assert data["environment"] == "staging" and data["project"] == "shop"
    assert data["state_fingerprint"] == plan.state_fingerprint


def test_short_value_spells_values_as_json() -> None:
    assert short_value("command", ["a b", "c"]) == '["a b", "c"]'
    assert short_value("port", 8080) == "8080"
    assert short_value("env.A", None) == "null"
    assert short_value("env.A", "sha256:abc") == '"sha256:abc"'  # not a digest: left alone
    assert short_value("secrets.X", {"ref": "x"}) == "(sensitive)"
