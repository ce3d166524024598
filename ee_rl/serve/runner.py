"""Running the app on uvicorn: in the foreground (``scripts/serve.py``) or on a background thread (tests, embedding)."""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from ee_rl.errors import UserError
from ee_rl.serve.settings import ServeSettings

#: WebSocket messages up to this many times the body limit get a JSON error; larger ones close the connection
#: with code 1009 (message too big) before they are buffered.
WS_SIZE_FACTOR = 2


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 = a free port); a busy port is a :class:`UserError`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family = infos[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def uvicorn_config(app: FastAPI, log_level: str = "warning") -> uvicorn.Config:
    """uvicorn settings for an app made by :func:`ee_rl.serve.app.create_app`: WebSocket size limit from its
    ``max_body_bytes``, no per-message compression."""
    settings: ServeSettings = app.state.settings
    return uvicorn.Config(
        app,
        log_level=log_level,
        ws_max_size=WS_SIZE_FACTOR * settings.max_body_bytes,
        # Answers are small and clients are mostly on loopback: deflate would only cost CPU.
        ws_per_message_deflate=False,
        lifespan="on",
        access_log=False,
    )


def serve_forever(app: FastAPI, sock: socket.socket, log_level: str = "warning") -> None:
    """Run uvicorn on ``sock`` in this (main) thread until Ctrl-C / SIGTERM."""
    uvicorn.Server(uvicorn_config(app, log_level)).run(sockets=[sock])


class ServerThread:
    """A real uvicorn server on a background thread, listening on ``host`` and a free port (context manager).

    ``url`` / ``ws_url`` give its addresses once entered; leaving stops it (and the app's batcher).
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = bind_socket(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        self.server = uvicorn.Server(uvicorn_config(app))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """``ws://host:port/stream``."""
        return f"ws://{self.host}:{self.port}/stream"

    def start(self, timeout: float = 60.0) -> ServerThread:
        """Start and wait until the server accepts requests."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread stopped during startup")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start within {timeout} s")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask uvicorn to exit and wait for it."""
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
