"""Performs a strategy's steps through the Driver and the Router; rolls back on failure.

The executor is the only place where a roll-out touches the world, and it does so only through
the `Driver` (start/stop), the `Router` (routed set, drain) and the `StateStore` (write-ahead
records): it never spawns a process or opens a socket itself. Every instance is recorded as
PENDING before the driver starts it and as STOPPING before the driver stops it (law 7), so a
crash at any point leaves records from which the next agent converges.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from corral.drivers.protocol import Driver, LaunchSpec, SplitsTraffic
from corral.errors import CorralError, DriverError, MetricsError
from corral.rollout import progress
from corral.rollout.analysis import MetricsSource, RouterMetrics, judge
from corral.rollout.bluegreen import blue_green
from corral.rollout.book import InstanceBook
from corral.rollout.canary import canary
from corral.rollout.control import RolloutAborted, RolloutControl
from corral.rollout.health import HealthCheck, ProbeResult, bind_exec, wait_ready
from corral.rollout.prometheus import PrometheusMetrics
from corral.rollout.rolling import rolling
from corral.rollout.steps import (
    Analyse,
    AwaitReady,
    Completed,
    Failed,
    Fleet,
    Member,
    Outcome,
    Pause,
    Preview,
    Reached,
    Retire,
    SetWeight,
    Start,
    Step,
    Strategy,
    Verdict,
)
from corral.router.protocol import Backend, Router
from corral.secrets.crypto import SecretKey, load_key
from corral.secrets.resolve import launch_values
from corral.spec.model import resolve_count
from corral.state.protocol import StateStore
from corral.state.records import InstanceRecord, InstanceState, Release
from corral.volumes import launch_mounts

Emit = Callable[..., None]  # emit(kind, message, *, service=None, data=None)
ReadyCheck = Callable[[str, HealthCheck], Awaitable[ProbeResult]]
Fault = Callable[[str], None]  # fault(point): test hook that may kill the process (law 7 tests)


@dataclass(frozen=True)
class ServiceTarget:
    """Where one service should end up: a release, a replica count, and its settings."""

    name: str
    replicas: int
    settings: dict[str, Any]

    @property
    def max_surge(self) -> int | str:
        if self.handover_timeout is not None:
            return 0  # a single_writer volume: the old instance lets go before the new mounts
        value: int | str = self.settings.get("strategy", {}).get("max_surge", 1)
        return value

    @property
    def max_unavailable(self) -> int | str:
        value: int | str = self.settings.get("strategy", {}).get("max_unavailable", 0)
        if self.handover_timeout is not None:  # stop-first needs room to stop one
            return max(1, resolve_count(value, self.replicas, round_up=False))
        return value

    @property
    def handover_timeout(self) -> float | None:
        """Set for a service with a single_writer volume: it is replaced stop-first and its
        route holds requests this long meanwhile (law 6)."""
        value = self.settings.get("handover_timeout")
        return float(value) if value is not None else None

    @property
    def strategy(self) -> dict[str, Any]:
        value: dict[str, Any] = self.settings.get("strategy") or {"type": "rolling"}
        return value

    @property
    def stop_grace(self) -> float:
        return float(self.settings.get("stop_grace", 5.0))

    @property
    def drain_timeout(self) -> float:
        return float(self.settings.get("drain_timeout", 10.0))


@dataclass
class RolloutResult:
    ok: bool
    release: int | None
    reason: str = ""
    rolled_back_to: int | None = None
    started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    first_start_at: float | None = None
    last_stop_at: float | None = None
    requests: int = 0
    failed_requests: int = 0

    ended_at: float | None = None

    @property
    def seconds(self) -> float:
        """From the first new instance started to the last old one stopped (or the end)."""
        if self.first_start_at is None:
            return 0.0
        end = self.last_stop_at or self.ended_at or self.first_start_at
        return max(0.0, end - self.first_start_at)


def preview_route(service: str) -> str:
    """The router's name for a service's preview route (a service name has no '.')."""
    return f"{service}.preview"


def weigh(backends: list[Backend], split: tuple[int, int] | None) -> list[Backend]:
    """Backend weights giving `release` its percent of the traffic and the others the rest.

    With n new and m old ready backends, each new one weighs percent·m and each old one
    (100 - percent)·n, so the shares come out exact. A release with no ready backend cannot
    take its share: the others then carry everything (never route to nothing)."""
    if split is None:
        return backends
    release, percent = split
    label = f"r{release}"
    new = [b for b in backends if b.release == label]
    old = [b for b in backends if b.release != label]
    if not new or not old:
        return backends
    if percent <= 0:
        return old
    if percent >= 100:
        return new
    return [replace(b, weight=percent * len(old)) for b in new] + [
        replace(b, weight=(100 - percent) * len(new)) for b in old
    ]


def shares(routed: list[Backend], releases: set[int]) -> dict[int, int]:
    """Each release's percent of the traffic the routed backends get (largest remainder, so
    they sum to 100); a release in `releases` with nothing routed gets 0."""
    totals = dict.fromkeys(releases, 0)
    for backend in routed:
        number = int(backend.release.removeprefix("r"))
        totals[number] = totals.get(number, 0) + backend.weight
    whole = sum(totals.values())
    if whole == 0:
        return totals
    exact = {r: 100 * w / whole for r, w in totals.items()}
    split = {r: int(v) for r, v in exact.items()}
    by_remainder = sorted(exact, key=lambda r: (split[r] - exact[r], r))
    for number in by_remainder[: 100 - sum(split.values())]:
        split[number] += 1
    return split


def _split_text(split: dict[int, int]) -> str:
    return ", ".join(f"r{r} {w}%" for r, w in sorted(split.items())) or "no route"


def describe(step: Step) -> str:
    if isinstance(step, Start):
        return f"start {len(step.serials)} of r{step.release}"
    if isinstance(step, AwaitReady):
        return f"wait for {len(step.instance_ids)} to be ready"
    if isinstance(step, Retire):
        return f"drain and stop {', '.join(step.instance_ids)}"
    if isinstance(step, SetWeight):
        return f"set weight r{step.release} {step.percent}%"
    if isinstance(step, Pause):
        return step.reason
    if isinstance(step, Analyse):
        return f"{step.phase} of r{step.release}"
    if isinstance(step, Reached):
        return f"step {step.index + 1}/{step.total}" if step.index < step.total else "promotion"
    return f"preview r{step.release} on port {step.port}"


async def _interruptible(control: RolloutControl, seconds: float) -> None:
    """Sleep `seconds`, ending early (by raising) if the roll-out is aborted."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        control.check()
        await asyncio.sleep(min(0.05, end - loop.time()))
    control.check()


