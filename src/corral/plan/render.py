"""A plan as Terraform-style text, and as the JSON of `corral plan --json`.

Plain text only: each line's meaning is in its prefix (`+`, `-`, `~`, `-/+`, `#`) so the CLI
can colour by prefix. Digests are shortened to 12 hex characters here (the JSON keeps them
whole), and a value under `secrets` is never printed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from corral.plan.model import Action, ActionKind, DesiredService, Plan, Reason, ReasonKind
from corral.releases import flatten
from corral.secrets.labels import LABEL as _SECRET_LABEL
from corral.secrets.labels import version_label

_SYMBOL = {
    ActionKind.CREATE: "+",
    ActionKind.DESTROY: "-",
    ActionKind.SCALE: "~",
    ActionKind.UPDATE: "~",
    ActionKind.REPLACE: "-/+",
    ActionKind.HEAL: "-/+",
}
_DIGEST = re.compile(r"^(sha256:)([0-9a-f]{12})[0-9a-f]+$")
_INSTANCE_WHY = {
    ReasonKind.INSTANCE_EXITED: "exited",
    ReasonKind.INSTANCE_MISSING: "missing: recorded live, not observed",
}
_DRIFT_WHY = {
    ReasonKind.UNDER_REPLICATED: "under-replicated",
    ReasonKind.OVER_REPLICATED: "over-replicated",
}
# What a new service's block lists: the release's main attributes, then the fleet's.
_CREATE_CONFIG = re.compile(r"^(command|port|env\..+|health\.http\.path|mounts)$")


def render_plan(plan: Plan) -> str:
    """The plan as text: one block per action, the counts, then the notes."""
    if plan.is_empty:
        lines = ["No changes. The fleet matches the spec."]
        if plan.notes:
            lines.append("")
            lines.extend(f"  {note}" for note in plan.notes)
        return "\n".join(lines) + "\n"

    where = f'environment "{plan.environment}"'
    if plan.project:
        where += f' of project "{plan.project}"'
    lines = [f"corral will perform the following actions in {where}:", ""]
    desired = {service.name: service for service in plan.desired}
    for action in plan.actions:
        lines.extend(_block(action, desired.get(action.service)))
        lines.append("")
    counts = plan.summary()
    lines.append(
        f"Plan: {counts['add']} to add, {counts['change']} to change, "
        f"{counts['destroy']} to destroy."
    )
    if plan.notes:
        lines.extend(["", "Notes:"])
        lines.extend(f"  {note}" for note in plan.notes)
    return "\n".join(lines) + "\n"


def plan_json(plan: Plan) -> dict[str, Any]:
    """`corral plan --json`: DESIGN.md's shape, plus the plan's context and notes."""
    data = plan.to_dict()
    data.update(
        environment=plan.environment,
        project=plan.project,
        state_fingerprint=plan.state_fingerprint,
        notes=list(plan.notes),
        orphans=[{"id": view.id, "service": view.service} for view in plan.orphans],
    )
    return data


def short_value(attribute: str | None, value: Any) -> str:
    """One value as the text shows it: JSON spelling, digests cut, secrets hidden."""
    if value is None:
        return "null"
    if attribute is not None and attribute.startswith("secrets."):
        # only a version label (`v3`, `#1a2b3c4d`) is shown; anything else stays hidden
        return value if isinstance(value, str) and _SECRET_LABEL.match(value) else "(sensitive)"
    if isinstance(value, str):
        return json.dumps(_DIGEST.sub(r"\1\2…", value), ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _block(action: Action, desired: DesiredService | None) -> list[str]:
    symbol = _SYMBOL[action.kind]
    body = _body(action, desired)
    return [
        f"  # {_headline(action, desired)}",
        f'{symbol:>3} service "{action.service}" {{',
        *(_line(sym, text) for sym, text in body),
        "    }",
    ]


def _line(symbol: str, text: str) -> str:
    return f"    {symbol:>3} {text}"


def _headline(action: Action, desired: DesiredService | None) -> str:
    name, kind = action.service, action.kind
    to = _release(action.to_release, new=action.new_release)
    count = _instances(action.replicas_after or 0)
    strategy = _strategy(desired)
    if kind is ActionKind.CREATE:
        return f"{name} will be created: {to}, {count}{strategy}"
    if kind is ActionKind.DESTROY:
        was = f"r{action.from_release}, " if action.from_release else ""
        count = _instances(action.replicas_before or 0)
        return f"{name} will be destroyed: {was}{count}; not in the spec any more"
    if kind is ActionKind.REPLACE:
        unfinished = any(r.kind is ReasonKind.INCOMPLETE_ROLLOUT for r in action.reasons)
        resume = "; finishing a roll-out that did not complete" if unfinished else ""
        return (
            f"{name} will be replaced: {_release(action.from_release)} → {to}, "
            f"{count}{strategy}{resume}"
        )
    if kind is ActionKind.SCALE:
        return (
            f"{name} will be scaled: {to}, "
            f"{action.replicas_before or 0} → {_instances(action.replicas_after or 0)}"
        )
    if kind is ActionKind.HEAL:
        moves = Plan(actions=(action,), state_fingerprint="").summary()
        return (
            f"{name} will be healed from its release {to}: {moves['add']} to start, "
            f"{moves['destroy']} to stop ({count} wanted)"
        )
    return f"{name} will be updated in place: {to} (no instance replaced)"


def _body(action: Action, desired: DesiredService | None) -> list[tuple[str, str]]:
    """(symbol, text) lines inside a block, attribute names aligned."""
    attributes: list[tuple[str, str, str, str]] = []  # symbol, name, value text, comment
    instances: list[tuple[str, str]] = []
    if action.kind is ActionKind.CREATE and desired is not None:
        attributes.extend(("+", name, text, "") for name, text in _create_attributes(desired))
    if action.kind is ActionKind.DESTROY:
        instances.extend(("-", f'instance "{i}"') for i in action.instance_ids)
    for reason in action.reasons:
        attribute = _attribute_line(reason)
        if attribute is not None:
            attributes.append(attribute)
        instance = _instance_line(reason)
        if instance is not None:
            instances.append(instance)
    width = max((len(name) for _, name, _, _ in attributes), default=0)
    lines = [
        (sym, f"{name:<{width}} = {text}{f'  # {note}' if note else ''}")
        for sym, name, text, note in attributes
    ]
    return lines + instances


def _attribute_line(reason: Reason) -> tuple[str, str, str, str] | None:
    name = reason.attribute or ""
    note = "forces replacement" if reason.forces_replacement else ""
    if reason.kind in (ReasonKind.ATTRIBUTE, ReasonKind.SETTING, ReasonKind.REPLICAS):
        if reason.before is None:
            return "+", name, short_value(name, reason.after), note
        if reason.after is None:
            return "-", name, f"{short_value(name, reason.before)} -> null", note
        before, after = short_value(name, reason.before), short_value(name, reason.after)
        return "~", name, f"{before} -> {after}", note
    if reason.kind in _DRIFT_WHY:
        return "~", name, f"{reason.before} -> {reason.after}", _DRIFT_WHY[reason.kind]
    return None


def _instance_line(reason: Reason) -> tuple[str, str] | None:
    if reason.instance_id is None:
        return None
    instance = f'instance "{reason.instance_id}"'
    if reason.kind in _INSTANCE_WHY:
        return "-/+", f"{instance}  # {_INSTANCE_WHY[reason.kind]}"
    if reason.kind is ReasonKind.INCOMPLETE_ROLLOUT:
        if reason.attribute == "state":
            return "-/+", f"{instance}  # left {reason.before} by an unfinished change"
        return "-/+", f"{instance}  # still on {reason.before}: unfinished roll-out"
    return None


def _create_attributes(desired: DesiredService) -> list[tuple[str, str]]:
    rows = [("image", f"{short_value('image', desired.image_digest)} ({desired.image})")]
    config = flatten({k: v for k, v in desired.config.items() if k != "secrets"})
    rows.extend(
        (name, short_value(name, value))
        for name, value in config.items()
        if _CREATE_CONFIG.match(name) and value not in (None, [], {})
    )
    secrets = desired.config.get("secrets")
    if isinstance(secrets, dict):
        rows.extend((f"secrets.{name}", version_label(secrets[name])) for name in sorted(secrets))
    rows.append(("replicas", str(desired.replicas)))
    settings = flatten(dict(desired.settings))
    rows.extend(
        (name, short_value(name, value))
        for name, value in settings.items()
        if name.startswith("route.") and value is not None
    )
    return rows


def _release(number: int | None, *, new: bool = False) -> str:
    if number is None:
        return "no release"
    return f"r{number} (new)" if new else f"r{number}"


def _instances(count: int) -> str:
    return f"{count} instance" if count == 1 else f"{count} instances"


def _strategy(desired: DesiredService | None) -> str:
    strategy = desired.settings.get("strategy") if desired is not None else None
    if not isinstance(strategy, dict) or "type" not in strategy:
        return ""
    params = ", ".join(f"{k} {v}" for k, v in strategy.items() if k != "type")
    return f", {strategy['type']}" + (f" ({params})" if params else "")
