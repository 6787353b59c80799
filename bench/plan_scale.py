"""How the pure plan scales: 1,000 services x 10 instances, 10 % of them differing.

Run: `.venv/bin/python bench/plan_scale.py`. Prints a table, then every figure as one JSON
object on the last line (for scripts comparing runs). Goals: diff ≤ 0.5 s, peak ≤ 200 MB.
The differing services are split between a new image (REPLACE), an exited instance (HEAL) and
another replica count (SCALE).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corral.plan.diff import diff
from corral.plan.model import (
    DesiredService,
    ObservedInstanceView,
    Plan,
    RecordedInstance,
    RecordedRelease,
    RecordedService,
)
from corral.plan.planfile import load_plan, save_plan
from corral.plan.render import plan_json, render_plan
from corral.releases import config_hash, release_config
from corral.spec.model import ServiceSpec

SERVICES = 1000
INSTANCES = 10
CHANGED_EVERY = 10  # one service in ten differs
ROUNDS = 5
GOAL_DIFF_S = 0.5
GOAL_PEAK_MB = 200.0

Inputs = tuple[list[DesiredService], list[RecordedService], list[ObservedInstanceView]]


def _digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def build_fleet() -> Inputs:
    desired: list[DesiredService] = []
    recorded: list[RecordedService] = []
    observed: list[ObservedInstanceView] = []
    settings = {
        "route": None,
        "strategy": {"type": "rolling", "max_surge": 1, "max_unavailable": 0},
        "stop_grace": 5.0,
        "drain_timeout": 10.0,
    }
    for n in range(SERVICES):
        name = f"svc-{n:04d}"
        spec = ServiceSpec(
            image="app",
            replicas=INSTANCES,
            command=["python", "-m", "app", f"--shard={n}"],
            env={f"VAR_{k}": f"value-{n}-{k}" for k in range(8)},
        )
        config = release_config(spec)
        digest, replicas, dead = _digest(n), INSTANCES, False
        if n % CHANGED_EVERY == 0:
            kind = (n // CHANGED_EVERY) % 3
            if kind == 0:
                digest = _digest(n + 10**6)  # a new image
            elif kind == 1:
                dead = True  # one instance exited
            else:
                replicas = INSTANCES + 2
        desired.append(
            DesiredService(
                name=name,
                image="app",
                image_digest=digest,
                config=config,
                config_hash=config_hash(config),
                replicas=replicas,
                settings={**settings, "route": {"port": 20000 + n, "host": "127.0.0.1"}},
            )
        )
        current = RecordedRelease(3, _digest(n), config_hash(config), config)
        instances = tuple(
            RecordedInstance(id=f"{name}-{k}", serial=k, release=3, state="running")
            for k in range(1, INSTANCES + 1)
        )
        recorded.append(
            RecordedService(
                name=name,
                current=current,
                replicas=INSTANCES,
                settings={**settings, "route": {"port": 20000 + n, "host": "127.0.0.1"}},
                instances=instances,
                next_release_number=4,
            )
        )
        observed.extend(
            ObservedInstanceView(id=i.id, service=name, running=not (dead and i.serial == 1))
            for i in instances
        )
    return desired, recorded, observed


def best_of(rounds: int, work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def peak_mb(work: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        work()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def time_cli_plan() -> float | None:
    """Seconds for `corral plan --json` end to end (spec load, bake with a warm cache, state
    read, observe, diff, JSON), best of 3, on SERVICES services x INSTANCES recorded instances
    in SQLite; 10 % of the services changed in the spec. No instance runs, so the driver
    observes none and every service also heals: a heavier plan than the in-process one."""
    import os
    import shutil
    import subprocess

    from corral.engine import settings_of
    from corral.images.store import ImageStore
    from corral.spec.load import load_spec
    from corral.state.records import InstanceRecord, InstanceState, ServiceRecord
    from corral.state.sql import SqlStateStore

    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory(prefix="cb-plan-") as tmp:
        home = Path(tmp) / "home"
        work = Path(tmp) / "work"
        shutil.copytree(root / "examples" / "hello" / "app", work / "app")
        lines = [
            "project: bench",
            "images:",
            "  app:",
            "    copy: [{src: app/, dest: /app}]",
            '    cmd: ["/usr/bin/python3", "/app/server.py"]',
            "services:",
        ]
        for n in range(SERVICES):
            lines += [f"  s{n:04d}:", "    image: app", f"    replicas: {INSTANCES}"]
        spec_path = work / "corral.yaml"
        spec_path.write_text("\n".join(lines) + "\n")
        loaded = load_spec(spec_path)
        digest = ImageStore(home / "images").bake("app", loaded.spec.images["app"], work).digest
        store = SqlStateStore(f"sqlite:///{home / 'state.db'}", "bench/dev")
        now = time.time()
        for n, (name, service) in enumerate(sorted(loaded.spec.services.items())):
            config = release_config(service)
            release = store.get_or_create_release(
                name, digest, config_hash(config), config, "bench"
            )
            store.put_service(
                ServiceRecord(name, release.number, INSTANCES, None, settings_of(service), now)
            )
            for serial in range(INSTANCES):
                store.put_instance(
                    InstanceRecord(
                        id=store.new_instance_id(name),
                        service=name,
                        serial=serial,
                        release=release.number,
                        state=InstanceState.RUNNING,
                        address=f"127.0.0.1:{20000 + serial}",
                        created_at=now,
                        updated_at=now,
                    )
                )
            if n % 10 == 0:  # 10 % of the services change in the spec
                lines[lines.index(f"  s{n:04d}:") + 2] = f"    replicas: {INSTANCES + 1}"
        store.close()
        spec_path.write_text("\n".join(lines) + "\n")
        corral = str(Path(sys.executable).parent / "corral")
        env = {**os.environ, "CORRAL_HOME": str(home)}

        def run() -> object:
            return subprocess.run(
                [corral, "plan", "--json", "--file", str(spec_path)],
                env=env,
                check=True,
                capture_output=True,
                timeout=300,
            )

        return best_of(3, run)


def main() -> int:
    desired, recorded, observed = build_fleet()

    def run() -> Plan:
        return diff(desired, recorded, observed, environment="bench", project="bench")

    plan = run()
    diff_s = best_of(ROUNDS, run)
    diff_peak = peak_mb(run)
    render_s = best_of(ROUNDS, lambda: render_plan(plan))
    json_s = best_of(ROUNDS, lambda: json.dumps(plan_json(plan)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.json"

        def save_and_load() -> Plan:
            save_plan(plan, path)
            return load_plan(path)

        save_load_s = best_of(ROUNDS, save_and_load)
    cli_s = time_cli_plan()

    figures: dict[str, Any] = {
        "services": SERVICES,
        "instances": SERVICES * INSTANCES,
        "actions": len(plan.actions),
        "kinds": {
            k: sum(a.kind.value == k for a in plan.actions) for k in ("replace", "heal", "scale")
        },
        "diff_s": round(diff_s, 4),
        "diff_peak_mb": round(diff_peak, 1),
        "render_s": round(render_s, 4),
        "json_s": round(json_s, 4),
        "save_load_s": round(save_load_s, 4),
        "cli_plan_s": None if cli_s is None else round(cli_s, 3),
        "goal_diff_s": GOAL_DIFF_S,
        "goal_peak_mb": GOAL_PEAK_MB,
        "within_goals": diff_s <= GOAL_DIFF_S and diff_peak <= GOAL_PEAK_MB,
    }
    rows = [
        ("diff (best of 5)", f"{diff_s * 1000:.1f} ms", f"≤ {GOAL_DIFF_S * 1000:.0f} ms"),
        ("diff peak memory", f"{diff_peak:.1f} MB", f"≤ {GOAL_PEAK_MB:.0f} MB"),
        ("render_plan", f"{render_s * 1000:.1f} ms", ""),
        ("plan_json + dumps", f"{json_s * 1000:.1f} ms", ""),
        ("save_plan + load_plan", f"{save_load_s * 1000:.1f} ms", ""),
        ("corral plan (CLI)", "not wired" if cli_s is None else f"{cli_s:.3f} s", ""),
    ]
    print(
        f"plan scale: {SERVICES} services x {INSTANCES} instances, "
        f"{len(plan.actions)} actions {figures['kinds']}"
    )
    print(f"{'measure':<24}{'figure':>12}  goal")
    for label, value, goal in rows:
        print(f"{label:<24}{value:>12}  {goal}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
