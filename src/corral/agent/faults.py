"""Fault injection for the write-ahead tests (law 7): `kill -9` of the agent at a named step.

`CORRAL_FAULT=instance.started:2` makes the agent SIGKILL itself the 2nd time the executor
reaches the point `instance.started`. Only read from the environment, so a user never trips it.
"""

from __future__ import annotations

import os
import signal


class FaultInjector:
    def __init__(self, spec: str | None) -> None:
        self.point: str | None = None
        self.remaining = 0
        if spec:
            point, _, count = spec.partition(":")
            self.point = point
            self.remaining = int(count or "1")

    @classmethod
    def from_env(cls) -> FaultInjector:
        return cls(os.environ.get("CORRAL_FAULT"))

    def __call__(self, point: str) -> None:
        if self.point != point:
            return
        self.remaining -= 1
        if self.remaining == 0:
            os.kill(os.getpid(), signal.SIGKILL)
