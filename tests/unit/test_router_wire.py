"""The HTTP/1.1 text rules of the router: what a response head looks like to the client."""

from __future__ import annotations

import pytest

from corral.router.wire import chunk, error_response, response_status, rewrite_response_head

NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\n"
    b"Connection: keep-alive\r\nETag: x\r\n\r\n"
)


def test_hop_by_hop_headers_leave_and_the_rest_stays_in_order() -> None:
    assert rewrite_response_head(NGINX, close=False, client_http10=False) == (
        b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 3\r\nETag: x\r\n\r\n"
    )
    head = (
        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nX-Private: 1\r\nX-Public: 2\r\n"
        b"CONNECTION : keep-alive, X-Private\r\nUpgrade: h2c\r\n\r\n"
    )
    assert rewrite_response_head(head, close=False, client_http10=False) == (
        b"HTTP/1.1 200 OK\r\nX-Public: 2\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("close", "client_http10", "expected_tail"),
    [
        (True, False, b"ETag: x\r\nConnection: close\r\n\r\n"),
        (False, True, b"ETag: x\r\nConnection: keep-alive\r\n\r\n"),
        (True, True, b"ETag: x\r\nConnection: close\r\n\r\n"),
    ],
)
def test_the_router_states_its_own_connection_decision(
    close: bool, client_http10: bool, expected_tail: bytes
) -> None:
    assert rewrite_response_head(NGINX, close=close, client_http10=client_http10).endswith(
        expected_tail
    )


def test_an_http10_backend_is_answered_as_http11_to_an_http11_client() -> None:
    head = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert rewrite_response_head(head, close=False, client_http10=False).startswith(b"HTTP/1.1 ")
    assert rewrite_response_head(head, close=False, client_http10=True).startswith(b"HTTP/1.0 ")


def test_small_pieces() -> None:
    assert response_status(NGINX) == 200
    assert response_status(b"garbage\r\n\r\n") == 0
    assert chunk(b"hello") == b"5\r\nhello\r\n"
    made = error_response(503, close=True, head_only=False)
    assert made.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Connection: close\r\n" in made and made.endswith(b"no ready backend for this route\n")
    assert error_response(503, close=False, head_only=True).endswith(b"\r\n\r\n")
