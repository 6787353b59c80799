"""json_schema: editors and linters accept what corral accepts and reject what it rejects."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from corral.spec.durations import parse_duration
from corral.spec.schema import json_schema

jsonschema = pytest.importorskip("jsonschema")

HELLO = Path(__file__).parent / "specs" / "hello.yaml"


def validator() -> Any:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_schema_names_its_dialect_and_title() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "corral.yaml"
    # Keys are the names users write, not the Python attribute names.
    image = schema["$defs"]["ImageSpec"]["properties"]
    assert {"from", "copy"} <= image.keys()
    assert not {"from_", "copy_"} & image.keys()


def test_the_example_spec_is_valid() -> None:
    document = YAML(typ="safe").load(HELLO.read_text())
    errors = [e.message for e in validator().iter_errors(document)]
    assert errors == []


def test_durations_are_documented_as_string_or_number() -> None:
    interval = json_schema()["$defs"]["HealthSpec"]["properties"]["interval"]
    assert sorted(arm["type"] for arm in interval["anyOf"]) == ["number", "string"]
    assert "200ms" in interval["examples"]


@pytest.mark.parametrize(
    "text", ["200ms", "1.5s", "2m", "1h", "10", " 3 s", "fast", "-1s", "1.s", "2d", "1e3", ""]
)
def test_the_duration_pattern_accepts_what_the_loader_accepts(text: str) -> None:
    interval = json_schema()["$defs"]["HealthSpec"]["properties"]["interval"]
    [pattern] = [arm["pattern"] for arm in interval["anyOf"] if arm["type"] == "string"]
    try:
        parse_duration(text)
        accepted = True
    except ValueError:
        accepted = False
    assert bool(re.search(pattern, text)) == accepted


@pytest.mark.parametrize(
    "fragment",
    [
        {"services": {"web": {"image": "app", "replica": 3}}},  # unknown field
        {"services": {"web": {"image": "app", "replicas": "three"}}},
        {"services": {"web": {"image": "app", "replicas": -1}}},
        {"services": {"web": {"image": "app", "health": {"interval": "fast"}}}},
        {"services": {"web": {"image": "app", "strategy": {"max_surge": "lots"}}}},
        {"services": {"Web_1": {"image": "app"}}},  # invalid name
        {"services": {"web": {"image": "app", "env": {"BAD-NAME": "x"}}}},
        {"services": {"web": {"replicas": 1}}},  # image is required
        {"images": {"app": {"copy": [{"src": "a"}]}}},  # dest is required
        {"driver": "nomad"},  # not a driver corral has
    ],
)
def test_the_schema_rejects_bad_specs(fragment: dict[str, Any]) -> None:
    assert not validator().is_valid({"images": {"app": {}}, **fragment})
