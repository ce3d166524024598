"""Binding the listening socket: a free port on request, a clear error for a busy one or an unknown host."""

from __future__ import annotations

import pytest

from ee_rl.errors import UserError
from ee_rl.serve.runner import bind_socket


def test_port_zero_gets_a_free_port_and_a_busy_port_is_a_user_error() -> None:
    sock = bind_socket("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        assert port > 0
        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind_socket("127.0.0.1", port)
    finally:
        sock.close()


def test_unknown_host_is_a_user_error() -> None:
    with pytest.raises(UserError, match="cannot"):
        bind_socket("no-such-host.invalid", 0)
