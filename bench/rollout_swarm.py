"""Roll-outs on a real 3-node Docker Swarm (tests/swarm_lab.py): 12 busybox instances v1 → v2.

- corral, `driver: swarm`: rolling (max_surge 2, max_unavailable 0), then canary, health-gated
  by corral's own HTTP probe, under bounded keep-alive load (paced at 400 requests/s)
  through corral's router on 127.0.0.1; figure: the agent's seconds to all-new
  (rollout.succeeded) and failed requests.
- Swarm's own `docker service update --update-parallelism 2 --update-order start-first`,
  health-gated by a HEALTHCHECK (same path, 100 ms); figure: seconds until all tasks run v2.
  Swarm's routing mesh needs IPVS (not in this kernel), so its traffic goes straight to the
  tasks' host-mode ports: the load client rediscovers the running tasks every 0.5 s from the
  manager, as a load balancer fed by Swarm's API would; failed requests counted the same way.

All on one swarm in one run. Needs root (the lab builds namespaces and engines); it tears down
everything it made. Last line: one JSON object.
Run: `.venv/bin/python bench/rollout_swarm.py [--replicas 12] [--skip-corral]`
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _fleet import CORRAL, ROOT, Load, free_port

from corral.testing.busybox import ROLLING, fleet_spec, set_version, swarm_engine, write_rootfs
from corral.testing.load import Load as BaseLoad

sys.path.insert(0, str(ROOT))
from tests.swarm_lab import SwarmLab

CANARY = """      type: canary
      steps:
        - set_weight: 25
        - pause: {duration: 1s}
        - analysis: {window: 1s, max_error_rate: 0.01, min_requests: 5}
        - set_weight: 50
      bake_window: 1s
      analysis: {max_error_rate: 0.01, min_requests: 5}"""
# Swarm's service: the same server and probe, VERSION from the image's environment
NATIVE_SERVE = (
    "mkdir -p /tmp/www; printf ok > /tmp/www/healthz; "
    'printf \'{"release": "%s"}\' "$VERSION" > /tmp/www/index.html; '
    "exec httpd -f -p 8080 -h /tmp/www"
)


# requests/s for both, through corral's router and straight to Swarm's tasks: an unpaced load
# would take a core of this 2-core machine from the engines being measured
LOAD_RATE = 400.0


class DiscoveringLoad(Load):
    """Bounded load straight to the tasks' host-mode ports; the task list is re-read every
    0.5 s from the manager (Swarm has no front door here: its mesh needs IPVS)."""

    def __init__(self, lab: SwarmLab, service: str, clients: int = 8, max_seconds: float = 180):
        super().__init__(
            "http://127.0.0.1/",
            clients=clients,
            max_seconds=max_seconds,
            keep_alive=False,
            json_body=False,
            pace=LOAD_RATE,
        )
        self.lab, self.service = lab, service
        self.endpoints = lab.endpoints(service)

    def _discover(self) -> None:
        while not self.stopping.wait(0.5):
            found = self.lab.endpoints(self.service)
            if found:
                self.endpoints = found

    def next_target(self, client: int, turn: int) -> tuple[str, int, str]:
        endpoints = self.endpoints
        ip, port = endpoints[(client + turn) % len(endpoints)]
        return ip, port, "/"

    def threads(self) -> list[threading.Thread]:
        return [threading.Thread(target=self._discover, daemon=True), *super().threads()]


def run_native(lab: SwarmLab, replicas: int) -> dict[str, Any]:
    """Swarm's own rolling update, v1 → v2, on the same swarm."""
    for version in ("v1", "v2"):
        lab.import_busybox(f"rs-web:{version}", env={"VERSION": version})
    manager = lab.manager_node
    manager.docker(
        *("service", "create", "-d", "-q", "--name", "rs-web", "--replicas", str(replicas)),
        *("--init", "--stop-grace-period", "2s", "--publish", "mode=host,target=8080"),
        *("--health-cmd", "wget -q -O /dev/null http://127.0.0.1:8080/healthz"),
        *("--health-interval", "100ms", "--health-timeout", "1s", "--health-retries", "3"),
        *("--update-delay", "0s", "--no-resolve-image", "rs-web:v1", "sh", "-c", NATIVE_SERVE),
    )
    wait_tasks(lab, "rs-web:v1", replicas)
    with DiscoveringLoad(lab, "rs-web") as load:
        time.sleep(1.0)
        began = time.monotonic()
        manager.docker(
            *("service", "update", "-d", "-q", "--image", "rs-web:v2", "--no-resolve-image"),
            *("--update-parallelism", "2", "--update-order", "start-first", "rs-web"),
        )
        wait_tasks(lab, "rs-web:v2", replicas)
        seconds = time.monotonic() - began
        time.sleep(1.0)  # the last old tasks stop while the client still knows them
    manager.docker("service", "rm", "rs-web")
    return figures(seconds, load)


