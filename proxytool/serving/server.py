"""Run the app with uvicorn: in the foreground (the CLI) or in a background thread (tests, benchmarks)."""

import socket
import threading
import time

from proxytool.decoding.roles import ProxyModels
from proxytool.serving.app import ServerConfig, create_app


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _server(models: ProxyModels, config: ServerConfig, host: str, port: int, log_level: str):
    import uvicorn

    app = create_app(models, config)
    uv_config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    return uvicorn.Server(uv_config)


def serve(models: ProxyModels, config: ServerConfig, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted (Ctrl-C)."""
    _server(models, config, host, port, "info").run()


class BackgroundServer:
    """A server on 127.0.0.1 and a free port, in a thread; ``with`` it to start and always stop it."""

    def __init__(self, models: ProxyModels, config: ServerConfig = ServerConfig(), port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = _server(models, config, "127.0.0.1", self.port, "warning")
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
        self.thread.join(timeout=15)
