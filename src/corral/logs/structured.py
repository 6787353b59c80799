"""Lines an app writes as JSON objects, kept structured.

A line that is one JSON object (`{"level": "info", "msg": "ready", "port": 8080}`) is stored
as written (the file stays the record); reading gives its fields, so `corral logs --json`
carries them as an object, the human view puts the level and the message first, and
`--field KEY=VALUE` selects on a field (KEY may be a dotted path into nested objects).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

LEVEL_KEYS = ("level", "lvl", "severity", "levelname", "log.level")
MESSAGE_KEYS = ("msg", "message", "event")


def fields_of(text: str) -> dict[str, Any] | None:
    """The object a line holds when it is exactly one JSON object; None for any other line."""
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _scalar(value: Any) -> str:
    """A field's value as one would type it after `=`: strings bare, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def readable(fields: dict[str, Any]) -> str:
    """`INFO ready port=8080 user="a b"`: the level and the message first, then the rest."""
    rest = dict(fields)
    level = next((rest.pop(k) for k in LEVEL_KEYS if k in rest), None)
    message = next((rest.pop(k) for k in MESSAGE_KEYS if k in rest), None)
    parts = [] if level is None else [_scalar(level).upper()]
    if message is not None:
        parts.append(_scalar(message))
    for key, value in rest.items():
        shown = _scalar(value)
        if isinstance(value, str) and (not value or any(c.isspace() or c in '"=' for c in value)):
            shown = json.dumps(value)  # quoted, so `key=value` pairs still split cleanly
        parts.append(f"{key}={shown}")
    return " ".join(parts)


@dataclass(frozen=True)
class FieldMatch:
    """`KEY=VALUE`: a structured line whose field KEY equals VALUE (a string as written; a
    number, boolean or null as its JSON text: `status=200`, `ok=true`)."""

    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> FieldMatch:
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{text!r} is not KEY=VALUE (e.g. level=error or req.status=500)")
        return cls(key.strip(), value)

    def matches(self, fields: dict[str, Any] | None) -> bool:
        if fields is None:
            return False
        found = _lookup(fields, self.key)
        return found is not _MISSING and _scalar(found) == self.value

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


_MISSING = object()


def _lookup(fields: dict[str, Any], key: str) -> Any:
    """`key` itself (a flat `log.level`), else a dotted path into nested objects."""
    if key in fields:
        return fields[key]
    head, dot, tail = key.partition(".")
    if dot and isinstance(fields.get(head), dict):
        return _lookup(fields[head], tail)
    return _MISSING
