"""How a person steers a running roll-out: promote, pause, resume, abort.

The API sets these; the executor checks them between steps and while a Pause step waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any


class RolloutAborted(Exception):
    def __init__(self, who: str) -> None:
        super().__init__(f"aborted by {who}")
        self.who = who


@dataclass
class RolloutControl:
    service: str
    strategy: str = "rolling"
    step: str = ""
    weights: dict[str, int] = field(default_factory=dict)
    awaiting_promotion: bool = False
    paused: bool = False
    aborted_by: str | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _promoted: bool = False

    def promote(self) -> None:
        self._promoted = True
        self._wake.set()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._wake.set()

    def abort(self, who: str) -> None:
        self.aborted_by = who
        self._wake.set()

    def check(self) -> None:
        if self.aborted_by is not None:
            raise RolloutAborted(self.aborted_by)

    async def checkpoint(self) -> None:
        """Between steps: stop here while paused; raise if aborted."""
        self.check()
        while self.paused:
            self._wake.clear()
            await self._wake.wait()
            self.check()

    async def wait(self, duration: float | None) -> str:
        """A Pause step: 'elapsed', or 'promoted' (early, or for an open-ended pause)."""
        self._promoted = False
        loop = asyncio.get_running_loop()
        end = None if duration is None else loop.time() + duration
        while True:
            self.check()
            if self._promoted:
                return "promoted"
            if end is not None and loop.time() >= end and not self.paused:
                return "elapsed"
            self._wake.clear()
            timeout = None if end is None or self.paused else max(0.0, end - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    def view(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "step": self.step,
            "weights": self.weights,
            "awaiting_promotion": self.awaiting_promotion,
            "paused": self.paused,
        }
