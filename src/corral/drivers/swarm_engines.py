"""The engines of a swarm as the `swarm` driver reaches them: the manager (services, tasks,
nodes, secrets, logs) and every node's own engine (images are loaded into each; a task's
container is reached through its node's engine for exec and stop).

Settings (`swarm:` in the spec): `manager` (default DOCKER_HOST, else the local socket) and
`node_engines` (default: the manager's engine only). Connections are made on first use, so
building a driver needs no engine.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from corral.drivers.docker_engine import connect, engine_call
from corral.errors import DriverError, UsageError


class SwarmEngines:
    def __init__(self, settings: dict[str, Any]) -> None:
        unknown = set(settings) - {"manager", "node_engines"}
        if unknown:
            raise UsageError(
                f"unknown swarm settings: {', '.join(sorted(unknown))}",
                hint="The swarm driver takes `manager` and `node_engines`.",
            )
        self.manager_host: str | None = settings.get("manager") or None
        self.node_hosts: list[str] = list(settings.get("node_engines") or [])
        self._lock = threading.Lock()
        self._manager: Any = None
        self._nodes: dict[str, Any] = {}  # host → client
        self._node_ids: dict[str, str] = {}  # swarm node id → host

    def manager(self) -> Any:
        """The manager's low-level API client."""
        with self._lock:
            if self._manager is None:
                self._manager = connect(self.manager_host)
            return self._manager.api

    def node_apis(self) -> list[Any]:
        """The API client of every node engine images must reach (the manager's by default)."""
        if not self.node_hosts:
            return [self.manager()]
        return [self._node(host) for host in self.node_hosts]

    def each_node(self) -> list[tuple[str, Callable[[], Any]]]:
        """(address, connect) of every node engine images must reach, connected only when
        called, so one engine that does not answer does not stop the others."""
        if not self.node_hosts:
            return [(self.manager_host or "the manager", self.manager)]
        return [(host, functools.partial(self._node, host)) for host in self.node_hosts]

    def api_of_node(self, node_id: str) -> Any | None:
        """The engine of swarm node `node_id`, when it is one of `node_engines` (or the
        manager itself); None when corral cannot reach that node's engine."""
        if node_id not in self._node_ids:
            self._map_nodes()
        host = self._node_ids.get(node_id)
        if host is None:
            return None
        return self.manager() if host == "" else self._node(host)

    def close(self) -> None:
        with self._lock:
            clients = [self._manager, *self._nodes.values()]
            self._manager = None
            self._nodes.clear()
        for client in clients:
            if client is not None:
                client.close()

    def _node(self, host: str) -> Any:
        if host == self.manager_host:
            return self.manager()
        with self._lock:
            if host not in self._nodes:
                self._nodes[host] = connect(host)
            return self._nodes[host].api

    def _map_nodes(self) -> None:
        """Ask every known engine not yet mapped which swarm node it is ("" stands for the
        manager). A node engine that does not answer is skipped: its node is lost or cut, and
        the instances on the other nodes must stay reachable; the manager must answer."""
        mapped = set(self._node_ids.values())
        for host in ["", *self.node_hosts]:
            if host in mapped:
                continue
            try:
                api = self.manager() if host == "" else self._node(host)
                with engine_call(f"ask the engine at {host or 'the manager'} which node it is"):
                    node_id = str((api.info().get("Swarm") or {}).get("NodeID") or "")
            except DriverError:
                if host == "":
                    raise
                continue
            if node_id:
                self._node_ids.setdefault(node_id, host)
