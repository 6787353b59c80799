"""Steering a roll-out: an abort ends even a long wait for health at once."""

from __future__ import annotations

import asyncio

import pytest

from corral.rollout.control import RolloutAborted, RolloutControl


async def test_an_abort_cancels_a_wait_in_progress() -> None:
    control = RolloutControl("web")
    cancelled = asyncio.Event()

    async def wait_for_health() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "ready"

    waiting = asyncio.create_task(control.abortable(wait_for_health()))
    await asyncio.sleep(0.01)
    control.abort("token:oncall")
    with pytest.raises(RolloutAborted, match="token:oncall"):
        await asyncio.wait_for(waiting, timeout=5)
    assert cancelled.is_set()  # the wait itself was stopped, not left running


async def test_work_that_ends_gives_its_result_and_other_wakes_do_not_abort() -> None:
    control = RolloutControl("web")

    async def work() -> str:
        await asyncio.sleep(0.05)
        return "ready"

    waiting = asyncio.create_task(control.abortable(work()))
    await asyncio.sleep(0.01)
    control.promote()  # wakes the control, is not an abort
    assert await waiting == "ready"


async def test_an_aborted_roll_out_starts_no_more_work() -> None:
    control = RolloutControl("web")
    control.abort("cli")
    started = False

    async def work() -> None:
        nonlocal started
        started = True

    coro = work()
    with pytest.raises(RolloutAborted):
        await control.abortable(coro)
    coro.close()
    assert not started
