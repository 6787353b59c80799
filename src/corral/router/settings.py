"""Timeouts and limits of the embedded router (one set per router; hold_timeout per route)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProxySettings:
    # a backend that does not accept a connection within this is ejected (as if it refused)
    connect_timeout: float = 1.0
    # no byte from the backend (nor from the client, while it uploads) for this long → 504
    backend_timeout: float = 30.0
    # no routable backend: a request waits this long for one to appear, then gets 503
    hold_timeout: float = 3.0
    # an idempotent request whose backend failed before answering is tried on this many others
    retries: int = 1
    # idle keep-alive connections kept per backend, and for how long; shorter than the
    # keep-alive timeout of common servers (uvicorn and Node 5 s, nginx 75 s), so the router,
    # not the backend, closes an idle connection and a request never races the backend's close
    max_idle_per_backend: int = 64
    pool_idle_timeout: float = 2.0
    # a client connection with no request for this long is closed
    client_idle_timeout: float = 60.0
    # a client that started a request head and sent nothing more for this long is cut off
    header_timeout: float = 10.0
    backlog: int = 1024

    def __post_init__(self) -> None:
        for name in (
            "connect_timeout",
            "backend_timeout",
            "hold_timeout",
            "pool_idle_timeout",
            "client_idle_timeout",
            "header_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"ProxySettings.{name} must be > 0, got {getattr(self, name)}")
        if self.retries < 0 or self.max_idle_per_backend < 0:
            raise ValueError("ProxySettings.retries and max_idle_per_backend must be >= 0")
