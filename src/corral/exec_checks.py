"""Exec checks need a driver that can run commands inside instances (`drivers.protocol.Execs`).

Found at plan time, before anything starts: a spec whose checks use `exec:` on a driver without
the capability cannot be carried out as given (exit 2), and the error points at the check.
"""

from __future__ import annotations

from corral.drivers.protocol import Driver, Execs
from corral.errors import UsageError
from corral.spec.load import LoadedSpec
from corral.spec.model import Spec


def exec_check_paths(spec: Spec) -> list[tuple[str, ...]]:
    """Where the spec's exec checks are: `("services", "web", "health", "liveness", "exec")`."""
    found: list[tuple[str, ...]] = []
    for name, service in sorted(spec.services.items()):
        health = service.health
        base = ("services", name, "health")
        if health.exec_ is not None:
            found.append((*base, "exec"))
        for role, probe in (("startup", health.startup), ("liveness", health.liveness)):
            if probe is not None and probe.exec_ is not None:
                found.append((*base, role, "exec"))
    return found


def refuse_exec_without_support(loaded: LoadedSpec, spec: Spec, driver: Driver) -> None:
    """UsageError (exit 2) naming the driver and the first exec check, if it cannot exec."""
    if isinstance(driver, Execs):
        return
    paths = exec_check_paths(spec)
    if not paths:
        return
    where = loaded.position(paths[0], key=True)
    line = f":{where[0]}:{where[1]}" if where else ""
    more = f" (and {len(paths) - 1} more)" if len(paths) > 1 else ""
    raise UsageError(
        f"{loaded.path}{line}: {'.'.join(paths[0])}{more}: the {driver.name!r} driver cannot "
        "run commands inside instances, so exec checks cannot be probed",
        hint="Use an http or tcp check, or a driver that can exec (local, docker, swarm, "
        "kubernetes).",
    )
