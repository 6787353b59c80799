"""The agent's controller: owns the local instances, the router and every roll-out.

One asyncio process per environment. It adopts what a previous agent left running (law 7),
holds the lock as a lease while a change runs, journals every change through the executor, and
keeps routing in line with what is alive and ready (law 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from corral.agent.faults import FaultInjector
from corral.agent.health_watch import HealthWatch
from corral.agent.metrics import AgentMetrics
from corral.agent.moves import Moves
from corral.drivers.protocol import Driver, ObservedState
from corral.errors import CorralError, LockedError, StalePlanError, UsageError
from corral.inventory import recorded_services
from corral.paths import Home
from corral.plan.fingerprint import fingerprint
from corral.rollout.analysis import Sample
from corral.rollout.book import InstanceBook
from corral.rollout.control import RolloutControl
from corral.rollout.executor import Executor, RolloutResult, ServiceTarget
from corral.rollout.health import HealthCheck, bind_exec, probe
from corral.rollout.progress import restore_weights
from corral.router.protocol import Router
from corral.secrets.crypto import SecretKey, load_key
from corral.state.protocol import StateStore
from corral.state.records import (
    AgentRecord,
    ApplyRecord,
    ApplyStatus,
    InstanceRecord,
    InstanceState,
    LockInfo,
    ServiceRecord,
)

log = logging.getLogger("corral.agent")

LEASE_TTL = 15.0
CRASH_LOOP_WINDOW = 10.0  # an instance that dies sooner after its start is crash-looping
CRASH_LOOP_MAX_DELAY = 60.0
AUDIT_EVERY_TICKS = 2  # tamper/drift audit (cheap thanks to the auditor's stat cache)


@dataclass
class ActiveApply:
    id: str
    target: dict[str, Any]
    holder: dict[str, Any]
    task: asyncio.Task[None] | None = None
    progress: dict[str, dict[str, Any]] = field(default_factory=dict)  # service → rollout view


def _same_target(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def key(t: dict[str, Any]) -> Any:
        return (
            sorted(
                (n, s["image_digest"], s["config_hash"], s["replicas"])
                for n, s in t.get("services", {}).items()
            ),
            sorted(t.get("destroy", [])),
        )

    return bool(key(a) == key(b))


def _pid_alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Agent:
    def __init__(
        self,
        *,
        home: Home,
        project: str,
        environment: str,
        store: StateStore,
        driver: Driver,
        router: Router,
        tick: float = 1.0,
        fault: FaultInjector | None = None,
    ) -> None:
        self.home = home
        self.project = project
        self.environment = environment
        self.store = store
        self.driver = driver
        self.router = router
        self.tick = tick
        self.book = InstanceBook()
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.agent_id = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        self.started_at = time.time()
        self.api_url = ""  # its TCP API for other homes and hosts (set before start; '' none)
        self.fault = fault or FaultInjector(None)
        self.active: ActiveApply | None = None
        self.new_event = asyncio.Event()
        self.stopping = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._lease: asyncio.Task[None] | None = None
        self._exited_reported: set[str] = set()
        self.controls: dict[str, RolloutControl] = {}  # running roll-outs, by service
        self.service_locks: dict[str, asyncio.Lock] = {}  # one roll-out per service at a time
        self.step_locks: dict[str, asyncio.Lock] = {}  # a fleet-changing step, or a heal
        self.heal_backoff: dict[str, tuple[int, float]] = {}  # service → (failures, not before)
        self._heals: dict[str, asyncio.Task[None]] = {}
        self._backing_off: dict[str, bool] = {}
        # readiness and liveness of started instances, each check at its own interval
        self.health_watch = HealthWatch(
            book=self.book,
            check_of=self._checks_of,
            current=self.store.get_instance,
            sync_routes=lambda service: self.executor(None).sync_routes(service),
            emit=self.emit,
            min_interval=tick,
        )
        self.moves = Moves(  # instances an engine (Swarm) restarts or moves by itself
            store=self.store,
            book=self.book,
            check_of=self._checks_of,
            sync_routes=lambda service: self.executor(None).sync_routes(service),
            emit=self.emit,
        )
        self._ticks = 0
        self._replacing: dict[str, bool] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._auditor: Any = None
        self.strangers: list[dict[str, Any]] = []  # docker: labelled like ours, not started by us
        self._strangers_seen: set[str] = set()
        self._layers_reported: set[tuple[str, str]] = set()
        self.inherited: dict[str, socket.socket] = {}
        self._handed_apply: str | None = None  # route sockets handed over on restart
        self.handed_over = False
        self.metrics = AgentMetrics(store, router, self.book)  # fed by emit and _audit
        # the secrets key, read once at start (agent/main.py) and kept in memory only, so
        # replacements at 3 a.m. need no file and no person (law 5)
        self.secrets_key: SecretKey | None = None

    def secret_key(self) -> SecretKey:
        """The in-memory key; read now if the agent started before `corral secret set` made it."""
        if self.secrets_key is None:
            self.secrets_key = load_key(home=self.home.root)
        return self.secrets_key

    # -- events -----------------------------------------------------------------------------

    def emit(
        self,
        kind: str,
        message: str,
        *,
        service: str | None = None,
        data: dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> None:
        payload = dict(data or {})
        if self.active is not None:
            payload.setdefault("apply_id", self.active.id)
        self.store.append_event(
            kind, message, service=service, actor=actor or self.agent_id, data=payload
        )
        log.info("%s %s", kind, message)
        self.metrics.observe_event(kind, service, payload)
        self.new_event.set()
        self.new_event = asyncio.Event()

    def executor(self, apply_id: str | None) -> Executor:
        executor = Executor(
            store=self.store,
            driver=self.driver,
            router=self.router,
            book=self.book,
            project=self.project,
            environment=self.environment,
            emit=self.emit,
            fault=self.fault,
            controls=self.controls,
            step_locks=self.step_locks,
        )
        executor.apply_id = apply_id
        executor.secret_key = self.secret_key
        return executor

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._claim_environment()
        await self.recover()
        self._supervisor = asyncio.create_task(self._supervise(), name="supervisor")
        for record in self.store.list_applies(status=ApplyStatus.RUNNING):
            self._resume(record)

    def _claim_environment(self) -> None:
        """One agent runs an environment; a live other one is named, not overridden."""
        current = self.store.get_agent()
        if current is not None and current.agent_id != self.agent_id:
            fresh = time.time() - current.heartbeat_at < max(10.0, self.tick * 5)
            alive_here = current.host == self.host and _pid_alive(current.pid)
            if alive_here or (current.host != self.host and fresh):
                raise LockedError(
                    f"environment {self.environment!r} of project {self.project!r} is run by "
                    f"the agent on {current.host} (pid {current.pid}, home {current.home})",
                    holder=asdict(current),
                    hint="Use that agent (same CORRAL_HOME), or stop it first.",
                )
        self._heartbeat()

    def _heartbeat(self) -> None:
        self.store.register_agent(
            AgentRecord(
                agent_id=self.agent_id,
                host=self.host,
                pid=self.pid,
                home=str(self.home.root),
                socket=str(self.home.agent_socket(self.project, self.environment)),
                started_at=self.started_at,
                heartbeat_at=time.time(),
                api=self.api_url,
            )
        )

    async def recover(self) -> None:
        """Adopt what runs, finish what was half done, stop what nobody recorded (law 7)."""
        observed = {o.instance_id: o for o in await self.driver.observe()}
        live = self.store.list_instances()
        recorded_ids = {r.id for r in live}
        for record in live:
            seen = observed.get(record.id)
            running = seen is not None and seen.state is ObservedState.RUNNING
            if record.state is InstanceState.PENDING:
                if running and seen is not None:
                    self.store.put_instance(
                        replace(
                            record,
                            state=InstanceState.RUNNING,
                            address=seen.address,
                            driver_ref=seen.driver_ref,
                            updated_at=time.time(),
                        )
                    )
                    self.emit(
                        "instance.adopted",
                        f"{record.id} adopted (was starting)",
                        service=record.service,
                        data={"instance": record.id},
                    )
                else:
                    await self._forget_failed(record.id, "never started: the agent stopped first")
                    self.store.put_instance(
                        replace(
                            record,
                            state=InstanceState.FAILED,
                            updated_at=time.time(),
                            reason="never started",
                        )
                    )
            elif record.state is InstanceState.STOPPING:
                await self.driver.stop(record.id, grace=1.0)
                await self.driver.forget(record.id)
                self.store.put_instance(
                    replace(
                        record,
                        state=InstanceState.STOPPED,
                        updated_at=time.time(),
                        reason=record.reason or "stopped after agent restart",
                    )
                )
                self.emit(
                    "instance.stopped",
                    f"{record.id} stopped (its stop was interrupted)",
                    service=record.service,
                    data={"instance": record.id},
                )
        for instance_id, seen in observed.items():
            if instance_id not in recorded_ids or self._is_gone(instance_id):
                await self.driver.stop(instance_id, grace=1.0)
                await self.driver.forget(instance_id)
                self.emit(
                    "instance.orphan_stopped",
                    f"{instance_id} was running with no live record; stopped",
                    service=seen.service,
                    data={"instance": instance_id},
                )
        for entry in self.store.journal_pending():
            self.store.journal_finish(entry.seq, aborted=True)
        # probe every adopted instance before routing it again
        checks = []
        for record in self.store.list_instances():
            if record.state is InstanceState.RUNNING and record.address:
                release = self.store.get_release(record.service, record.release)
                check = HealthCheck.from_config(release.config if release else {})
                checks.append((record, bind_exec(check, self.driver, record.id)))
        results = await asyncio.gather(*(probe(r.address or "", c) for r, c in checks))
        for (record, _), outcome in zip(checks, results, strict=True):
            if record.id not in observed or observed[record.id].state is not ObservedState.RUNNING:
                self.book.mark_dead(record.id, "not running")
            elif outcome.ok:
                self.book.mark_ready(record.id, outcome.detail)
            else:
                self.book.mark_unready(record.id, outcome.detail)
        restore_weights(self.store, self.book)  # a canary at 50 % stays at 50 %
        for service in self.store.list_services():
            await self._ensure_route(service.name, service.settings)
            await self.executor(None).sync_routes(service.name)

    def _is_gone(self, instance_id: str) -> bool:
        record = self.store.get_instance(instance_id)
        return record is None or record.state in (InstanceState.STOPPED, InstanceState.FAILED)

    async def _forget_failed(self, instance_id: str, reason: str) -> None:
        await self.driver.stop(instance_id, grace=0.5)
        await self.driver.forget(instance_id)

    async def _ensure_route(self, service: str, settings: dict[str, Any]) -> None:
        route = settings.get("route")
        routes = self.router.routes()
        if route is None:
            if service in routes:
                await self.router.close_route(service)
            return
        if routes.get(service) == route["port"]:
            return
        if service in routes:
            await self.router.close_route(service)
        inherited = self.inherited.pop(service, None)
        if inherited is not None and inherited.getsockname()[1] != int(route["port"]):
            inherited.close()
            inherited = None
        # a single_writer volume's hand-over holds requests this long (law 6), also after a
        # restart or an agent that was killed, when no roll-out has set it yet
        hold = settings.get("handover_timeout")
        await self.router.open_route(
            service,
            route.get("host", "127.0.0.1"),
            int(route["port"]),
            sock=inherited,
            hold_timeout=float(hold) if hold is not None else None,
        )

    async def _supervise(self) -> None:
        """Watch instances; a dead one leaves routing at once (law 6)."""
        try:
            while not self.stopping.is_set():
                try:
                    await self._observe_once()
                    self._heartbeat()
                except Exception:  # the supervisor must outlive any single bad tick
                    log.exception("supervisor tick failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), timeout=self.tick)
        finally:
            self.health_watch.close()  # its probes live and die with the supervisor
            self.moves.close()

    async def _observe_once(self) -> None:
        began = time.time()  # instances started after this are not in the observation yet
        observed = {o.instance_id: o for o in await self.driver.observe()}
        touched: set[str] = set()
        for record in self.store.list_instances():
            if record.state is not InstanceState.RUNNING or record.updated_at > began:
                continue  # (one started while the driver looked is judged next tick)
            seen = observed.get(record.id)
            if self.moves.follow(record, seen):
                touched.add(record.service)
                continue
            if seen is None or seen.state is not ObservedState.RUNNING:
                if record.id in self._exited_reported:
                    continue
                self._exited_reported.add(record.id)
                code = seen.exit_code if seen is not None else None
                detail = f"exited (code {code})" if code is not None else "no longer running"
                drift = seen.detail if seen is not None else None  # e.g. recreated by hand
                self.book.mark_dead(record.id, drift or detail)
                touched.add(record.service)
                self.emit(
                    "instance.drifted" if drift else "instance.exited",
                    f"{record.id} (r{record.release}) {drift or detail}; out of routing",
                    service=record.service,
                    data={"instance": record.id, "release": record.release, "exit_code": code}
                    | ({"evidence": drift} if drift else {}),
                )
        touched |= await self._check_liveness()
        self._ticks += 1
        if self._ticks % AUDIT_EVERY_TICKS == 0 and "audit" not in self._heals:
            self._heals["audit"] = asyncio.create_task(self._audit(), name="audit")
        for service in touched:
            await self.executor(None).sync_routes(service)
        self._schedule_heals()

    async def _check_liveness(self) -> set[str]:
        """Started instances are judged by the health watch (agent/health_watch.py): readiness
        routes them, liveness (or, without one, readiness failing) makes them dead, replaced
        by the heal below (law 8). Its verdicts act at once, so nothing is touched here."""
        self.health_watch.sync(self.store.list_instances())
        return set()

    def _checks_of(self, record: InstanceRecord) -> HealthCheck:
        release = self.store.get_release(record.service, record.release)
        check = HealthCheck.from_config(release.config if release else {})
        return bind_exec(check, self.driver, record.id)

    async def _audit(self) -> None:
        """Tampered or drifted instances are replaced from their release (law 8).

        A tampered file lives in the unpacked image root that all instances of the image
        share: that root is discarded (re-made from the content-addressed blobs, checked by
        digest, on the next start) and every instance that used it is replaced."""
        try:
            if self._auditor is None:
                self._auditor = self._make_auditor()
            began = time.monotonic()
            findings = await asyncio.to_thread(self._auditor.audit, self.store)
            if hasattr(self._auditor, "strangers"):
                self._report_strangers(await asyncio.to_thread(self._auditor.strangers))
            self.metrics.observe_audit(
                time.monotonic() - began,
                tampered=sum(1 for f in findings if f.tampered),
                drifted=sum(1 for f in findings if f.drifted and not f.tampered),
            )
            bad: dict[str, dict[str, str]] = {}
            discard: set[Path] = set()
            for finding in findings:
                if finding.layer_files:
                    self._report_layer(finding)
                if not (finding.files or finding.config):
                    continue  # a tampered engine layer alone: a replacement would inherit it
                if finding.instance_id in self.book.dead or self._replacing.get(
                    finding.instance_id
                ):
                    continue
                bad.setdefault(finding.service, {})[finding.instance_id] = finding.evidence()
                if finding.tampered and finding.rootfs is not None:
                    discard.add(Path(finding.rootfs))
            for root in discard:
                self._discard_rootfs(root)
            for service, evidence in bad.items():
                for instance_id, why in evidence.items():
                    self._replacing[instance_id] = True
                    self.emit(
                        "instance.tampered"
                        if "tampered" in why or "added" in why or "removed" in why
                        else "instance.drifted",
                        f"{instance_id}: {why}; replacing it",
                        service=service,
                        data={"instance": instance_id, "evidence": why},
                    )
                task = asyncio.create_task(self._replace_bad(service, list(evidence)))
                self._background.add(task)  # kept referenced until done
                task.add_done_callback(self._background.discard)
        except Exception:  # an audit must never take the supervisor down
            log.exception("audit failed")
        finally:
            self._heals.pop("audit", None)

    def _make_auditor(self) -> Any:
        from corral.agent.runtime import image_store

        if self.driver.name == "docker":
            from corral.audit.docker import DockerAuditor
            from corral.drivers.docker import DockerDriver

            assert isinstance(self.driver, DockerDriver)
            return DockerAuditor(
                self.home,
                self.project,
                self.environment,
                image_store(self.home),
                driver=self.driver,
            )
        if self.driver.name == "swarm":  # each task through its node's engine
            from corral.audit.swarm import SwarmAuditor
            from corral.drivers.swarm import SwarmDriver

            assert isinstance(self.driver, SwarmDriver)
            return SwarmAuditor(self.home, self.driver, image_store(self.home))
        from corral.audit import InstanceAuditor, unaudited

        if not unaudited.audits(self.driver.name):  # swarm, kubernetes: never called clean
            return unaudited.UnauditedFleet(self.driver.name)
        return InstanceAuditor(self.home, self.project, self.environment, image_store(self.home))

    def _report_strangers(self, found: list[Any]) -> None:
        """Containers with corral's labels that corral did not start: an event once each,
        a line in `status`; never touched (law: what corral did not start is not its own)."""
        self.strangers = [s.to_json() for s in found]
        for stranger in found:
            if stranger.container_id in self._strangers_seen:
                continue
            self._strangers_seen.add(stranger.container_id)
            self.emit(
                "instance.stranger",
                f"stranger {stranger.render()}: carries corral's labels but corral did not "
                "start it; left alone",
                service=stranger.service or None,
                data=stranger.to_json(),
            )

    def _report_layer(self, finding: Any) -> None:
        """An image layer changed on the engine's disk: said plainly, once per image and
        evidence, since replacing the containers would not help (law 8 cannot hold here)."""
        evidence = "; ".join(f.render() for f in finding.layer_files[:5])
        mark = (finding.image_digest, evidence)
        if mark in self._layers_reported:
            return
        self._layers_reported.add(mark)
        sharers = ", ".join([finding.instance_id, *finding.shared_with])
        self.emit(
            "image.layer_tampered",
            f"image {finding.image_digest[:19]}: its layers on the Docker engine's disk were "
            f"changed ({evidence}); every container of the image ({sharers}) sees it and a "
            "fresh one would inherit it, and the engine cannot load a clean copy while "
            "containers use it: not replaced. Run `corral destroy`, `docker rmi` the image, "
            "then `corral apply` to load it again from the verified store",
            data={"image": finding.image_digest, "evidence": evidence, "layers": finding.layers},
        )

    def _discard_rootfs(self, root: Path) -> None:
        if root.is_dir():
            aside = root.with_name(f".discarded-{root.name}-{int(time.time() * 1000)}")
            root.rename(aside)
            self.emit(
                "image.rootfs_discarded",
                f"unpacked image root {root.name[:12]} discarded: it was tampered with; "
                "the next instance gets a fresh copy from the verified blobs",
                data={"rootfs": str(root)},
            )

    async def _replace_bad(self, service: str, instance_ids: list[str]) -> None:
        try:
            record = self.store.get_service(service)
            if record is None:
                return
            target = ServiceTarget(service, record.replicas, record.settings)
            result = await self.executor(None).replace_serving(
                target, instance_ids, "tampered or drifted"
            )
            kind = "heal.succeeded" if result.ok else "heal.backoff"
            self.emit(
                kind,
                f"{service}: replaced {', '.join(result.stopped) or 'nothing'} "
                f"with {', '.join(result.started) or 'nothing'}"
                + ("" if result.ok else f" ({result.reason})"),
                service=service,
                data={"stopped": result.stopped, "started": result.started},
            )
        except Exception:
            log.exception("replacing %s failed", instance_ids)
        finally:
            for instance_id in instance_ids:
                self._replacing.pop(instance_id, None)

    def service_lock(self, service: str) -> asyncio.Lock:
        return self.service_locks.setdefault(service, asyncio.Lock())

    def _schedule_heals(self) -> None:
        """Replace, don't repair (law 8): a service with dead or missing instances is healed
        from its current release, one heal at a time, never during its roll-out."""
        now = time.monotonic()
        for service in self.store.list_services():
            if service.current_release is None or service.name in self._heals:
                continue
            live = [
                r
                for r in self.store.list_instances(service.name)
                if r.state is not InstanceState.STOPPING
            ]
            dead = [r for r in live if r.id in self.book.dead]
            if not dead and (
                len(live) >= service.replicas or self.service_lock(service.name).locked()
            ):
                continue  # missing ones during a roll-out: the roll-out converges them
            failures, not_before = self.heal_backoff.get(service.name, (0, 0.0))
            if now < not_before:
                continue
            young = [r for r in dead if time.time() - r.created_at < CRASH_LOOP_WINDOW]
            if young and not self._backing_off.get(service.name):
                # died soon after it started: a crash loop backs off instead of spinning
                failures += 1
                delay = min(CRASH_LOOP_MAX_DELAY, self.tick * 2**failures)
                self.heal_backoff[service.name] = (failures, now + delay)
                self._backing_off[service.name] = True
                self.emit(
                    "heal.backoff",
                    f"{service.name}: {len(young)} instance(s) died within "
                    f"{CRASH_LOOP_WINDOW:g}s of starting (crash loop #{failures}); "
                    f"next replacement in {delay:.1f}s",
                    service=service.name,
                    data={"failures": failures, "delay": delay, "instances": [r.id for r in young]},
                )
                continue
            if dead and not young:
                self.heal_backoff.pop(service.name, None)  # a long-lived one died: no loop
            self._backing_off[service.name] = False
            self._heals[service.name] = asyncio.create_task(
                self._heal(service.name, [r.id for r in dead]), name=f"heal-{service.name}"
            )

    async def _heal(self, name: str, dead: list[str]) -> None:
        try:
            service = self.store.get_service(name)
            if service is None or service.current_release is None:
                return
            target = ServiceTarget(name, service.replicas, service.settings)
            why = ", ".join(f"{i} ({self.book.detail.get(i, 'dead')})" for i in dead)
            self.emit(
                "heal.started",
                f"{name}: replacing {why or 'missing instances'}",
                service=name,
                data={"instances": dead},
            )
            if dead:
                # each dead one by a fresh copy of its own release, even mid roll-out
                result = await self.executor(None).replace_dead(target, dead)
            else:
                async with self.service_lock(name):
                    release = self.store.get_release(name, service.current_release)
                    if release is None:
                        return
                    result = await self.executor(None).heal(target, release)
            if result.ok:
                self.emit(
                    "heal.succeeded",
                    f"{name}: replaced {', '.join(result.stopped) or 'missing instances'} "
                    f"with {', '.join(result.started) or 'nothing new'}",
                    service=name,
                    data={"stopped": result.stopped, "started": result.started},
                )
            else:
                failures = self.heal_backoff.get(name, (0, 0.0))[0] + 1
                delay = min(CRASH_LOOP_MAX_DELAY, self.tick * 2**failures)
                self.heal_backoff[name] = (failures, time.monotonic() + delay)
                self.emit(
                    "heal.backoff",
                    f"{name}: replacement failed ({result.reason}); attempt {failures}, "
                    f"next in {delay:.1f}s",
                    service=name,
                    data={"failures": failures, "delay": delay, "reason": result.reason},
                )
        except Exception:  # a heal must never take the supervisor down
            log.exception("heal of %s failed", name)
        finally:
            self._heals.pop(name, None)

    def route_sockets(self) -> dict[str, socket.socket]:
        """The listening socket of every route, to hand to the next agent on restart."""
        return {service: self.router.listening_socket(service) for service in self.router.routes()}

    async def pause_for_handover(self) -> None:
        """Stop watching and give up the environment so the next agent can claim it.

        A roll-out that waits for a person is handed over too: its apply stays recorded as
        running, so the next agent resumes it and it waits there again. A roll-out that is
        moving makes the restart wait (exit 3)."""
        if self.active is not None:
            waiting = bool(self.controls) and all(
                c.awaiting_promotion for c in self.controls.values()
            )
            if not waiting:
                raise LockedError(
                    f"{self.active.id} is being applied; restart the agent after it ends",
                    holder=self.active.holder,
                    hint="Follow it with `corral status`, then run `corral agent restart` "
                    "again (a roll-out waiting for promotion is handed over).",
                )
            active, self.active = self.active, None
            self._handed_apply = active.id
            if active.task is not None:
                active.task.cancel()
                await asyncio.gather(active.task, return_exceptions=True)
            self.store.release_lock(self.agent_id)
            self.emit(
                "apply.handed_over",
                f"{active.id} handed over to the next agent",
                data={"apply_id": active.id},
            )
        if self._supervisor is not None:
            self._supervisor.cancel()
            self._supervisor = None
        self.store.clear_agent(self.agent_id)

    def resume_after_failed_handover(self) -> None:
        self._heartbeat()
        self._supervisor = asyncio.create_task(self._supervise(), name="supervisor")
        if self._handed_apply is not None:
            record = self.store.get_apply(self._handed_apply)
            self._handed_apply = None
            if record is not None and record.status is ApplyStatus.RUNNING:
                self._resume(record)

    async def shutdown(self) -> None:
        """Stop serving; instances keep running for the next agent to adopt."""
        self.stopping.set()
        if self.active is not None and self.active.task is not None:
            self.active.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.active.task
        if self._supervisor is not None:
            self._supervisor.cancel()
        await self.router.close()
        self.store.clear_agent(self.agent_id)

    # -- applies ----------------------------------------------------------------------------

    async def submit(self, target: dict[str, Any], holder: dict[str, Any]) -> tuple[str, bool]:
        """Start an apply (or attach to the same one running). Returns (apply_id, attached)."""
        if self.active is not None:
            if _same_target(self.active.target, target):
                return self.active.id, True
            lock = self.store.get_lock()
            who = lock.describe() if lock else "another apply"
            raise LockedError(
                f"another change is being applied by {who}",
                holder=asdict(lock) if lock else {},
            )
        expected = target.get("fingerprint")
        if expected is not None and expected != fingerprint(recorded_services(self.store)):
            raise StalePlanError(
                "the recorded state changed since this plan was made",
                hint="Run `corral plan` again and review the new plan.",
            )
        # a route port already taken fails the apply before anything is recorded or started
        for name, service in sorted(target.get("services", {}).items()):
            await self._ensure_route(name, service.get("settings", {}))
        self._acquire_lock(holder, operation=target.get("operation", "apply"))
        apply_id = f"a-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.store.create_apply(
            ApplyRecord(
                id=apply_id,
                status=ApplyStatus.RUNNING,
                target=target,
                holder=holder,
                created_at=time.time(),
            )
        )
        self.active = ActiveApply(apply_id, target, holder)
        self.emit(
            "apply.started",
            f"{holder.get('user', '?')} started {target.get('operation', 'apply')} {apply_id}",
            actor=holder.get("user"),
            data={
                "apply_id": apply_id,
                "services": sorted(target.get("services", {})),
                "destroy": target.get("destroy", []),
            },
        )
        self.active.task = asyncio.create_task(self._run_apply(self.active), name=apply_id)
        return apply_id, False

    def _acquire_lock(self, holder: dict[str, Any], operation: str) -> None:
        current = self.store.get_lock()
        if (
            current is not None
            and current.holder_id != self.agent_id
            and current.host == self.host
            and not _pid_alive(current.pid)
        ):
            # its holder died on this host: take the stale lease over now, not at expiry
            self.store.break_lock()
            self.emit(
                "lock.taken_over",
                f"lock of dead holder {current.describe()} taken over",
                data=asdict(current),
            )
        self.store.acquire_lock(
            LockInfo(
                holder_id=self.agent_id,
                user=str(holder.get("user") or getpass.getuser()),
                host=self.host,
                pid=self.pid,
                command=str(holder.get("command", "")),
                message=str(holder.get("message", "")),
                operation=operation,
                since=time.time(),
            ),
            ttl=LEASE_TTL,
        )
        if self._lease is None or self._lease.done():
            self._lease = asyncio.create_task(self._renew_lease(), name="lease")

    async def _renew_lease(self) -> None:
        while self.active is not None:
            await asyncio.sleep(LEASE_TTL / 3)
            if self.active is None:
                break
            try:
                self.store.renew_lock(self.agent_id, LEASE_TTL)
            except LockedError as exc:
                self.emit("lock.lost", f"lease lost while applying: {exc.message}")
                break

    def _resume(self, record: ApplyRecord) -> None:
        """An apply left running by a dead agent: take its lease over and converge it."""
        holder = dict(record.holder)
        try:
            self._acquire_lock(holder, operation="resume")
        except LockedError as exc:
            log.warning("cannot resume %s: %s", record.id, exc)
            return
        self.active = ActiveApply(record.id, record.target, holder)
        self.emit(
            "apply.resumed",
            f"resuming {record.id} after the previous agent stopped",
            data={"apply_id": record.id},
        )
        self.active.task = asyncio.create_task(self._run_apply(self.active), name=record.id)

    async def _run_apply(self, active: ActiveApply) -> None:
        target = active.target
        results: dict[str, RolloutResult] = {}
        status = ApplyStatus.SUCCEEDED
        error: str | None = None
        try:
            for name in target.get("destroy", []):
                results[name] = await self._destroy_service(active, name)
            services = target.get("services", {})
            outcomes = await asyncio.gather(
                *(self._converge_service(active, n, s) for n, s in sorted(services.items()))
            )
            for name, result in zip(sorted(services), outcomes, strict=True):
                results[name] = result
            if any(not r.ok for r in results.values()):
                status = ApplyStatus.FAILED
        except asyncio.CancelledError:
            raise
        except CorralError as exc:
            status, error = ApplyStatus.FAILED, str(exc)
        except Exception as exc:  # recorded, so the CLI can say what happened
            log.exception("apply %s crashed", active.id)
            status, error = ApplyStatus.FAILED, f"{type(exc).__name__}: {exc}"
        summary = {name: _result_view(r) for name, r in results.items()}
        if error:
            summary["error"] = {"message": error}
        self.store.update_apply(active.id, status=status, result=summary)
        self.emit(
            f"apply.{status.value}",
            f"{active.id} {status.value}" + (f": {error}" if error else ""),
            data={"apply_id": active.id, "status": status.value},
        )
        self.store.release_lock(self.agent_id)
        self.active = None

    async def _converge_service(
        self, active: ActiveApply, name: str, spec: dict[str, Any]
    ) -> RolloutResult:
        release = self.store.get_or_create_release(
            name,
            spec["image_digest"],
            spec["config_hash"],
            spec["config"],
            created_by=str(active.holder.get("user", "?")),
        )
        existing = self.store.get_service(name)
        previous = None
        if existing is not None and existing.current_release is not None:
            previous = self.store.get_release(name, existing.current_release)
        settings = spec.get("settings", {})
        route = settings.get("route")
        self.store.put_service(
            ServiceRecord(
                name=name,
                current_release=existing.current_release if existing else None,
                replicas=int(spec["replicas"]),
                route_port=int(route["port"]) if route else None,
                settings=settings,
                updated_at=time.time(),
            )
        )
        await self._ensure_route(name, settings)
        target = ServiceTarget(name=name, replicas=int(spec["replicas"]), settings=settings)
        active.progress[name] = {
            "strategy": "rolling",
            "from_release": previous.number if previous else None,
            "to_release": release.number,
            "started_at": time.time(),
        }
        self.emit(
            "rollout.started",
            f"{name}: rolling to r{release.number} ({spec['replicas']} instances)"
            + (f" from r{previous.number}" if previous else ""),
            service=name,
            data={"release": release.number, "from": previous.number if previous else None},
        )
        async with self.service_lock(name):
            result = await self.executor(active.id).converge(target, release, previous)
        final = (
            release.number
            if result.ok
            else (result.rolled_back_to or (previous.number if previous else None))
        )
        self.store.put_service(
            ServiceRecord(
                name=name,
                current_release=final,
                replicas=int(spec["replicas"]),
                route_port=int(route["port"]) if route else None,
                settings=settings,
                updated_at=time.time(),
            )
        )
        measured = (
            f"{result.requests} requests served through the router during the roll-out, "
            f"{result.failed_requests} failed"
        )
        if result.ok:
            self.emit(
                "rollout.succeeded",
                f"{name}: r{release.number} running {target.replicas}/{target.replicas} in "
                f"{result.seconds:.2f}s; {measured}",
                service=name,
                data=_result_view(result),
            )
        else:
            back = (
                f"rolled back to r{result.rolled_back_to}"
                if result.rolled_back_to
                else ("no previous release to roll back to; its instances were stopped")
            )
            self.emit(
                "rollout.rolled_back",
                f"{name}: r{release.number} failed ({result.reason}); {back}; {measured}",
                service=name,
                data=_result_view(result),
            )
        active.progress.pop(name, None)
        return result

    async def _destroy_service(self, active: ActiveApply, name: str) -> RolloutResult:
        existing = self.store.get_service(name)
        settings = existing.settings if existing else {}
        target = ServiceTarget(name=name, replicas=0, settings=settings)
        async with self.service_lock(name):
            result = await self.executor(active.id).retire_all(target, "service destroyed")
        if name in self.router.routes():
            await self.router.close_route(name)
        self.store.delete_service(name)
        self.emit(
            "service.destroyed",
            f"{name}: destroyed ({len(result.stopped)} stopped)",
            service=name,
            data={"stopped": result.stopped},
        )
        return result

    # -- steering a roll-out ----------------------------------------------------------------

    def steer(self, service: str, action: str, who: str) -> dict[str, Any]:
        """promote / pause / resume / abort the running roll-out of `service`."""
        control = self.controls.get(service)
        if control is None:
            raise UsageError(
                f"no roll-out of {service!r} is running",
                hint="`corral status` shows the services and their roll-outs.",
            )
        if action == "promote":
            control.promote()
        elif action == "pause":
            control.pause()
        elif action == "resume":
            control.resume()
        elif action == "abort":
            control.abort(who)
        else:
            raise UsageError(f"unknown roll-out action {action!r}")
        self.emit(
            f"rollout.{action}",
            f"{service}: {action} by {who}",
            service=service,
            actor=who,
            data={"action": action},
        )
        return self.rollout_view(service)

    def rollout_view(self, service: str) -> dict[str, Any]:
        """Step, weights, ready counts, and per-release request figures of the route."""
        control = self.controls.get(service)
        by_release: dict[str, dict[str, Any]] = {}
        for record in self.store.list_instances(service):
            entry = by_release.setdefault(f"r{record.release}", {"instances": 0, "ready": 0})
            entry["instances"] += 1
            entry["ready"] += record.id in self.book.ready
        if service in self.router.routes():
            for label, stats in self.router.stats(service).by_release.items():
                sample = Sample.of(stats)
                entry = by_release.setdefault(label, {"instances": 0, "ready": 0})
                entry.update(
                    requests=sample.requests,
                    errors=sample.errors,
                    error_rate=round(sample.error_rate, 4),
                    p99_ms=sample.percentile_ms(0.99),
                )
        return {
            "service": service,
            "running": control is not None,
            "apply_id": self.active.id if self.active and control else None,
            **(control.view() if control else {}),
            "releases": by_release,
        }

    # -- views ------------------------------------------------------------------------------

    def apply_view(self, apply_id: str) -> dict[str, Any] | None:
        record = self.store.get_apply(apply_id)
        if record is None:
            return None
        return {
            "id": record.id,
            "status": record.status.value,
            "result": record.result,
            "holder": record.holder,
            "created_at": record.created_at,
            "finished_at": record.finished_at,
        }

    def status(self) -> dict[str, Any]:
        services = []
        routes = self.router.routes()
        # three reads whatever the number of services: live instances, the releases in use
        # (current or running), the services; never one per service
        live_by_service: dict[str, list[Any]] = {}
        for record in self.store.list_instances():
            live_by_service.setdefault(record.service, []).append(record)
        releases = {(r.service, r.number): r for r in self.store.releases_in_use()}
        for service in self.store.list_services():
            current = service.current_release
            release = releases.get((service.name, current)) if current else None
            instances = []
            for record in live_by_service.get(service.name, []):
                rel = releases.get((service.name, record.release))
                instances.append(
                    {
                        "id": record.id,
                        "serial": record.serial,
                        "release": f"r{record.release}",
                        "state": record.state.value,
                        "health": self.book.health(record.id),
                        "address": record.address,
                        "image": rel.image_digest if rel else None,
                    }
                )
            progress = None
            if self.active is not None and service.name in self.active.progress:
                progress = dict(self.active.progress[service.name], apply_id=self.active.id)
                control = self.controls.get(service.name)
                if control is not None:
                    progress.update(control.view())
            port = routes.get(service.name)
            services.append(
                {
                    "name": service.name,
                    "release": release.name if release else None,
                    "desired": service.replicas,
                    "ready": sum(1 for i in instances if i["health"] == "ready"),
                    "route": f"http://127.0.0.1:{port}" if port else None,
                    "rollout": progress,
                    "instances": instances,
                }
            )
        return {"services": services, "strangers": self.strangers}


def _result_view(result: RolloutResult) -> dict[str, Any]:
    return {
        "ok": result.ok,
        "release": result.release,
        "reason": result.reason,
        "rolled_back_to": result.rolled_back_to,
        "started": result.started,
        "stopped": result.stopped,
        "seconds": round(result.seconds, 3),
        "requests": result.requests,
        "failed_requests": result.failed_requests,
    }
