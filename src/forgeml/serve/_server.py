"""Running the app: :func:`serve` (uvicorn, in the foreground), :class:`BackgroundServer`.

On SIGTERM or SIGINT uvicorn stops accepting connections, lets the requests in
flight finish (the batcher keeps running them), then the app's shutdown drains
whatever is still queued and releases the model; the process exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

from forgeml._core._errors import ServeError
from forgeml._core._net import free_port
from forgeml.serve._settings import SETTINGS_ENV, ServeSettings

log = logging.getLogger("forgeml.serve")


def app_from_env() -> Any:
    """The app of the settings in ``$FORGEML_SERVE_SETTINGS_JSON`` (uvicorn's worker
    processes build theirs with this factory)."""
    from forgeml.serve._app import create_app

    text = os.environ.get(SETTINGS_ENV)
    if not text:
        raise ServeError(f"{SETTINGS_ENV} is not set: start workers with forgeml serve.")
    return create_app(ServeSettings.from_json(text))


def _setup_logging(level: str) -> None:
    logger = logging.getLogger("forgeml.serve")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())


def stack() -> dict[str, str]:
    """The event loop, HTTP parser and JSON library a server uses here: uvicorn picks
    uvloop and httptools, and the routes orjson, when they are installed (each several
    times faster than the fallback on the request path)."""
    import importlib.util

    def have(name: str) -> bool:
        return importlib.util.find_spec(name) is not None

    return {
        "loop": "uvloop" if have("uvloop") else "asyncio",
        "http": "httptools" if have("httptools") else "h11",
        "json": "orjson" if have("orjson") else "json",
    }


def _log_stack() -> None:
    used = stack()
    slow = [name for name in ("uvloop", "httptools", "orjson") if name not in used.values()]
    hint = f" (pip install {' '.join(slow)} to serve faster)" if slow else ""
    log.info("Event loop %s, HTTP %s, JSON %s%s", used["loop"], used["http"], used["json"], hint)


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, exiting 0 after a graceful SIGTERM/SIGINT shutdown (uvicorn
        re-raises the signal once it is done, which makes the exit status -15)."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            signals = (signal.SIGINT, signal.SIGTERM)
            originals = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
            try:
                yield
            finally:
                for sig, handler in originals.items():
                    signal.signal(sig, handler)

    return Server


def serve(model: str | ServeSettings, **options: Any) -> None:
    """Serve ``model`` (a name or a manifest path) until SIGTERM/SIGINT; see ``forgeml serve``.

    ``options`` are :class:`ServeSettings` fields; those not given come from
    ``FORGEML_SERVE_*`` environment variables, else the defaults. With
    ``workers > 1`` uvicorn starts that many processes, each loading the model.
    """
    import uvicorn

    from forgeml.serve._app import create_app

    settings = (
        model if isinstance(model, ServeSettings) else ServeSettings.resolve(model, **options)
    )
    _setup_logging(settings.log_level)
    _log_stack()
    common: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "access_log": False,
        "timeout_keep_alive": 30,
    }
    if settings.workers == 1:
        app = create_app(settings)  # errors in the manifest surface here, before binding
        _server_class()(uvicorn.Config(app, **common)).run()
        return
    from forgeml.serve._app import ServerState

    ServerState(settings)  # check the model and agent once, in the parent
    os.environ[SETTINGS_ENV] = settings.to_json()
    uvicorn.run(
        "forgeml.serve._server:app_from_env", factory=True, workers=settings.workers, **common
    )


class BackgroundServer:
    """A server in a thread of this process (tests, notebooks, docs)::

        with BackgroundServer("digits_logreg") as server:
            Client(server.url).predict(...)

    ``port=None`` picks a free port. Entering waits until the model is ready
    (``ready_timeout`` seconds); leaving shuts down gracefully (queued requests
    are answered).
    """

    def __init__(
        self,
        model: str | ServeSettings,
        *,
        ready_timeout: float = 120.0,
        **options: Any,
    ) -> None:
        import uvicorn

        from forgeml.serve._app import create_app

        if not isinstance(model, ServeSettings) and options.get("port") is None:
            options["port"] = free_port(options.get("host") or "127.0.0.1")
        self.settings = (
            model if isinstance(model, ServeSettings) else ServeSettings.resolve(model, **options)
        )
        self.ready_timeout = ready_timeout
        self.app = create_app(self.settings)
        config = uvicorn.Config(
            self.app,
            host=self.settings.host,
            port=self.settings.port,
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def start(self) -> BackgroundServer:
        self._thread = threading.Thread(target=self.server.run, name="forgeml-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self.ready_timeout
        state = self.app.state.forgeml
        while not state.ready:
            if state.error:
                self.stop()
                raise ServeError(f"The model did not load: {state.error}")
            if time.monotonic() > deadline or not self._thread.is_alive():
                self.stop()
                raise ServeError(
                    f"The server at {self.url} was not ready within {self.ready_timeout:g} s."
                )
            time.sleep(0.02)
        while not self.server.started:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
