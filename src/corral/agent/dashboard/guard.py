"""What stands between the TCP listener and the API: Host, Origin and token checks.

Requests over the unix socket pass untouched (its file mode is the access control). Over TCP:
- the Host header must name the listener (127.0.0.1:PORT, localhost:PORT, or the explicit
  `--ui-host`), otherwise 421: a page on another site that rebinds its DNS name to 127.0.0.1
  still sends its own name as Host (DNS rebinding);
- reads (GET, HEAD) are open, except the instances' logs when the listener is beyond this
  machine (a non-loopback `--ui-host`): apps' output may hold what only operators should
  read, so those need a token as actions do;
- anything else is an action: it needs `Authorization: Bearer <token>` of a named token
  (401 otherwise) and, when the browser sends an Origin, it must be the listener's own (403).
  A bearer header (never a cookie) cannot be attached by a cross-site form, and a cross-site
  script cannot set it without a CORS pre-flight this API never grants.
The token's name is put in the request state as `actor`, for the events the action records.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from corral.agent.dashboard.listen import is_loopback
from corral.agent.tokens import TokenStore

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

READ_METHODS = frozenset({"GET", "HEAD"})
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


def over_tcp(scope: Scope) -> bool:
    """uvicorn gives a unix-socket request `server=(path, None)`, a TCP one `(host, port)`."""
    server = scope.get("server")
    return isinstance(server, tuple | list) and len(server) == 2 and isinstance(server[1], int)


def allowed_hosts(port: int, extra_host: str | None = None) -> set[str]:
    names = [*LOOPBACK_NAMES, *([extra_host] if extra_host else [])]
    hosts = {f"{name}:{port}" for name in names}
    if port == 80:  # browsers drop the default port from Host and Origin
        hosts.update(names)
    return hosts


class Guard:
    def __init__(self, app: ASGIApp, tokens: TokenStore, *, ui_host: str | None = None) -> None:
        self.app = app
        self.tokens = tokens
        self.ui_host = ui_host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not over_tcp(scope):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        hosts = allowed_hosts(int(scope["server"][1]), self.ui_host)
        host = headers.get("host", "")
        if host.lower() not in hosts:
            await _refuse(
                send, 421, "ForeignHost", f"this agent does not answer for host {host!r}",
                "Open the dashboard as http://127.0.0.1:PORT/ (or localhost:PORT).",
            )  # fmt: skip
            return
        if scope["method"] in READ_METHODS and not self._guarded_read(scope["path"]):
            await self.app(scope, receive, send)
            return
        origin = headers.get("origin")
        if scope["method"] not in READ_METHODS and (
            origin is not None and origin.lower() not in {f"http://{h}" for h in hosts}
        ):
            await _refuse(
                send, 403, "ForeignOrigin", f"actions from origin {origin!r} are refused",
                "Act from the agent's own dashboard page, or from a script (no Origin header).",
            )  # fmt: skip
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        name = self.tokens.verify(token.strip()) if scheme.lower() == "bearer" else None
        if name is None:
            await _refuse(
                send, 401, "Unauthorized", f"{scope['method']} {scope['path']} needs a valid token",
                "Create one with `corral ui token create NAME` and send it as "
                "`Authorization: Bearer <token>`.",
                extra=[(b"www-authenticate", b"Bearer")],
            )  # fmt: skip
            return
        scope.setdefault("state", {})["actor"] = f"token:{name}"
        await self.app(scope, receive, send)

    def _guarded_read(self, path: str) -> bool:
        """A read that needs a token: logs, on a listener beyond loopback."""
        beyond = self.ui_host is not None and not is_loopback(self.ui_host)
        return beyond and _LOG_PATH.match(path) is not None


_LOG_PATH = re.compile(r"^/v1/(logs/[^/]+|services/[^/]+/logs)/?$")


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


async def _refuse(
    send: Send,
    status: int,
    error: str,
    message: str,
    hint: str,
    *,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    # the agent's error shape, so the CLI's and scripts' error handling applies unchanged
    body = json.dumps({"error": error, "message": message, "hint": hint, "exit_code": 2}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