def wait_tasks(lab: SwarmLab, image: str, replicas: int, timeout: float = 240) -> None:
    client = lab.manager_node.client()
    try:
        deadline = time.monotonic() + timeout
        while True:
            tasks = client.api.tasks(filters={"service": "rs-web", "desired-state": "running"})
            running = sum(
                1
                for t in tasks
                if t["Status"]["State"] == "running"
                and t["Spec"]["ContainerSpec"]["Image"].split("@")[0] == image
            )
            if running >= replicas:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"swarm: {image} not running on {replicas} tasks in time")
            time.sleep(0.1)
    finally:
        client.close()


def figures(seconds: float, load: BaseLoad) -> dict[str, Any]:
    return {
        "seconds": round(seconds, 2),
        "requests": load.ok + load.failed,
        "rate": round(load.rate, 1),
        "failed": load.failed,
        "errors": dict(load.errors),
    }


class CorralRun:
    """corral's rolling, then canary, roll-out through the real CLI with `driver: swarm`."""

    def __init__(self, lab: SwarmLab, replicas: int) -> None:
        self.lab, self.replicas = lab, replicas
        self.home = Path(tempfile.mkdtemp(prefix="cbs-", dir="/tmp"))
        self.dir = self.home / "work"
        self.port = free_port()
        self.env = {**os.environ, "CORRAL_HOME": str(self.home), "NO_COLOR": "1"}
        self.env.pop("CORRAL_STATE_URL", None)
        write_rootfs(self.dir)

    def write(self, version: str, strategy: str) -> None:
        set_version(self.dir, version)
        spec = fleet_spec(
            project=f"rs{self.lab.id}",
            port=self.port,
            engine=swarm_engine(self.lab.manager, self.lab.node_engines),
            replicas=self.replicas,
            start_timeout="60s",
            strategy=strategy,
        )
        (self.dir / "corral.yaml").write_text(spec)

    def corral(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [CORRAL, *args, "--file", str(self.dir / "corral.yaml")],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if check and result.returncode != 0:
            raise SystemExit(f"corral {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def roll(self, version: str, strategy: str) -> dict[str, Any]:
        self.write(version, strategy)
        url = f"http://127.0.0.1:{self.port}/"
        with Load(url, clients=8, max_seconds=300, pace=LOAD_RATE) as load:
            time.sleep(1.0)
            self.corral("apply")
            time.sleep(0.3)
        events = json.loads(self.corral("events", "--json", "--limit", "1000").stdout)["events"]
        rollout = [e for e in events if e["kind"] == "rollout.succeeded"][-1]["data"]
        return figures(float(rollout["seconds"]), load)

    def run(self) -> dict[str, dict[str, Any]]:
        self.write("v1", ROLLING)
        self.corral("apply")
        return {"rolling": self.roll("v2", ROLLING), "canary": self.roll("v3", CANARY)}

    def close(self) -> None:
        self.corral("destroy", check=False)
        self.corral("agent", "stop", check=False)
        shutil.rmtree(self.home, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, default=12)
    parser.add_argument("--skip-corral", action="store_true", help="Swarm's own update only")
    args = parser.parse_args()
    n = args.replicas
    results: dict[str, dict[str, Any]] = {}
    with SwarmLab(nodes=3) as lab:
        if not args.skip_corral:
            run = CorralRun(lab, n)
            try:
                for name, figure in run.run().items():
                    results[f"corral_{name}"] = figure
            finally:
                run.close()
        results["swarm_update"] = run_native(lab, n)
    rows = {
        "corral_rolling": "corral rolling (surge 2), via router",
        "corral_canary": "corral canary 25→50→100, via router",
        "swarm_update": "swarm update (par. 2, start-first), direct*",
    }
    print(f"{n} busybox instances v1 → v2 on a 3-node swarm (1 manager, 2 workers), 100 ms probes")
    print(f"{'who':<46}{'seconds':>9}{'requests':>10}{'req/s':>8}{'failed':>8}")
    for key, label in rows.items():
        if key in results:
            r = results[key]
            print(
                f"{label:<46}{r['seconds']:>9.2f}{r['requests']:>10}{r['rate']:>8}{r['failed']:>8}"
            )
    print(
        "* no router in front of Swarm (its mesh needs IPVS): requests go straight to the tasks'"
        " host-mode ports,\n  the client re-reading the running tasks from the manager every 0.5 s"
    )
    print(json.dumps({"bench": "rollout_swarm", "replicas": n, "nodes": 3, **results}))


if __name__ == "__main__":
    main()
