"""The JSON Schema of `corral.yaml`, for editors (completion, inline errors) and CI linters.

It is generated from the pydantic models, so it cannot drift from what `load_spec` accepts;
two places need help: durations (validated from text, so pydantic would only see the float
they become) and names (whose rule is on dict keys, which JSON Schema calls propertyNames).
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from corral.spec import durations
from corral.spec.model import Spec

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

_DURATION = {
    "anyOf": [
        {"type": "string", "pattern": durations._PATTERN.pattern},
        {"type": "number", "minimum": 0},
    ],
    "description": "a duration: a number with a unit (ms, s, m, h), or a number of seconds",
    "examples": ["200ms", "1.5s", "2m", 10],
}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a corral.yaml file, keyed by the names users write."""
    generated = Spec.model_json_schema(by_alias=True, schema_generator=_Generator)
    generated.pop("title", None)
    _names_as_property_names(generated)
    return {
        "$schema": SCHEMA_DIALECT,
        "title": "corral.yaml",
        **generated,
    }


class _Generator(GenerateJsonSchema):
    def function_before_schema(
        self, schema: core_schema.BeforeValidatorFunctionSchema
    ) -> JsonSchemaValue:
        if schema["function"]["function"] is durations.parse_duration:
            return dict(_DURATION)
        return super().function_before_schema(schema)


def _names_as_property_names(node: Any) -> None:
    """`patternProperties: {P: S}` (pydantic's form for a dict with a key rule) →
    `propertyNames: {pattern: P}, additionalProperties: S`, so a badly named key is rejected
    instead of being allowed through as an unmatched property."""
    if isinstance(node, dict):
        patterns = node.get("patternProperties")
        if isinstance(patterns, dict) and len(patterns) == 1 and "additionalProperties" not in node:
            ((pattern, value_schema),) = patterns.items()
            del node["patternProperties"]
            node["propertyNames"] = {"pattern": pattern}
            node["additionalProperties"] = value_schema
        for child in node.values():
            _names_as_property_names(child)
    elif isinstance(node, list):
        for child in node:
            _names_as_property_names(child)