class StartFailed(Exception):
    def __init__(self, reason: str, instance_ids: tuple[str, ...]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.instance_ids = instance_ids


class Executor:
    def __init__(
        self,
        *,
        store: StateStore,
        driver: Driver,
        router: Router,
        book: InstanceBook,
        project: str,
        environment: str,
        emit: Emit,
        fault: Fault | None = None,
        actor: str = "corral",
        ready_check: ReadyCheck = wait_ready,
        controls: dict[str, RolloutControl] | None = None,
        metrics: MetricsSource | None = None,
        step_locks: dict[str, asyncio.Lock] | None = None,
    ) -> None:
        self.store = store
        self.driver = driver
        self.router = router
        self.book = book
        self.project = project
        self.environment = environment
        self.emit = emit
        self.fault = fault or (lambda point: None)
        self.actor = actor
        self.ready_check = ready_check
        self.controls = controls if controls is not None else {}
        self.metrics = metrics or RouterMetrics(router)
        # a step that changes the fleet holds its service's step lock, so a heal (which takes
        # it too) never interleaves with one; waiting steps (pause, analysis) do not hold it
        self.step_locks = step_locks if step_locks is not None else {}
        # the agent hands over its in-memory key (read once at start); alone, read the file
        self.secret_key: Callable[[], SecretKey] = load_key
        self.apply_id: str | None = None
        # drains and stops of routed-out instances still running, per service (see _retire)
        self._stops: dict[str, list[asyncio.Task[None]]] = {}

    # -- fleet view -------------------------------------------------------------------------

    def fleet(self, service: str) -> Fleet:
        members = []
        for record in self.store.list_instances(service):
            if record.state is InstanceState.STOPPING:
                continue
            members.append(
                Member(
                    id=record.id,
                    serial=record.serial,
                    release=record.release,
                    ready=record.id in self.book.ready,
                    alive=record.id not in self.book.dead,
                )
            )
        return Fleet(tuple(members))

    async def sync_routes(self, service: str) -> None:
        """The routed set is exactly the ready, live, recorded instances (law 6), weighted by
        the roll-out's traffic split; a preview route gets only the previewed release."""
        ready = []
        for record in self.store.list_instances(service):
            if (
                record.state is InstanceState.RUNNING
                and record.id in self.book.ready
                and record.address
            ):
                host, _, port = record.address.rpartition(":")
                ready.append(Backend(record.id, f"r{record.release}", host, int(port)))
        preview = self.book.previews.get(service)
        if preview is not None and preview_route(service) in self.router.routes():
            label = f"r{preview[0]}"
            await self.router.set_backends(
                preview_route(service), [b for b in ready if b.release == label]
            )
        routed = None
        if service in self.router.routes():
            routed = weigh(ready, self.book.weights.get(service))
            await self.router.set_backends(service, routed)
        await self._split_traffic(service, routed)

    async def _split_traffic(self, service: str, routed: list[Backend] | None) -> None:
        """An engine's own traffic layer follows the router's split (kubernetes: an
        HTTPRoute). A refusal does not stop the roll-out: it is an event, and the driver
        tries again (on its next observe, and at the next sync)."""
        if not isinstance(self.driver, SplitsTraffic):
            return
        live = {
            r.release
            for r in self.store.list_instances(service)
            if r.state in (InstanceState.PENDING, InstanceState.RUNNING)
        }
        split = {} if routed is None else shares(routed, live)
        try:
            await self.driver.set_weights(service, split)
        except DriverError as exc:
            self.emit(
                "route.split_failed",
                f"{service}: the engine's route was not set to "
                f"{_split_text(split)}: {exc}; corral tries again",
                service=service,
                data={"weights": {f"r{r}": w for r, w in split.items()}},
            )

    # -- roll-out ---------------------------------------------------------------------------

    async def converge(
        self, target: ServiceTarget, release: Release, previous: Release | None
    ) -> RolloutResult:
        """Move the service to `release` (all replicas); on failure roll back to `previous`."""
        result = RolloutResult(ok=False, release=release.number)
        before = self._route_counts(target.name)
        control = self.controls.setdefault(target.name, RolloutControl(target.name))
        control.strategy = str(target.strategy.get("type", "rolling"))
        await self._hold_for_handover(target)
        try:
            outcome = await self._run(
                target, release, self._strategy(target, release), result, control=control
            )
        finally:
            self.controls.pop(target.name, None)
            await self._settle_stops(target.name)
        if isinstance(outcome, Completed):
            result.ok = True
        else:
            result.reason = outcome.reason
            self.emit(
                "rollout.failed",
                f"{target.name}: r{release.number} failed: {outcome.reason}",
                service=target.name,
                data={"release": release.number, "reason": outcome.reason},
            )
            try:
                result.rolled_back_to = await self._roll_back(target, release, previous, result)
            finally:
                await self._settle_stops(target.name)
        await self._end_traffic_split(target.name)
        result.ended_at = time.time()
        after = self._route_counts(target.name)
        result.requests = after[0] - before[0]
        result.failed_requests = after[1] - before[1]
        return result

    async def _hold_for_handover(self, target: ServiceTarget) -> None:
        """A stop-first hand-over leaves the route without a backend for a moment: the
        router then holds new requests (up to handover_timeout) instead of refusing them."""
        route = target.settings.get("route")
        if target.handover_timeout is None or not route or target.name not in self.router.routes():
            return
        await self.router.open_route(
            target.name,
            route.get("host", "127.0.0.1"),
            int(route["port"]),
            hold_timeout=target.handover_timeout,
        )

    def secret_values(self, release: Release) -> dict[str, tuple[str, str]]:
        """The values of the release's secrets, through the agent's in-memory key."""
        recorded = release.config.get("secrets") or {}
        if not recorded:
            return {}
        try:
            key = self.secret_key()
            values = launch_values(recorded, self.store, key, release=release.name)
        except CorralError as exc:
            raise DriverError(exc.message, hint=exc.hint) from exc
        return dict(values)

    def step_lock(self, service: str) -> asyncio.Lock:
        return self.step_locks.setdefault(service, asyncio.Lock())

    async def replace_dead(
        self, target: ServiceTarget, instance_ids: list[str], reason: str = "exited"
    ) -> RolloutResult:
        """Replace each dead instance with a fresh one of the same release and serial (law 8).

        Whatever roll-out is in progress keeps its counts and weights: only the dead are
        swapped. Dead instances serve nothing (already out of routing), so they go first."""
        result = RolloutResult(ok=True, release=None)
        records = [r for r in (self.store.get_instance(i) for i in instance_ids) if r]
        if not records:
            return result
        async with self.step_lock(target.name):
            await self._retire(target, tuple(r.id for r in records), reason, result)
            for record in records:
                release = self.store.get_release(target.name, record.release)
                if release is None:
                    continue
                try:
                    await self._start(target, release, (record.serial,), result)
                except StartFailed as exc:
                    result.ok, result.reason = False, exc.reason
                    continue
                new_id = result.started[-1]
                await self._await_ready(target, release, (new_id,))
                if new_id not in self.book.ready:
                    result.ok = False
                    result.reason = f"replacement {new_id} never became healthy"
                    await self._retire(target, (new_id,), "replacement not healthy", result)
            await self.sync_routes(target.name)
        result.ended_at = time.time()
        return result

    async def replace_serving(
        self, target: ServiceTarget, instance_ids: list[str], reason: str
    ) -> RolloutResult:
        """Replace instances that still serve but must go (tampered, drifted): the fresh one
        of the same release and serial is ready before the bad one is drained and stopped."""
        if target.handover_timeout is not None:
            # a single_writer volume is never mounted twice: stop first (the route holds)
            await self._hold_for_handover(target)
            return await self.replace_dead(target, instance_ids, reason)
        result = RolloutResult(ok=True, release=None)
        records = [r for r in (self.store.get_instance(i) for i in instance_ids) if r]
        async with self.step_lock(target.name):
            fresh: list[str] = []
            for record in records:
                release = self.store.get_release(target.name, record.release)
                if release is None:
                    continue
                try:
                    await self._start(target, release, (record.serial,), result)
                except StartFailed as exc:
                    result.ok, result.reason = False, exc.reason
                    continue
                new_id = result.started[-1]
                await self._await_ready(target, release, (new_id,))
                fresh.append(new_id)
                if new_id not in self.book.ready:
                    result.ok = False
                    result.reason = f"replacement {new_id} never became healthy"
                    await self._retire(target, (new_id,), "replacement not healthy", result)
            if result.ok:
                await self._retire(target, tuple(r.id for r in records), reason, result)
            await self.sync_routes(target.name)
        result.ended_at = time.time()
        return result

    async def heal(self, target: ServiceTarget, release: Release) -> RolloutResult:
        """Replace dead or missing instances from the same release (law 8).

        Never rolls back and never touches healthy instances: a replacement that does not
        come up is reported, and the caller backs off before trying again."""
        result = RolloutResult(ok=False, release=release.number)
        outcome = await self._run(
            target,
            release,
            rolling(
                release.number,
                target.replicas,
                self.fleet(target.name),
                max_surge=max(1, target.replicas),
                max_unavailable=0,
            ),
            result,
        )
        result.ok = isinstance(outcome, Completed)
        if isinstance(outcome, Failed):
            result.reason = outcome.reason
            # a replacement that never became healthy serves nothing: stop it, keep the rest
            broken = [m.id for m in self.fleet(target.name).members if not m.ready]
            if broken:
                await self._retire(target, tuple(broken), "replacement not healthy", result)
        result.ended_at = time.time()
        return result

    def _strategy(self, target: ServiceTarget, release: Release) -> Strategy:
        settings = target.strategy
        kind = settings.get("type", "rolling")
        fleet = self.fleet(target.name)
        if kind == "canary":
            # an apply resumed by a new agent continues at the step it had reached
            reached = progress.recall(self.store, self.apply_id, target.name)
            resumed = reached.get("release") == release.number and reached.get("step") is not None
            return canary(
                release.number,
                target.replicas,
                fleet,
                steps=list(settings.get("steps") or []),
                bake_window=float(settings.get("bake_window") or 0.0),
                analysis=settings.get("analysis"),
                start_at=int(reached["step"]) if resumed else 0,
            )
        if kind == "blue_green":
            return blue_green(
                release.number,
                target.replicas,
                fleet,
                preview_port=settings.get("preview_port"),
                auto_promote_after=settings.get("auto_promote_after"),
                scale_down_delay=float(settings.get("scale_down_delay", 30.0)),
                bake_window=float(settings.get("bake_window") or 0.0),
                analysis=settings.get("analysis"),
            )
        return rolling(
            release.number,
            target.replicas,
            fleet,
            max_surge=target.max_surge,
            max_unavailable=target.max_unavailable,
        )

    async def _end_traffic_split(self, service: str) -> None:
        self.book.weights.pop(service, None)
        had_preview = self.book.previews.pop(service, None) is not None
        if had_preview and preview_route(service) in self.router.routes():
            await self.router.close_route(preview_route(service))
        await self.sync_routes(service)

    async def _roll_back(
        self,
        target: ServiceTarget,
        failed: Release,
        previous: Release | None,
        result: RolloutResult,
    ) -> int | None:
        if previous is not None and previous.number != failed.number:
            # traffic goes back to the old release at once, before anything is stopped
            self.book.weights[target.name] = (previous.number, 100)
            progress.record(
                self.store,
                self.apply_id,
                target.name,
                release=previous.number,
                weight=100,
                step=None,
            )
            self.book.previews.pop(target.name, None)
            await self.sync_routes(target.name)
        if previous is None or previous.number == failed.number:
            members = self.fleet(target.name).of(failed.number)
            if members:
                await self._retire(target, tuple(m.id for m in members), "roll-out failed", result)
            return None
        self.emit(
            "rollout.rollback",
            f"{target.name}: rolling back to r{previous.number}",
            service=target.name,
            data={"from": failed.number, "to": previous.number},
        )
        outcome = await self._run(
            target,
            previous,
            rolling(
                previous.number,
                target.replicas,
                self.fleet(target.name),
                # stop-first for a single_writer volume, as on the way forward
                max_surge=0 if target.handover_timeout is not None else max(1, target.replicas),
                max_unavailable=target.max_unavailable if target.handover_timeout else 0,
            ),
            result,
        )
        if isinstance(outcome, Failed):
            self.emit(
                "rollout.rollback_failed",
                f"{target.name}: rollback to r{previous.number} failed: {outcome.reason}",
                service=target.name,
            )
            return None
        return previous.number

    async def retire_all(self, target: ServiceTarget, reason: str) -> RolloutResult:
        result = RolloutResult(ok=True, release=None)
        members = self.fleet(target.name).members
        stopping = [r.id for r in self.store.list_instances(target.name)]
        ids = tuple(dict.fromkeys([m.id for m in members] + stopping))
        if ids:
            await self._retire(target, ids, reason, result)
        return result

    async def _run(
        self,
        target: ServiceTarget,
        release: Release,
        strategy: Strategy,
        result: RolloutResult,
        *,
        control: RolloutControl | None = None,
    ) -> Outcome:
        deadline = time.monotonic() + float(target.strategy.get("progress_deadline") or 600.0)
        try:
            step: Step = next(strategy)
            while True:
                verdict: Verdict | None = None
                try:
                    if control is not None:
                        await control.checkpoint()
                        control.step = describe(step)
                    if time.monotonic() > deadline:
                        return Failed(
                            f"progress deadline of "
                            f"{float(target.strategy.get('progress_deadline') or 600):g}s passed"
                        )
                    started = time.monotonic()
                    if isinstance(step, Pause | Analyse):
                        verdict = await self._perform(target, release, step, result, control)
                    else:
                        async with self.step_lock(target.name):
                            verdict = await self._perform(target, release, step, result, control)
                    if isinstance(step, Pause):
                        deadline += time.monotonic() - started  # waiting is not progress
                except StartFailed as exc:
                    return Failed(exc.reason, exc.instance_ids)
                except RolloutAborted as exc:
                    return Failed(f"aborted by {exc.who}")
                await self.sync_routes(target.name)
                step = strategy.send(self._fleet_with(target.name, verdict))
        except StopIteration as stop:
            outcome: Outcome = stop.value
            return outcome

    def _fleet_with(self, service: str, verdict: Verdict | None) -> Fleet:
        fleet = self.fleet(service)
        return Fleet(fleet.members, verdict) if verdict is not None else fleet

    async def _perform(
        self,
        target: ServiceTarget,
        release: Release,
        step: Step,
        result: RolloutResult,
        control: RolloutControl | None = None,
    ) -> Verdict | None:
        if isinstance(step, Start):
            await self._start(target, release, step.serials, result)
        elif isinstance(step, AwaitReady):
            waiting = self._await_ready(target, release, step.instance_ids)
            await (control.abortable(waiting) if control is not None else waiting)
        elif isinstance(step, Retire):
            # a roll-out's next step need not wait for these stops, unless a single_writer
            # volume must be released first (stop-first hand-over)
            overlap = target.handover_timeout is None
            await self._retire(target, step.instance_ids, step.reason, result, overlap=overlap)
        elif isinstance(step, SetWeight):
            self.book.weights[target.name] = (step.release, step.percent)
            progress.record(
                self.store, self.apply_id, target.name, release=step.release, weight=step.percent
            )
            if control is not None:
                control.weights = {f"r{step.release}": step.percent}
            self.emit(
                "rollout.weights",
                f"{target.name}: r{step.release} gets {step.percent}% of the traffic",
                service=target.name,
                data={"release": step.release, "percent": step.percent},
            )
        elif isinstance(step, Preview):
            self.book.previews[target.name] = (step.release, step.port)
            route = target.settings.get("route") or {}
            await self.router.open_route(
                preview_route(target.name), route.get("host", "127.0.0.1"), step.port
            )
            self.emit(
                "rollout.preview",
                f"{target.name}: r{step.release} previewed on http://127.0.0.1:{step.port}",
                service=target.name,
                data={"release": step.release, "port": step.port},
            )
        elif isinstance(step, Reached):
            progress.record(
                self.store,
                self.apply_id,
                target.name,
                release=step.release,
                step=step.index,
                steps=step.total,
            )
            if control is not None:
                control.reached = (step.index, step.total)
            self.emit(
                "rollout.step",
                f"{target.name}: r{step.release} at {describe(step)}",
                service=target.name,
                data={"release": step.release, "step": step.index, "steps": step.total},
            )
        elif isinstance(step, Pause):
            await self._pause(target, step, control)
        elif isinstance(step, Analyse):
            return await self._analyse(target, step, control)
        return None

    async def _pause(
        self, target: ServiceTarget, step: Pause, control: RolloutControl | None
    ) -> None:
        if control is None:
            if step.duration:
                await asyncio.sleep(step.duration)
            return
        control.awaiting_promotion = step.awaiting_promotion
        self.emit(
            "rollout.awaiting_promotion" if step.awaiting_promotion else "rollout.paused",
            f"{target.name}: {step.reason}"
            + (
                f"; promote with `corral rollout promote {target.name}`"
                if step.awaiting_promotion
                else ""
            ),
            service=target.name,
            data={"duration": step.duration, "awaiting_promotion": step.awaiting_promotion},
        )
        try:
            how = await control.wait(step.duration)
        finally:
            control.awaiting_promotion = False
        if how == "promoted":
            self.emit("rollout.promoted", f"{target.name}: promoted", service=target.name)
        return None

    def metrics_for(self, analysis: dict[str, Any]) -> MetricsSource:
        """The analysis' own provider (`provider: prometheus`), else the executor's source."""
        if analysis.get("provider") == "prometheus":
            return PrometheusMetrics.from_analysis(analysis)
        return self.metrics

    async def _analyse(
        self, target: ServiceTarget, step: Analyse, control: RolloutControl | None
    ) -> Verdict:
        window = float(step.analysis.get("window", 10.0))
        label = f"r{step.release}"
        stable_labels = [f"r{m.release}" for m in self.fleet(target.name).not_of(step.release)]
        stable_label = stable_labels[0] if stable_labels else None
        source = self.metrics_for(step.analysis)
        new_watch = await source.watch(target.name, label, window)
        stable_watch = (
            await source.watch(target.name, stable_label, window) if stable_label else None
        )
        self.emit(
            "rollout.analysis_started",
            f"{target.name}: {step.phase} of r{step.release} for {window:g}s",
            service=target.name,
            data={"release": step.release, "window": window, "phase": step.phase},
        )
        if control is not None:
            await asyncio.wait_for(_interruptible(control, window), timeout=None)
        else:
            await asyncio.sleep(window)
        try:
            new = await new_watch.figures()
            stable = await stable_watch.figures() if stable_watch is not None else None
            verdict = judge(new, stable, step.analysis)
        except MetricsError as exc:  # no figures prove nothing either way
            verdict = Verdict("inconclusive", f"no figures: {exc.message}")
        self.emit(
            f"rollout.analysis_{verdict.result}",
            f"{target.name}: {step.phase} of r{step.release}: {verdict.result} ({verdict.detail})",
            service=target.name,
            data={"release": step.release, "phase": step.phase, **verdict.figures},
        )
        return verdict

    async def _start(
        self,
        target: ServiceTarget,
        release: Release,
        serials: tuple[int, ...],
        result: RolloutResult,
    ) -> None:
        if result.first_start_at is None:
            result.first_start_at = time.time()
        outcomes = await asyncio.gather(
            *(self._start_one(target, release, serial) for serial in serials),
            return_exceptions=True,
        )
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        for outcome in outcomes:
            if isinstance(outcome, str):
                result.started.append(outcome)
        if failures:
            first = failures[0]
            if not isinstance(first, DriverError):
                raise first
            raise StartFailed(f"an instance of r{release.number} could not start: {first}", ())

    async def _start_one(self, target: ServiceTarget, release: Release, serial: int) -> str:
        # resolved before anything is recorded: a secret that is gone starts nothing (law 5)
        secret_values = self.secret_values(release)
        instance_id = self.store.new_instance_id(target.name)
        now = time.time()
        record = InstanceRecord(
            id=instance_id,
            service=target.name,
            serial=serial,
            release=release.number,
            state=InstanceState.PENDING,
            created_at=now,
            updated_at=now,
        )
        entry = self.store.journal_begin(
            "instance.start",
            {"instance": instance_id, "service": target.name, "release": release.number},
            apply_id=self.apply_id,
        )
        self.store.put_instance(record)
        self.fault("instance.pending")
        config = release.config
        spec = LaunchSpec(
            instance_id=instance_id,
            project=self.project,
            environment=self.environment,
            service=target.name,
            serial=serial,
            release=release.number,
            image_digest=release.image_digest,
            command=config.get("command"),
            env=dict(config.get("env") or {}),
            port=int(config.get("port", 8080)),
            mounts=launch_mounts(config, serial),
            secrets=secret_values,
            config=dict(config),
        )
        try:
            observed = await self.driver.start(spec)
        except DriverError as exc:
            self.store.put_instance(
                replace(record, state=InstanceState.FAILED, updated_at=time.time(), reason=str(exc))
            )
            self.store.journal_finish(entry.seq, aborted=True)
            self.emit(
                "instance.failed",
                f"{instance_id} (r{release.number}) could not start: {exc}",
                service=target.name,
                data={"instance": instance_id, "release": release.number},
            )
            raise
        self.fault("instance.spawned")
        self.store.put_instance(
            replace(
                record,
                state=InstanceState.RUNNING,
                address=observed.address,
                driver_ref=observed.driver_ref,
                updated_at=time.time(),
            )
        )
        self.store.journal_finish(entry.seq)
        self.emit(
            "instance.started",
            f"{instance_id} (r{release.number}, serial {serial}) started at {observed.address}",
            service=target.name,
            data={"instance": instance_id, "release": release.number, "serial": serial},
        )
        self.fault("instance.started")
        return instance_id

    async def _await_ready(
        self, target: ServiceTarget, release: Release, instance_ids: tuple[str, ...]
    ) -> None:
        check = HealthCheck.from_config(release.config)
        records = [self.store.get_instance(i) for i in instance_ids]

        async def one(record: InstanceRecord | None) -> None:
            if record is None or not record.address:
                return
            mine = bind_exec(check, self.driver, record.id)  # exec checks run inside it
            outcome = await self.ready_check(record.address, mine)
            min_ready = float(target.strategy.get("min_ready_seconds") or 0.0)
            if outcome.ok and min_ready > 0:
                # it must stay ready this long before it counts (and gets traffic)
                await asyncio.sleep(min_ready)
                outcome = await self.ready_check(record.address, mine)
            if outcome.ok:
                self.book.mark_ready(record.id, outcome.detail)
                self.emit(
                    "instance.ready",
                    f"{record.id} (r{record.release}) is ready",
                    service=target.name,
                    data={"instance": record.id, "release": record.release},
                )
                # route each instance as soon as it is ready, not when the batch is
                await self.sync_routes(target.name)
            else:
                self.book.mark_unready(record.id, outcome.detail)
                self.emit(
                    "instance.unhealthy",
                    f"{record.id} (r{record.release}) {outcome.detail}",
                    service=target.name,
                    data={"instance": record.id, "release": record.release},
                )

        await asyncio.gather(*(one(r) for r in records))

    async def _retire(
        self,
        target: ServiceTarget,
        instance_ids: tuple[str, ...],
        reason: str,
        result: RolloutResult,
        *,
        overlap: bool = False,
    ) -> None:
        """Route out, drain, stop (law 6), each instance recorded STOPPING first (law 7).

        With `overlap`, this returns once the instances are out of routing and their drain and
        stop go on in the background (as Kubernetes does not count terminating pods), so the
        roll-out's next start overlaps them; the roll-out settles them before it ends."""
        records = [r for r in (self.store.get_instance(i) for i in instance_ids) if r]
        entries = []
        for record in records:
            entries.append(
                self.store.journal_begin(
                    "instance.stop",
                    {"instance": record.id, "service": target.name, "reason": reason},
                    apply_id=self.apply_id,
                )
            )
            self.store.put_instance(
                replace(record, state=InstanceState.STOPPING, updated_at=time.time())
            )
            self.book.mark_unready(record.id, "retiring")
        self.fault("instance.stopping")
        # out of routing first, then drain in-flight requests, then stop (law 6)
        await self.sync_routes(target.name)
        finish = self._drain_and_stop(target, records, entries, reason, result)
        if overlap:
            self._stops.setdefault(target.name, []).append(asyncio.create_task(finish))
        else:
            await finish

    async def _drain_and_stop(
        self,
        target: ServiceTarget,
        records: list[InstanceRecord],
        entries: list[Any],
        reason: str,
        result: RolloutResult,
    ) -> None:
        if target.name in self.router.routes():
            await self.router.drain(
                target.name, [r.id for r in records], timeout=target.drain_timeout
            )

        async def stop(record: InstanceRecord) -> None:
            await self.driver.stop(record.id, grace=target.stop_grace)
            await self.driver.forget(record.id)

        await asyncio.gather(*(stop(r) for r in records))
        now = time.time()
        for record, entry in zip(records, entries, strict=True):
            self.store.put_instance(
                replace(record, state=InstanceState.STOPPED, updated_at=now, reason=reason)
            )
            self.store.journal_finish(entry.seq)
            self.book.forget(record.id)
            result.stopped.append(record.id)
            self.emit(
                "instance.stopped",
                f"{record.id} (r{record.release}) stopped: {reason}",
                service=target.name,
                data={"instance": record.id, "release": record.release, "reason": reason},
            )
        result.last_stop_at = now
        self.fault("instance.stopped")

    async def _settle_stops(self, service: str) -> None:
        """Wait for the background stops of `service`; the first failure is raised."""
        tasks = self._stops.pop(service, [])
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    def _route_counts(self, service: str) -> tuple[int, int]:
        if service not in self.router.routes():
            return (0, 0)
        stats = self.router.stats(service)
        return (stats.requests, stats.router_errors)
