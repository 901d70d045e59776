"""Serve a model over HTTP with dynamic batching (FastAPI + uvicorn).

:func:`create_app` builds the app for a model (a name from the model registry,
or a manifest ``.yml``); :func:`serve` runs it with uvicorn (``forgeml serve``);
:class:`BackgroundServer` runs one in a thread; :class:`Client` calls one.
Concurrent requests are queued and run through the model together
(:class:`Batcher`: up to ``max_batch_size`` samples, waiting at most
``max_latency_ms``). The model runs in this process through its evaluation
agent, or on an external KServe-v2 endpoint (``backend_url``). Options come
from arguments or ``FORGEML_SERVE_*`` environment variables
(:class:`ServeSettings`).
"""

from forgeml._core._errors import ServeError
from forgeml.serve._app import create_app
from forgeml.serve._batcher import Batcher, QueueFull
from forgeml.serve._client import Client
from forgeml.serve._server import BackgroundServer, serve
from forgeml.serve._settings import ServeSettings

__all__ = [
    "BackgroundServer",
    "Batcher",
    "Client",
    "QueueFull",
    "ServeError",
    "ServeSettings",
    "create_app",
    "serve",
]
