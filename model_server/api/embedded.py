"""Run the server with uvicorn: in the foreground (``loopcoder serve``) or on a background thread.

The background form is how a process embeds the server (the agent still talks to it over HTTP, as
architecture.md requires) and how the tests run a real server on loopback.
"""
from __future__ import annotations

import socket
import threading
import time
from typing import Optional


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free port); OSError if it cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_server(app, log_level: str):
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5, access_log=False)
    return uvicorn.Server(config)


def serve_forever(app, sock: socket.socket, log_level: str = "info") -> None:
    """Serve ``app`` on an already bound socket until interrupted (Ctrl-C, SIGTERM)."""
    _uvicorn_server(app, log_level).run(sockets=[sock])


class ServerThread:
    """uvicorn serving ``app`` on a background thread; ``url`` is e.g. http://127.0.0.1:41234."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self.sock = bind_socket(host, port)
        bound_host, bound_port = self.sock.getsockname()[:2]
        self.url = f"http://{bound_host if ':' not in bound_host else f'[{bound_host}]'}:{bound_port}"
        self.server = _uvicorn_server(app, log_level)
        self.thread: Optional[threading.Thread] = None
        self.error: Optional[BaseException] = None

    def _run(self) -> None:
        try:
            self.server.run(sockets=[self.sock])
        except BaseException as exc:  # SystemExit when the app's startup (engine start) fails
            self.error = exc

    def start(self, timeout: float = 120.0, wait_ready: bool = True) -> "ServerThread":
        """Start serving; returns once the app accepts requests (raises if its startup failed) and, with
        ``wait_ready``, once the engine's warm-up is done (what /health reports as ready)."""
        self.thread = threading.Thread(target=self._run, name="loopcoder-api", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        serving = getattr(getattr(self.server.config.app, "state", None), "serving", None)

        def up() -> bool:
            if not self.server.started:
                return False
            return not wait_ready or serving is None or getattr(serving.engine, "ready", True) or \
                bool(getattr(getattr(serving.engine, "engine", None), "warmup_error", None))

        while not up():
            if not self.thread.is_alive():
                raise RuntimeError(f"the server did not start: {self.error!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the server did not start within {timeout:.0f} s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Ask uvicorn to exit (it finishes or cancels open requests, then shuts the engine down)."""
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
