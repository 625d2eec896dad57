"""Run the app with uvicorn: in the foreground (the CLI) or in a background thread (tests, benchmarks)."""

import asyncio
import socket
import threading
import time

import uvicorn

from proxytool.decoding.roles import ProxyModels
from proxytool.errors import ProxyToolError
from proxytool.serving.app import ServerConfig, create_app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


DEFAULT_GRACE = 10.0
"""Seconds a stopping server (SIGTERM, Ctrl-C) lets open requests finish (``--shutdown-grace``)."""


def check_bindable(host: str, port: int) -> None:
    """Raise one line now if ``host:port`` cannot be bound (in use, or not an address of this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((host, port))
        except OSError as err:
            raise ProxyToolError(
                f"cannot listen on {host}:{port}: {err.strerror or err}; choose another --port"
            ) from None


class _Server(uvicorn.Server):
    """uvicorn's server, whose shutdown ends the requests still open after the grace period in a clean
    way: an error event on each stream, a JSON 503 for each non-streaming request (never a bare close)."""

    def __init__(self, config: uvicorn.Config, grace: float):
        super().__init__(config)
        self.grace = grace

    async def shutdown(self, sockets=None) -> None:
        scheduler = self.config.app.state.scheduler
        message = f"the server is shutting down (open requests had {self.grace:g} s to finish)"
        asyncio.get_running_loop().call_later(self.grace, scheduler.abort, message)
        await super().shutdown(sockets)


def _server(models: ProxyModels, config: ServerConfig, host: str, port: int, log_level: str, grace: float):
    app = create_app(models, config)
    # uvicorn cancels what is still open after timeout_graceful_shutdown: 2 s after the 503s are sent
    uv_config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=grace + 2)
    return _Server(uv_config, grace)


def serve(
    models: ProxyModels, config: ServerConfig, host: str = "127.0.0.1", port: int = 8000, grace: float = DEFAULT_GRACE
) -> None:
    """Serve until interrupted (Ctrl-C, SIGTERM), letting open requests finish for ``grace`` seconds."""
    _server(models, config, host, port, "info", grace).run()


class BackgroundServer:
    """A server on 127.0.0.1 and a free port, in a thread; ``with`` it to start and always stop it."""

    def __init__(
        self, models: ProxyModels, config: ServerConfig = ServerConfig(), port: int | None = None, grace: float = 5.0
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = _server(models, config, "127.0.0.1", self.port, "warning", grace)
        self.thread = threading.Thread(target=self.server.run, name="proxytool-server", daemon=True)

    @property
    def scheduler(self):
        return self.server.config.app.state.scheduler

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=self.server.grace + 15)
