"""How a person steers a running roll-out: promote, pause, resume, abort.

The API sets these; the executor checks them between steps and while a Pause step waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


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
    reached: tuple[int, int] | None = None  # (step index, number of steps) of a canary
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

    async def abortable(self, work: Awaitable[T]) -> T:
        """Run `work` (e.g. waiting for health that may take minutes), cancelled at once by an
        abort, which then raises RolloutAborted: an operator never waits out a start timeout."""
        self.check()
        task = asyncio.ensure_future(work)
        while not task.done():
            self._wake.clear()
            waiter = asyncio.ensure_future(self._wake.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if self.aborted_by is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                self.check()
        return task.result()

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
            # 1-based, as a person counts the spec's steps; steps + 1 is full promotion
            **(
                {"step_number": self.reached[0] + 1, "steps": self.reached[1]}
                if self.reached is not None
                else {}
            ),
        }
