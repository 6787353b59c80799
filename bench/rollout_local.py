"""Roll 30 local instances v1→v2 with load running through the router.

Figures: seconds from the first new instance started to the last old one stopped (measured by
the agent), failed requests seen by the clients and by the router, requests/s, and the agent's
peak memory. Goal: ≤ 3 s, 0 failed requests. Printed as a table, then one JSON line.

    .venv/bin/python bench/rollout_local.py [--replicas 30] [--surge 10]
"""

from __future__ import annotations

import argparse
import json
import time

from _fleet import BenchFleet, Load, peak_rss_mb


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, default=30)
    parser.add_argument("--surge", default="10", help="max_surge (count or %%)")
    args = parser.parse_args()
    surge: int | str = int(args.surge) if args.surge.isdigit() else args.surge
    fleet = BenchFleet(args.replicas, max_surge=surge)
    try:
        started = time.monotonic()
        fleet.corral("apply")
        create_s = time.monotonic() - started
        (fleet.dir / "app" / "VERSION").write_text("v2\n")
        with Load(fleet.url, clients=8) as load:
            time.sleep(1.0)
            wall = time.monotonic()
            fleet.corral("apply")
            wall = time.monotonic() - wall
            time.sleep(0.5)
        rollout = fleet.last_rollout()
        peak = peak_rss_mb(fleet.agent_pid())
    finally:
        fleet.close()
    figures = {
        "replicas": args.replicas,
        "max_surge": surge,
        "create_s": round(create_s, 3),
        "rollout_s": rollout["seconds"],
        "apply_wall_s": round(wall, 3),
        "client_requests": load.ok + load.failed,
        "client_failed": load.failed,
        "router_requests": rollout["requests"],
        "router_failed": rollout["failed_requests"],
        "requests_per_s": round(load.rate, 1),
        "agent_peak_rss_mb": round(peak, 1),
        "goal_rollout_s": 3.0,
    }
    rows = [
        ("create (corral apply, wall)", f"{figures['create_s']:.2f} s"),
        ("roll-out, first new → last old stopped", f"{figures['rollout_s']:.2f} s  (goal ≤ 3 s)"),
        ("corral apply v2, wall", f"{figures['apply_wall_s']:.2f} s"),
        ("requests during the load (clients)", str(figures["client_requests"])),
        ("failed requests (clients)", f"{figures['client_failed']}  (goal 0)"),
        (
            "requests / failed counted by the router",
            f"{rollout['requests']} / {rollout['failed_requests']}",
        ),
        ("requests/s through the router", f"{figures['requests_per_s']:.0f}"),
        ("agent peak RSS", f"{figures['agent_peak_rss_mb']:.1f} MiB"),
    ]
    print(f"rolling {args.replicas} local instances v1→v2, max_surge {surge}, max_unavailable 0")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
