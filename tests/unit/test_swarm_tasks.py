"""The swarm driver's reading of a service's tasks and nodes (pure: data in, state out)."""

from __future__ import annotations

from typing import Any

from corral.drivers.protocol import ObservedState
from corral.drivers.swarm import service_name
from corral.drivers.swarm_tasks import task_view
from tests.conformance.driver_fixtures import _spec

NODES = {
    "n1": {
        "ID": "n1",
        "Status": {"State": "ready", "Addr": "10.0.0.1"},
        "Description": {"Hostname": "node1"},
    },
    "n2": {
        "ID": "n2",
        "Status": {"State": "down", "Addr": "10.0.0.2"},
        "Description": {"Hostname": "node2"},
    },
}
SERVICE = {"ID": "s1", "Spec": {"Mode": {"Replicated": {"Replicas": 1}}}}


def task(
    tid: str,
    node: str,
    state: str,
    desired: str = "running",
    *,
    created: str = "1",
    code: int | None = None,
    port: int | None = 30001,
) -> dict[str, Any]:
    status: dict[str, Any] = {"State": state, "ContainerStatus": {"ContainerID": f"c-{tid}"}}
    if code is not None:
        status["ContainerStatus"]["ExitCode"] = code
    if port is not None:
        status["PortStatus"] = {"Ports": [{"TargetPort": 8080, "PublishedPort": port}]}
    return {
        "ID": tid,
        "NodeID": node,
        "DesiredState": desired,
        "CreatedAt": created,
        "Status": status,
    }


def test_a_running_task_on_an_up_node_is_running_at_the_nodes_address() -> None:
    view = task_view(SERVICE, [task("t1", "n1", "running")], NODES, 8080)
    assert (view.state, view.address, view.node) == (
        ObservedState.RUNNING,
        "10.0.0.1:30001",
        "node1",
    )


def test_a_crashed_task_being_restarted_is_pending_with_its_exit_code() -> None:
    tasks = [
        task("t1", "n1", "failed", "shutdown", created="1", code=137),
        task("t2", "n1", "ready", "ready", created="2", port=None),
    ]
    view = task_view(SERVICE, tasks, NODES, 8080)
    assert (view.state, view.address, view.exit_code) == (ObservedState.PENDING, None, 137)


def test_a_task_on_a_node_that_is_down_is_pending() -> None:
    view = task_view(SERVICE, [task("t1", "n2", "running")], NODES, 8080)
    assert view.state is ObservedState.PENDING and view.address is None


def test_a_task_without_its_published_port_yet_is_pending() -> None:
    view = task_view(SERVICE, [task("t1", "n1", "running", port=None)], NODES, 8080)
    assert view.state is ObservedState.PENDING


def test_a_task_that_ended_on_its_own_and_is_not_restarted_is_exited() -> None:
    view = task_view(SERVICE, [task("t1", "n1", "complete", "shutdown")], NODES, 8080)
    assert (view.state, view.exit_code) == (ObservedState.EXITED, 0)  # the engine omits a 0


def test_a_service_scaled_to_zero_or_gone_is_exited_with_the_last_exit_code() -> None:
    stopped = {"ID": "s1", "Spec": {"Mode": {"Replicated": {"Replicas": 0}}}}
    tasks = [
        task("t1", "n1", "failed", "shutdown", created="1", code=137),
        task("t2", "n1", "shutdown", "shutdown", created="2", code=143),
    ]
    assert task_view(stopped, tasks, NODES, 8080).exit_code == 143
    assert task_view(None, [], NODES, 8080).state is ObservedState.EXITED


def test_service_names_are_dns_labels_unique_per_instance() -> None:
    short = service_name(_spec("web-1"))
    assert short == "corral-proj-test-web-web-1"
    long = service_name(_spec("web-1", service="a" * 60))
    other = service_name(_spec("web-2", service="a" * 60))
    assert len(long) <= 63 and len(other) <= 63 and long != other
