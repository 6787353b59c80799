"""What the agent currently knows about live instances beyond the state store: health.

Shared by the executor (which marks instances ready) and the supervisor (which marks them dead).
Held in memory only: after a restart every running instance is probed again before it is routed.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class InstanceBook:
    ready: set[str] = field(default_factory=set)
    dead: set[str] = field(default_factory=set)
    detail: dict[str, str] = field(default_factory=dict)  # last health/exit detail
    # traffic split of a service during a roll-out: (release, percent for it); others get the rest
    weights: dict[str, tuple[int, int]] = field(default_factory=dict)
    # blue-green preview routes: service → (release, port)
    previews: dict[str, tuple[int, int]] = field(default_factory=dict)

    def mark_ready(self, instance_id: str, detail: str = "") -> None:
        self.ready.add(instance_id)
        self.dead.discard(instance_id)
        self.detail[instance_id] = detail

    def mark_unready(self, instance_id: str, detail: str) -> None:
        self.ready.discard(instance_id)
        self.detail[instance_id] = detail

    def mark_dead(self, instance_id: str, detail: str) -> None:
        self.ready.discard(instance_id)
        self.dead.add(instance_id)
        self.detail[instance_id] = detail

    def forget(self, instance_id: str) -> None:
        self.ready.discard(instance_id)
        self.dead.discard(instance_id)
        self.detail.pop(instance_id, None)

    def health(self, instance_id: str) -> str:
        if instance_id in self.dead:
            return "dead"
        if instance_id in self.ready:
            return "ready"
        return "starting"
