"""The busybox test fleet: what the docker and swarm tests and benches run.

No registry is reachable here, so the image is made from Debian's static busybox
(`busybox-static`) and a shell script, baked by corral (`from: scratch`, one `copy:`):

    <context>/rootfs/bin/busybox, bin/<applet> → busybox
    <context>/rootfs/app/serve.sh   GET /healthz → ok, GET / → {"release", "instance"}
    <context>/rootfs/app/VERSION    the release the fleet answers with (`set_version`)
    <context>/corral.yaml           `fleet_spec`: one routed service `web`, health-gated
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

BUSYBOX = Path("/usr/bin/busybox")  # Debian's busybox-static
# what serve.sh, the tests' commands and Swarm's HEALTHCHECK (wget) call
APPLETS = ("sh", "httpd", "mkdir", "printf", "echo", "env", "sleep", "cat", "touch", "grep", "wget")

SERVE = """#!/bin/sh
echo "serving $(cat /app/VERSION) as $CORRAL_INSTANCE"
mkdir -p /tmp/www
printf ok > /tmp/www/healthz
printf '{"release": "%s", "instance": "%s"}' "$(cat /app/VERSION)" "$CORRAL_INSTANCE" \\
  > /tmp/www/index.html
exec httpd -f -p "$PORT" -h /tmp/www
"""

SPEC = """project: {project}
{engine}images:
  app:
    from: scratch
    copy:
      - src: rootfs
        dest: /
    cmd: ["/app/serve.sh"]
services:
  web:
    image: app
    replicas: {replicas}
    port: 8080
    health:
      http: {{path: /healthz}}
      interval: {interval}
      start_timeout: {start_timeout}
    route:
      port: {port}
{strategy}    stop_grace: 2s
    drain_timeout: 1s
"""

DOCKER_ENGINE = "driver: docker\n"  # `engine` of a fleet on this host's Docker engine
# strategies as `fleet_spec` takes them: the lines under `strategy:`
ROLLING = """      type: rolling
      max_surge: 2
      max_unavailable: 0"""


def write_rootfs(context: Path, serve: str = SERVE) -> Path:
    """Make `context`/rootfs (busybox, its applets, /app/serve.sh); return its path."""
    rootfs = context / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2(BUSYBOX, rootfs / "bin" / "busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "app").mkdir()
    (rootfs / "app" / "serve.sh").write_text(serve)
    (rootfs / "app" / "serve.sh").chmod(0o755)
    return rootfs


def set_version(context: Path, version: str) -> None:
    """The release the next bake's instances answer with."""
    (context / "rootfs" / "app" / "VERSION").write_text(version)


def fleet_spec(
    *,
    project: str,
    port: int,
    engine: str,
    replicas: int = 2,
    interval: str = "100ms",
    start_timeout: str = "20s",
    strategy: str = "",
) -> str:
    """The fleet's corral.yaml. `engine`: the lines that choose the driver (`DOCKER_ENGINE`,
    `swarm_engine()`); `strategy`: the lines under `strategy:` (none: the default)."""
    block = f"    strategy:\n{strategy}\n" if strategy else ""
    fleet = {"project": project, "engine": engine, "replicas": replicas, "port": port}
    return SPEC.format(strategy=block, interval=interval, start_timeout=start_timeout, **fleet)


def swarm_engine(
    manager: str, node_engines: Sequence[str], *, environment: str | None = None
) -> str:
    """`driver: swarm` on `manager` with its nodes' engines; under `environments:` when named."""
    lines = ["driver: swarm", "swarm:", f"  manager: {manager}"]
    lines.append(f"  node_engines: {json.dumps(list(node_engines))}")
    if environment is None:
        return "".join(f"{line}\n" for line in lines)
    return f"environments:\n  {environment}:\n" + "".join(f"    {line}\n" for line in lines)
