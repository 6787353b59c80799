"""The dashboard's TCP listener: 127.0.0.1 unless the operator explicitly says otherwise."""

from __future__ import annotations

import ipaddress
import logging
import socket

log = logging.getLogger("corral.agent")

DEFAULT_HOST = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_ui(host: str, port: int) -> socket.socket:
    """A listening TCP socket for the API and dashboard.

    SO_REUSEPORT lets the successor of `corral agent restart` bind the same port while this
    agent still serves, so the dashboard never sees the port closed."""
    if not is_loopback(host):
        log.warning(
            "the dashboard and API listen on %s:%d, beyond this machine: anyone who reaches it "
            "can read the fleet (actions still need a token)",
            host,
            port,
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(128)
    sock.set_inheritable(False)
    log.info("dashboard at http://%s:%d/ui", host, sock.getsockname()[1])
    return sock


def advertised_url(host: str, port: int) -> str:
    """The URL other homes and hosts reach this listener at, recorded in the state's agent
    record (`corral logs` elsewhere reads through it). A wildcard bind names no one address
    the Host check would accept, so it advertises nothing: bind a concrete --ui-host."""
    bare = host.strip("[]")
    try:
        if ipaddress.ip_address(bare).is_unspecified:
            return ""
    except ValueError:
        pass  # a name: it is what clients put in Host, and the Guard accepts it
    return f"http://[{bare}]:{port}" if ":" in bare else f"http://{bare}:{port}"
