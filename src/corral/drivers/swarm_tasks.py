"""What one corral instance looks like on a swarm, read from the engine's service, tasks and
nodes (pure: no engine calls, tested with data).

An instance is one replicated service with replicas=1. Swarm keeps a history of that service's
tasks: at most one is *current* (desired running), the others ended (failed, shut down). The
instance is

- RUNNING when the current task runs on a node that is up: its address is the node's
  address and the host port the task published (host mode, PortStatus);
- PENDING when Swarm is bringing it back: the current task is not running yet (restarted
  after a crash, rescheduled off a lost node) or its node is down;
- EXITED when no task is meant to run any more: the service is gone or scaled to 0, or Swarm
  gave up restarting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from corral.drivers.protocol import ObservedState

# task states in Swarm's order; everything after "running" has ended
_ENDED = {"complete", "shutdown", "failed", "rejected", "remove", "orphaned"}
_WANTED = {"running", "ready", "accepted"}  # desired states of a task meant to run


@dataclass(frozen=True)
class TaskView:
    """The instance as the engine shows it now."""

    state: ObservedState
    address: str | None = None
    node: str | None = None  # hostname of the node its current task is placed on
    task_id: str | None = None
    container_id: str | None = None
    exit_code: int | None = None  # of the last task that ended


def replicas(service: dict[str, Any]) -> int:
    mode = service.get("Spec", {}).get("Mode", {})
    return int((mode.get("Replicated") or {}).get("Replicas", 0))


def task_view(
    service: dict[str, Any] | None,
    tasks: list[dict[str, Any]],
    nodes: dict[str, dict[str, Any]],
    port: int,
) -> TaskView:
    """The instance's state from its service (None: gone), the service's tasks, and the
    swarm's nodes by id; `port` is the app's port inside the task."""
    ended = sorted(
        (t for t in tasks if _state(t) in _ENDED), key=lambda t: str(t.get("CreatedAt", ""))
    )
    exit_code = _exit_code(ended[-1]) if ended else None
    if service is None or replicas(service) == 0:
        return TaskView(ObservedState.EXITED, exit_code=exit_code)
    current = [t for t in tasks if t.get("DesiredState") in _WANTED and _state(t) not in _ENDED]
    if not current:
        return TaskView(ObservedState.EXITED, exit_code=exit_code)
    task = max(current, key=lambda t: str(t.get("CreatedAt", "")))
    node = nodes.get(str(task.get("NodeID") or ""))
    hostname = _hostname(node)
    container = (task.get("Status", {}).get("ContainerStatus") or {}).get("ContainerID")
    pending = TaskView(
        ObservedState.PENDING,
        node=hostname,
        task_id=str(task.get("ID")),
        container_id=container,
        exit_code=exit_code,
    )
    if _state(task) != "running" or node is None or not node_is_up(node):
        return pending
    published = published_port(task, port)
    node_addr = str(node.get("Status", {}).get("Addr") or "")
    if published is None or not node_addr:
        return pending
    return TaskView(
        ObservedState.RUNNING,
        address=f"{node_addr}:{published}",
        node=hostname,
        task_id=str(task.get("ID")),
        container_id=container,
    )


def on_a_down_node(tasks: list[dict[str, Any]], nodes: dict[str, dict[str, Any]]) -> bool:
    """Whether any of the service's tasks sits on a node that is not up (or unknown)."""
    for task in tasks:
        node = nodes.get(str(task.get("NodeID") or ""))
        if task.get("NodeID") and (node is None or not node_is_up(node)):
            return True
    return False


def node_is_up(node: dict[str, Any]) -> bool:
    return bool(node.get("Status", {}).get("State") == "ready")


def published_port(task: dict[str, Any], port: int) -> int | None:
    """The host port the engine chose for the app's `port` (host-mode publish)."""
    for entry in (task.get("Status", {}).get("PortStatus") or {}).get("Ports") or []:
        if int(entry.get("TargetPort", 0)) == port and entry.get("PublishedPort"):
            return int(entry["PublishedPort"])
    return None


def _state(task: dict[str, Any]) -> str:
    return str(task.get("Status", {}).get("State", ""))


def _exit_code(task: dict[str, Any]) -> int | None:
    """The ended task's exit code; the engine leaves a 0 out of its JSON."""
    container = task.get("Status", {}).get("ContainerStatus") or {}
    code = container.get("ExitCode")
    if code is None:
        return 0 if container.get("ContainerID") else None
    return int(code)


def _hostname(node: dict[str, Any] | None) -> str | None:
    if node is None:
        return None
    return str(node.get("Description", {}).get("Hostname") or node.get("ID") or "") or None
