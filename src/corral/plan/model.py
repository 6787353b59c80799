"""What a plan is made of: actions, each with the reasons that call for it.

Pure data. `diff.py` computes a Plan, `render.py` prints it, `planfile.py` saves and loads it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class ActionKind(enum.StrEnum):
    CREATE = "create"  # +   a new service: start its instances
    REPLACE = "replace"  # -/+ a new release: roll every instance over to it
    SCALE = "scale"  # ~   same release, another replica count
    UPDATE = "update"  # ~   route/strategy settings only; no instance replaced
    HEAL = "heal"  # -/+ same release; replace instances observed dead or missing
    DESTROY = "destroy"  # -   service no longer in the spec: drain and stop everything


class ReasonKind(enum.StrEnum):
    NEW_SERVICE = "new_service"  # not recorded yet
    NOT_IN_SPEC = "not_in_spec"  # recorded but gone from the spec
    ATTRIBUTE = "attribute"  # an instance-defining attribute changed: forces replacement
    REPLICAS = "replicas"  # replica count changed
    SETTING = "setting"  # a route/strategy setting changed (no replacement)
    INSTANCE_EXITED = "instance_exited"  # recorded running, observed exited
    INSTANCE_MISSING = "instance_missing"  # recorded running, not observed at all
    INSTANCE_UNKNOWN = "instance_unknown"  # observed, but no live record (an orphan)
    INCOMPLETE_ROLLOUT = "incomplete_rollout"  # a change cut short: another release still live,
    # or an instance left stopping
    UNDER_REPLICATED = "under_replicated"  # fewer live instances than replicas
    OVER_REPLICATED = "over_replicated"  # more live instances than replicas (e.g. after a crash)


@dataclass(frozen=True)
class Reason:
    kind: ReasonKind
    attribute: str | None = None  # "image", "env.GREETING", "command", "route.port", …
    before: Any = None
    after: Any = None
    instance_id: str | None = None
    forces_replacement: bool = False

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind.value}
        for key in ("attribute", "before", "after", "instance_id"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        if self.forces_replacement:
            data["forces_replacement"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reason:
        return cls(
            kind=ReasonKind(data["kind"]),
            attribute=data.get("attribute"),
            before=data.get("before"),
            after=data.get("after"),
            instance_id=data.get("instance_id"),
            forces_replacement=bool(data.get("forces_replacement", False)),
        )


@dataclass(frozen=True)
class DesiredService:
    """A service as the spec wants it, with its release identity resolved."""

    name: str
    image: str  # image name in the spec
    image_digest: str
    config: dict[str, Any]  # releases.release_config(...)
    config_hash: str
    replicas: int
    settings: dict[str, Any]  # route, strategy, stop_grace, drain_timeout (not a release)


@dataclass(frozen=True)
class RecordedRelease:
    number: int
    image_digest: str
    config_hash: str
    config: dict[str, Any]


@dataclass(frozen=True)
class RecordedInstance:
    id: str
    serial: int
    release: int
    state: str  # InstanceState value


@dataclass(frozen=True)
class RecordedService:
    name: str
    current: RecordedRelease | None
    replicas: int
    settings: dict[str, Any]
    instances: tuple[RecordedInstance, ...]  # live ones only
    next_release_number: int  # what a new release would be numbered
    # Known releases of the service (any order): a desired key equal to an older one reuses
    # that release (a roll-back) instead of numbering a new one. Optional.
    releases: tuple[RecordedRelease, ...] = ()


@dataclass(frozen=True)
class ObservedInstanceView:
    id: str
    service: str
    running: bool


@dataclass(frozen=True)
class Action:
    service: str
    kind: ActionKind
    from_release: int | None
    to_release: int | None  # for a new release, the number it will get
    reasons: tuple[Reason, ...]
    replicas_before: int | None = None
    replicas_after: int | None = None
    instance_ids: tuple[str, ...] = ()  # for HEAL/DESTROY: the instances concerned
    new_release: bool = False  # to_release does not exist yet

    def to_dict(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "action": self.kind.value,
            "from_release": f"r{self.from_release}" if self.from_release else None,
            "to_release": f"r{self.to_release}" if self.to_release else None,
            "reasons": [reason.to_dict() for reason in self.reasons],
            "replicas_before": self.replicas_before,
            "replicas_after": self.replicas_after,
            "instance_ids": list(self.instance_ids),
            "new_release": self.new_release,
        }


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    state_fingerprint: str  # of the recorded state the plan was made from
    desired: tuple[DesiredService, ...] = ()
    environment: str = "dev"
    project: str = ""
    notes: tuple[str, ...] = field(default=())  # "web: r4 already running 3/3; nothing to do"
    # Observed running instances with no live record (INSTANCE_UNKNOWN): reported, never acted
    # on, since corral stops only what it recorded (they may belong to another state store).
    orphans: tuple[ObservedInstanceView, ...] = ()

    @property
    def is_empty(self) -> bool:
        return not self.actions

    def summary(self) -> dict[str, int]:
        """Terraform's counts: add = instances started, destroy = stopped, change = updates."""
        add = change = destroy = 0
        for action in self.actions:
            before = action.replicas_before or 0
            after = action.replicas_after or 0
            ids = len(action.instance_ids)
            if action.kind is ActionKind.CREATE:
                add += after
                destroy += before  # leftovers of a first roll-out that never finished
            elif action.kind is ActionKind.DESTROY:
                destroy += before
            elif action.kind is ActionKind.UPDATE:
                change += 1
            elif action.kind is ActionKind.HEAL and action.replicas_before is None:
                add += ids  # a heal that names only the instances it replaces
                destroy += ids
            else:
                # REPLACE, SCALE, HEAL: the listed instances go (all of them for a REPLACE that
                # lists none); of the `before` live ones the rest are kept, up to `after`.
                replaced = ids if ids or action.kind is not ActionKind.REPLACE else before
                kept = max(0, min(before - replaced, after))
                add += after - kept
                destroy += before - kept
        return {"add": add, "change": change, "destroy": destroy}

    def to_dict(self) -> dict[str, Any]:
        return {
            "actions": [action.to_dict() for action in self.actions],
            "summary": self.summary(),
        }
