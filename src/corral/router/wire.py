"""HTTP/1.1 text the proxy writes: hop-by-hop header rules, response heads, router errors.

Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, not the message, so a proxy
must not pass them on: `Connection` and the headers it names, `Keep-Alive`, `Proxy-Connection`,
`TE`, `Trailer`, `Upgrade`. `Transfer-Encoding` is hop-by-hop too, but the proxy re-frames
chunked request bodies itself and passes chunked response bodies through unchanged, so the
header stays true on both legs and is kept.
"""

from __future__ import annotations

import re

# Request headers the proxy drops; keyed by length first so most names skip `.lower()`.
REQUEST_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
)
# Lengths of every request header name the proxy looks at (hop-by-hop + the ones it reads).
SPECIAL_REQUEST_LENGTHS = frozenset(
    len(name)
    for name in (*REQUEST_HOP_BY_HOP, b"x-forwarded-for", b"transfer-encoding", b"content-length")
)

# The start of a hop-by-hop header line in a response head (from the CRLF before it).
_RESPONSE_HOP = re.compile(
    rb"\r\n(?:connection|keep-alive|proxy-connection|upgrade|proxy-authenticate)[ \t]*:",
    re.IGNORECASE,
)
_FRAMED = re.compile(rb"\r\n(?:content-length|transfer-encoding)[ \t]*:", re.IGNORECASE)
_CONNECTION_OPTIONS = frozenset({b"", b"close", b"keep-alive", b"upgrade"})

NO_BODY_STATUSES = frozenset({204, 304})
MAX_HEAD = 64 * 1024  # a response head larger than this is refused as malformed


def connection_names(value: bytes) -> list[bytes]:
    """Header names listed in a `Connection` value (besides close/keep-alive/upgrade)."""
    names = (token.strip().lower() for token in value.split(b","))
    return [name for name in names if name not in _CONNECTION_OPTIONS]


def drop_headers(head: bytes, names: list[bytes]) -> bytes:
    pattern = b"|".join(re.escape(name) for name in names)
    return re.sub(rb"\r\n(?:" + pattern + rb")[ \t]*:[^\r\n]*", b"", head, flags=re.IGNORECASE)


def response_status(head: bytes) -> int:
    """The status of a response head (`HTTP/1.1 200 OK...`); 0 if it is not one."""
    code = head[9:12]
    return int(code) if len(code) == 3 and code.isdigit() and head[:5] == b"HTTP/" else 0


def is_framed(head: bytes) -> bool:
    """The response says where its body ends (Content-Length or Transfer-Encoding)."""
    return _FRAMED.search(head) is not None


def rewrite_response_head(head: bytes, *, close: bool, client_http10: bool) -> bytes:
    """The backend's response head as the client must see it.

    `head` ends with the blank line. Hop-by-hop headers are dropped and the proxy states its
    own connection decision: `close` → `Connection: close`; an HTTP/1.0 client kept alive is
    told so explicitly (1.0 closes by default).
    """
    match = _RESPONSE_HOP.search(head)
    if match is not None:
        kept: list[bytes] = []
        named: list[bytes] = []
        pos = 0
        while match is not None:
            start, value_at = match.span()
            end = head.find(b"\r\n", value_at)
            if head[start + 2] | 0x20 == 0x63:  # "c"/"C": the Connection header itself
                value = head[value_at:end].strip().lower()
                if value not in _CONNECTION_OPTIONS:
                    named += connection_names(value)  # rare: it names more headers to drop
            kept.append(head[pos:start])
            pos = end
            match = _RESPONSE_HOP.search(head, end)
        kept.append(head[pos:])
        head = b"".join(kept)
        if named:
            head = drop_headers(head, named)
    if not client_http10 and head[5:8] == b"1.0":
        # an HTTP/1.0 backend: the proxy speaks 1.1 to the client and frames for it
        head = b"HTTP/1.1" + head[8:]
    if close:
        return head[:-2] + b"Connection: close\r\n\r\n"
    if client_http10:
        return head[:-2] + b"Connection: keep-alive\r\n\r\n"
    return head


def chunk(data: bytes) -> bytes:
    """`data` as one chunk of a chunked body."""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"

_REASONS = {
    400: (b"Bad Request", b"malformed HTTP request"),
    502: (b"Bad Gateway", b"the backend failed before answering"),
    503: (b"Service Unavailable", b"no ready backend for this route"),
    504: (b"Gateway Timeout", b"the backend did not answer in time"),
}
_ERRORS: dict[tuple[int, bool, bool], bytes] = {}


def error_response(status: int, *, close: bool, head_only: bool) -> bytes:
    """A short text/plain response made by the router itself (built once, then cached)."""
    key = (status, close, head_only)
    cached = _ERRORS.get(key)
    if cached is None:
        reason, text = _REASONS[status]
        body = b"%d %s: %s\n" % (status, reason, text)
        cached = b"".join(
            (
                b"HTTP/1.1 %d %s\r\n" % (status, reason),
                b"Content-Type: text/plain; charset=utf-8\r\n",
                b"Content-Length: %d\r\n" % len(body),
                b"Connection: close\r\n" if close else b"",
                b"\r\n",
                b"" if head_only else body,
            )
        )
        _ERRORS[key] = cached
    return cached
