"""Each strategy rolled v1→v2 with N = 10 and 30 local instances, under load through the router.

Figures per run: seconds to complete (apply wall time, and the agent's first-new-to-last-old),
failed requests, requests/s, and the client-side p99 latency during the roll-out against the
p99 of the same load just before it. Readable table, then one JSON object on the last line.

    .venv/bin/python bench/rollouts.py [--sizes 10,30]
"""

from __future__ import annotations

import argparse
import json
import time

from _fleet import BenchFleet, TimedLoad

STRATEGIES = {
    "rolling": """      type: rolling
      max_surge: 25%
      max_unavailable: 0""",
    "blue_green": """      type: blue_green
      auto_promote_after: 200ms
      scale_down_delay: 200ms""",
    "canary": """      type: canary
      steps:
        - set_weight: 10
        - analysis: {window: 1s, max_error_rate: 0.01, min_requests: 20}
        - set_weight: 50
        - analysis: {window: 1s, max_error_rate: 0.01, min_requests: 20}""",
}
ROLLING = """      type: rolling
      max_surge: 1
      max_unavailable: 0"""


def run(strategy: str, replicas: int) -> dict[str, object]:
    fleet = BenchFleet(replicas)
    try:
        fleet.spec.write_text(fleet.spec.read_text().replace(ROLLING, STRATEGIES[strategy]))
        fleet.corral("apply")
        (fleet.dir / "app" / "VERSION").write_text("v2\n")
        with TimedLoad(fleet.port) as load:
            time.sleep(2.0)
            before_end = time.monotonic()
            fleet.corral("apply")
            after = time.monotonic()
            time.sleep(0.3)
        rollout = fleet.last_rollout()
    finally:
        fleet.close()
    before = load.window(before_end - 1.5, before_end)
    during = load.window(before_end, after)
    return {
        "strategy": strategy,
        "replicas": replicas,
        "apply_s": round(after - before_end, 2),
        "agent_s": rollout["seconds"],
        "failed": during["failed"],
        "requests": during["requests"],
        "rate": round(during["rate"], 1),
        "p99_before_ms": before["p99_ms"],
        "p99_during_ms": during["p99_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10,30")
    args = parser.parse_args()
    rows = [run(s, int(n)) for n in args.sizes.split(",") for s in STRATEGIES]
    header = (
        "strategy",
        "N",
        "apply s",
        "agent s",
        "requests",
        "req/s",
        "failed",
        "p99 before ms",
        "p99 during ms",
    )
    print("roll-outs v1→v2 under load through the router (6 keep-alive clients)")
    print("  ".join(f"{h:>13}" for h in header))
    for r in rows:
        values = (
            r["strategy"],
            r["replicas"],
            r["apply_s"],
            r["agent_s"],
            r["requests"],
            r["rate"],
            r["failed"],
            r["p99_before_ms"],
            r["p99_during_ms"],
        )
        print("  ".join(f"{v!s:>13}" for v in values))
    print(json.dumps({"runs": rows}))


if __name__ == "__main__":
    main()
