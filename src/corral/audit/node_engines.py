"""Each swarm node's engine as the auditor reaches it: its own clients, with short timeouts.

The driver's clients wait up to a minute per call (a roll-out may load an image); an audit
must instead say "node X does not answer" and move on, never hang on a lost node. Which
engine is which node is asked once per engine (`info().Swarm.NodeID`); an engine that did not
answer is asked again on the next pass, and within a pass an engine that timed out once is
not asked again (its other tasks are reported the same way at once).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from corral.drivers.docker_engine import DEFAULT_HOST, engine_call, sdk
from corral.drivers.swarm_engines import SwarmEngines
from corral.errors import DriverError

TIMEOUT = 5.0  # seconds per engine call


@dataclass(frozen=True)
class NodeEngine:
    """The engine that answers for one node, or why none does (`api` None)."""

    host: str  # its Docker API address, for the report ("" when none is known)
    api: Any = None
    why: str | None = None


class NodeEngines:
    def __init__(self, engines: SwarmEngines, *, timeout: float = TIMEOUT) -> None:
        self.engines = engines
        self.timeout = timeout
        self._clients: dict[str, Any] = {}  # host → APIClient
        self._node_of: dict[str, str] = {}  # swarm node id → host
        self._failed: dict[str, str] = {}  # host → why, this pass

    @property
    def manager_host(self) -> str:
        return self.engines.manager_host or os.environ.get("DOCKER_HOST") or DEFAULT_HOST

    def begin_pass(self) -> None:
        self._failed.clear()

    def of_node(self, node_id: str) -> NodeEngine:
        """The engine of swarm node `node_id`: one of `swarm.node_engines` that says it is
        that node, else the manager's when no `node_engines` are set (a one-host swarm)."""
        hosts = self.engines.node_hosts or [self.manager_host]
        if node_id not in self._node_of:
            for each in hosts:  # all of them: a node that rejoined has a new id
                if each not in self._failed:
                    self._ask_node_id(each)
        host = self._node_of.get(node_id)
        if host is None:
            if self._failed:
                asked = "; ".join(f"{h}: {why}" for h, why in sorted(self._failed.items()))
                return NodeEngine(
                    "", why=f"no engine of swarm.node_engines answers as it ({asked})"
                )
            return NodeEngine(
                "", why="its engine is not listed in swarm.node_engines (add its address)"
            )
        if host in self._failed:
            return NodeEngine(host, why=self._failed[host])
        return NodeEngine(host, api=self._client(host))

    def call(self, engine: NodeEngine, what: str, fn: str, *args: Any) -> Any:
        """`engine.api.<fn>(*args)` as one bounded engine call; a failure other than a missing
        object marks the engine failed for this pass (DriverError)."""
        try:
            self._accepts(engine.host)
            with engine_call(what):
                return getattr(engine.api, fn)(*args)
        except DriverError as exc:
            self.failed(engine.host, exc.message)
            raise

    def failed(self, host: str, why: str) -> None:
        self._failed[host] = why
        client = self._clients.pop(host, None)
        if client is not None:  # its pooled connection may be stuck mid-answer
            client.close()

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def _ask_node_id(self, host: str) -> None:
        try:
            self._accepts(host)
            with engine_call(f"ask the engine at {host} which swarm node it is"):
                info = self._client(host).info()
        except DriverError as exc:
            self.failed(host, exc.message)
            return
        node_id = str((info.get("Swarm") or {}).get("NodeID") or "")
        for stale in [n for n, h in self._node_of.items() if h == host]:
            del self._node_of[stale]
        if node_id:
            self._node_of[node_id] = host

    def _accepts(self, host: str) -> None:
        """A local socket that refuses is said so here: the SDK would leak the socket of its
        failed attempt."""
        if not host.startswith("unix://"):
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            try:
                sock.connect(host.removeprefix("unix://"))
            except OSError as exc:
                raise DriverError(f"its engine's socket refuses ({exc.strerror or exc})") from exc

    def _client(self, host: str) -> Any:
        if host not in self._clients:
            version = self.engines.manager().api_version  # a swarm's engines speak alike
            self._clients[host] = sdk().APIClient(
                base_url=host, version=version, timeout=self.timeout
            )
        return self._clients[host]
