"""Listening sockets of routes: bind one, or adopt one handed over by a previous agent."""

from __future__ import annotations

import errno
import socket

from corral.errors import PortInUseError, UsageError


def bind_listener(service: str, host: str, port: int, backlog: int) -> socket.socket:
    """A non-blocking TCP socket listening on host:port (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # SO_REUSEADDR only lets a restarted router bind over TIME_WAIT leftovers; a port
        # another process listens on still fails with EADDRINUSE
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"port {port} on {host} is already in use: the route of service "
                f"{service!r} cannot listen there",
                hint=f"Stop the process that listens on it (`ss -ltnp 'sport = :{port}'` "
                "names it) or give the service another route port in corral.yaml.",
            ) from exc
        if exc.errno in (errno.EACCES, errno.EADDRNOTAVAIL):
            raise UsageError(
                f"the route of service {service!r} cannot listen on {host}:{port}: {exc.strerror}",
                hint="Use a local address such as 127.0.0.1 and a port above 1023.",
            ) from exc
        raise
    return sock


def adopt_listener(service: str, sock: socket.socket, port: int, backlog: int) -> socket.socket:
    """Check that an inherited socket is a listening TCP socket for `port`, and ready it."""
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        raise UsageError(
            f"the socket given for the route of service {service!r} is not a TCP socket",
            hint="Pass the listening socket the previous agent served the route on.",
        )
    bound = sock.getsockname()[1]
    if port and bound != port:
        raise UsageError(
            f"the socket given for the route of service {service!r} listens on port {bound}, "
            f"not on the route's port {port}",
            hint="Pass the socket of this route, or open the route on its port without one.",
        )
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.listen(backlog)
    sock.setblocking(False)
    return sock
