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
    """Seconds for `corral plan` end to end on this fleet (spec load, state read, observe,
    diff, render), or None while it is not wired.

    TODO(lead): wire the real CLI here once `corral plan` exists: write a spec with SERVICES
    services, seed a state store (under a temporary CORRAL_HOME) with the recorded fleet, and
    time `corral plan --json` in a subprocess (best of ROUNDS)."""
    return None


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
        "cli_plan_s": cli_s,
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
