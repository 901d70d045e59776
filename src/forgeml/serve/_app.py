"""The FastAPI application: routes, request decoding, metrics, readiness and shutdown.

Routes (``{name}``: the served model's name)::

    POST /v1/models/{name}:predict   {"instances": [...]}  -> {"predictions": [...]}
                                     also .npy / safetensors bodies, multipart images
    POST /v2/models/{name}/infer     KServe v2 inference request -> outputs
    GET  /v1/models, /v1/models/{name}, /v2, /v2/models/{name}, /v2/models/{name}/ready
    GET  /healthz  /readyz  /v2/health/live  /v2/health/ready  /metrics  /docs  /openapi.json

Errors are JSON: ``{"error": "...", "expected": {...}}`` with a 4xx status for
bad input (400 unreadable, 404 unknown model, 413 too large, 415 unknown body
type, 422 wrong shape, type or values, 429 queue full); 502 when an external
backend fails, 503 while the model loads or the server shuts down. A failure of
the server or the model is a 500 with a fixed message and a ``request_id`` that
the server's log names with the details; the connection stays open.
"""

# No ``from __future__ import annotations``: FastAPI reads the routes' annotations
# (``request: Request``, imported lazily inside create_app) when they are defined.

import asyncio
import contextlib
import functools
import io
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import numpy as np

from forgeml._core._errors import ServeError
from forgeml.serve._batcher import Batcher, QueueFull, ShuttingDown
from forgeml.serve._model import (
    NUMPY_DTYPES,
    BackendError,
    EmbeddedBackend,
    ExternalBackend,
    InputError,
    ServedModel,
)
from forgeml.serve._settings import ServeSettings

log = logging.getLogger("forgeml.serve")

NPY_TYPES = ("application/x-npy", "application/npy")
SAFETENSORS_TYPES = ("application/x-safetensors", "application/safetensors")
BINARY_TYPES = (*NPY_TYPES, *SAFETENSORS_TYPES, "application/octet-stream")
NPY_MAGIC = b"\x93NUMPY"
#: Bodies read as JSON (curl -d sends form-urlencoded unless told otherwise).
JSON_TYPES = (
    "",
    "application/json",
    "text/json",
    "text/plain",
    "application/x-www-form-urlencoded",
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (one per app)."""

    def __init__(self, batcher_depth: Callable[[], int]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "forgeml_serve_requests",
            "HTTP requests by route and status code.",
            ["route", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "forgeml_serve_request_seconds",
            "Request latency in seconds, by route.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "forgeml_serve_batch_size",
            "Samples per model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.batch_requests = Histogram(
            "forgeml_serve_batch_requests",
            "Requests (or request chunks) per model call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "forgeml_serve_batch_seconds",
            "Seconds per model call.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1),
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "forgeml_serve_queue_depth",
            "Requests waiting for the model.",
            registry=self.registry,
        )
        self.queue_depth.set_function(lambda: float(batcher_depth()))
        self.ready = Gauge(
            "forgeml_serve_model_ready", "1 when the model is loaded.", registry=self.registry
        )
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, route: str, code: int, seconds: float) -> None:
        """Count a request and its latency (the labelled children are looked up once)."""
        key = (route, code)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(route, str(code)), self.latency.labels(route))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def on_batch(self, samples: int, requests: int, seconds: float) -> None:
        self.batch_size.observe(samples)
        self.batch_requests.observe(requests)
        self.batch_seconds.observe(seconds)

    def text(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def route_of(path: str) -> str:
    """A route label of bounded cardinality for a request path."""
    if path.startswith("/v1/models/") and path.endswith(":predict"):
        return "v1_predict"
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        return "v2_infer"
    if path in ("/healthz", "/readyz", "/metrics", "/v1/models", "/openapi.json", "/docs"):
        return path.strip("/").replace("/", "_") or "root"
    return "other"


class ServerState:
    """What the routes share: settings, the model, its backend, the batcher and metrics."""

    def __init__(self, settings: ServeSettings) -> None:
        from forgeml._core._errors import EvalError
        from forgeml.eval._runner import resolve_agent, resolve_manifest, resolve_task

        self.settings = settings

        try:
            framework = settings.framework
            if framework is None and settings.agent is not None:
                framework = resolve_agent(settings.agent).framework
            manifest = resolve_manifest(settings.model, framework)
            agent_name = settings.agent or manifest.framework
            task = resolve_task(manifest.task)
            self.model = ServedModel(manifest, task, agent_name)
        except EvalError as exc:
            raise ServeError(f"Cannot serve {settings.model!r}: {exc}") from None
        self.backend: EmbeddedBackend | ExternalBackend
        if settings.external:
            assert settings.backend_url is not None
            self.backend = ExternalBackend(
                manifest,
                settings.backend_url,
                model=settings.backend_model,
                timeout=settings.backend_timeout,
                start_timeout=settings.backend_start_timeout,
            )
        else:
            try:
                agent = resolve_agent(agent_name)
                reason = agent.unavailable()
            except EvalError as exc:
                raise ServeError(f"Cannot serve {settings.model!r}: {exc}") from None
            if reason is not None:
                raise ServeError(f"Cannot serve {settings.model!r}: {reason}")
            self.backend = EmbeddedBackend(
                manifest, agent_name, device=settings.device, threads=settings.threads
            )
        self.batcher = Batcher(
            self.backend.predict,
            max_batch_size=settings.effective_batch_size,
            max_latency_ms=settings.max_latency_ms if settings.batching else 0.0,
            max_queue=settings.max_queue,
        )
        self.metrics = Metrics(lambda: self.batcher.depth)
        self.batcher.on_batch = self.metrics.on_batch
        self.ready = False
        self.error: str | None = None
        self.limit = int(settings.max_request_mb * 1024 * 1024)
        self._loading: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.batcher.start()
        self._loading = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        start = time.perf_counter()
        try:
            await self.backend.start()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("Loading model %s failed: %s", self.model.name, self.error)
            return
        self.ready = True
        self.metrics.ready.set(1)
        log.info(
            "Model %s (%s, backend %s) ready in %.1f s",
            self.model.name,
            self.model.agent,
            self.backend.where,
            time.perf_counter() - start,
        )

    async def stop(self) -> None:
        """Drain the queue (every queued request is answered), then release the model."""
        depth = self.batcher.depth
        if depth:
            log.info("Shutting down: answering the %d queued request(s) first", depth)
        await self.batcher.close()
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loading
        await self.backend.close()

    def check(self, name: str) -> None:
        if name != self.model.name:
            raise InputError(
                404,
                f"Unknown model '{name}'. This server serves: {self.model.name}.",
            )
        if not self.ready:
            why = f"failed to load ({self.error})" if self.error else "is still loading"
            raise InputError(503, f"Model '{name}' {why}; see GET /readyz.")

    async def run(self, x: np.ndarray) -> np.ndarray:
        """The model's outputs for the prepared samples ``x``, through the batcher."""
        try:
            return await self.batcher.submit(x)
        except QueueFull as exc:
            raise InputError(429, str(exc)) from None
        except ShuttingDown as exc:
            raise InputError(503, str(exc)) from None
        except BackendError as exc:
            raise InputError(502, str(exc)) from None
        except InputError:
            raise
        except Exception as exc:  # the model failed on this request (alone)
            raise internal_error(exc, "The model failed on a request") from None

    async def predict_v1(self, samples: Any, wants_npy: bool) -> tuple[bytes, str]:
        """A v1 answer for decoded samples: ``(body, media type)``."""
        outputs = await self.run(self.model.prepare(samples))
        if wants_npy:
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(outputs), allow_pickle=False)
            return buffer.getvalue(), NPY_TYPES[0]
        return dumps({"predictions": self.model.v1_predictions(outputs)}), "application/json"

    async def infer_v2(self, data: Any, raw: bytes | None = None) -> bytes:
        """A v2 answer (JSON) for a decoded v2 request (``raw``: its body)."""
        served = self.model
        samples, preprocessed, names = decode_v2(data, served, raw)
        outputs = await self.run(served.prepare(samples, preprocessed=preprocessed))
        tensors = served.v2_outputs(outputs)
        if names:
            tensors = [t for t in tensors if t["name"] in names]
        answer: dict[str, Any] = {
            "model_name": served.name,
            "model_version": served.manifest.version,
            "outputs": tensors,
        }
        if isinstance(data.get("id"), str):
            answer["id"] = data["id"]
        return dumps(answer)


def internal_error(exc: BaseException, what: str = "Unexpected error") -> InputError:
    """A 500 for ``exc`` with a fixed message and a request id; the details (type, text,
    traceback) go to the server's log under that id, never to the client."""
    request_id = uuid.uuid4().hex[:16]
    log.error(
        "%s (request id %s): %s: %s",
        what,
        request_id,
        type(exc).__name__,
        exc,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return InputError(
        500,
        f"Internal server error (request id {request_id}); the server's log has the details.",
        request_id=request_id,
    )


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


async def receive_body(
    receive: Receive, declared: bytes | None, limit: int, limit_mb: float
) -> bytes:
    """The body of an ASGI request, refusing (413) one over ``limit`` bytes."""
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise InputError(
                400, f"Bad Content-Length header: {declared.decode('latin-1')!r}."
            ) from None
        if size > limit:
            raise _too_large(limit_mb)
    message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise _too_large(limit_mb)
        return body
    chunks = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit_mb)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(limit_mb: float) -> InputError:
    return InputError(
        413,
        f"The request body is larger than the server's limit of {limit_mb:g} MiB. Send fewer "
        f"samples per request, or start the server with a larger --max_request_mb.",
        {"max_request_mb": limit_mb},
    )


#: The routes :class:`FastRoutes` answers (``route_of`` labels).
FAST_ROUTES = ("v1_predict", "v2_infer")
JSON_HEADER = (b"content-type", b"application/json")


class FastRoutes:
    """The predict routes as plain ASGI: the same decoding, checks, batching and answers
    as their FastAPI routes (which stay, for the OpenAPI docs and multipart uploads),
    without the per-request routing, dependency solving and response encoding of the
    framework, which cost several times what a small model does."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def __call__(self, route: str, scope: Scope, receive: Receive, send: Send) -> int | None:
        """Answer the request and return its status, or None to leave it to FastAPI."""
        state = self.state
        path: str = scope["path"]
        name = path[11:-8] if route == "v1_predict" else path[11:-6]
        if not name or "/" in name:
            return None  # FastAPI's routing answers (404)
        content_type = accept = b""
        declared = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"content-length":
                declared = value
            elif key == b"accept":
                accept = value
        media = content_type.decode("latin-1").split(";")[0].strip().lower()
        if media == "multipart/form-data" and route == "v1_predict":
            return None  # image uploads: FastAPI's form parsing
        headers = [JSON_HEADER]
        try:
            state.check(name)
            settings = state.settings
            body = await receive_body(receive, declared, state.limit, settings.max_request_mb)
            if route == "v1_predict":
                samples, wants_npy = decode_v1_body(
                    body, media, accept.decode("latin-1"), state.model
                )
                payload, media_type = await state.predict_v1(samples, wants_npy)
                if wants_npy:
                    headers = [(b"content-type", media_type.encode())]
            else:
                payload = await state.infer_v2(_json(body), body)
            status = 200
        except InputError as exc:
            status = exc.status
            payload = dumps(exc.body())
            if status in (429, 503):
                headers.append((b"retry-after", b"1"))
        except ClientGone:
            return 499  # nobody to answer (nginx's "client closed request")
        except Exception as exc:
            error = internal_error(exc, f"Unexpected error on {path}")
            status = 500
            payload = dumps(error.body())
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return status


@functools.cache
def _app_class() -> Any:
    from fastapi import FastAPI

    class ServeApp(FastAPI):
        """FastAPI, with the predict routes answered by :class:`FastRoutes` and every
        request counted and timed (Prometheus)."""

        forgeml_fast: FastRoutes | None = None
        forgeml_metrics: Metrics | None = None

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            metrics = self.forgeml_metrics
            if scope["type"] != "http" or metrics is None:
                await super().__call__(scope, receive, send)
                return
            start = time.perf_counter()
            route = route_of(scope["path"])
            fast = self.forgeml_fast
            if fast is not None and route in FAST_ROUTES and scope["method"] == "POST":
                code = await fast(route, scope, receive, send)
                if code is not None:
                    metrics.observe(route, code, time.perf_counter() - start)
                    return
            status = 500
            started = False

            async def watch(message: Message) -> None:
                nonlocal status, started
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    started = True
                await send(message)

            try:
                await super().__call__(scope, receive, watch)
            except Exception as exc:
                # Starlette re-raises an error after its handler answered (a fixed 500,
                # logged with a request id); re-raised further, uvicorn would close the
                # connection. Answer here only if nothing was sent yet.
                if not started:
                    error = internal_error(exc, f"Unexpected error on {scope['path']}")
                    payload = dumps(error.body())
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 500,
                            "headers": [
                                JSON_HEADER,
                                (b"content-length", str(len(payload)).encode()),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": payload})
            finally:
                metrics.observe(route, status, time.perf_counter() - start)

    return ServeApp


async def read_body(request: Any, limit: int, limit_mb: float) -> bytes:
    """The request body, refusing (413) one over ``limit`` bytes before reading it all."""
    too_large = _too_large(limit_mb)
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_large
        except ValueError:
            raise InputError(400, f"Bad Content-Length header: {declared!r}.") from None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _codec() -> tuple[Callable[[bytes], Any], Callable[[Any], bytes]]:
    """``(loads, dumps)``: orjson's when it is installed (several times faster on the
    request path), else the standard library's (same JSON, compact)."""
    try:
        import orjson
    except ImportError:

        def dumps(value: Any) -> bytes:
            return json.dumps(
                value, ensure_ascii=False, allow_nan=False, separators=(",", ":")
            ).encode()

        return json.loads, dumps

    def dumps_orjson(value: Any) -> bytes:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)

    return orjson.loads, dumps_orjson


loads, dumps = _codec()


def _json(body: bytes) -> Any:
    try:
        return loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(400, f"The request body is not valid JSON: {exc}.") from None
    except RecursionError:
        raise InputError(
            400, "The request body is JSON nested too deeply to read: send flatter data."
        ) from None


def _media_type(request: Any) -> str:
    return str(request.headers.get("content-type", "")).split(";")[0].strip().lower()


async def decode_v1(request: Any, state: ServerState) -> tuple[Any, bool]:
    """The samples of a v1 request (an array, or a list of images) and whether the
    client wants .npy back."""
    media = _media_type(request)
    if media == "multipart/form-data":
        return await decode_images(request, state), False
    body = await read_body(request, state.limit, state.settings.max_request_mb)
    return decode_v1_body(body, media, request.headers.get("accept", ""), state.model)


def decode_v1_body(
    body: bytes, media: str, accept: str, model: ServedModel
) -> tuple[np.ndarray, bool]:
    """The samples of a v1 JSON, .npy or safetensors body and whether the client wants
    .npy back (``accept``)."""
    wants_npy = any(t in accept for t in NPY_TYPES)
    if media in BINARY_TYPES:
        return decode_binary(body, media, model), wants_npy
    if media not in JSON_TYPES:
        raise InputError(
            415,
            f'Unsupported Content-Type {media!r}. Send application/json ({{"instances": '
            f"[...]}}), application/x-npy, application/x-safetensors, or multipart/form-data "
            f"images.",
        )
    data = _json(body)
    if not isinstance(data, dict) or "instances" not in data:
        raise model.fail(
            'A v1 request is a JSON object {"instances": [sample, ...]}, one entry per sample. '
            f"Got {_kind(data)}.",
            400 if not isinstance(data, dict) else 422,
        )
    instances = data["instances"]
    if not isinstance(instances, list) or not instances:
        raise model.fail(
            f'"instances" must be a non-empty list (one entry per sample). Got {_kind(instances)}.'
        )
    return model.as_array(instances, '"instances"', raw=body), wants_npy


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return f"a list of {len(value)}"
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:5]}"
    return type(value).__name__


#: The header numpy writes for a plain C-ordered array (version 1.0; read by a regular
#: expression, never evaluated).
NPY_HEADER = re.compile(
    rb"\{'descr': '([<>|=][biuf][1-8])', 'fortran_order': False, 'shape': \(([0-9, ]*)\), \} *\n"
)


def read_npy(body: bytes) -> np.ndarray:
    """An ``.npy`` body as an array: the common case (version 1.0, numeric, C order)
    read directly, several times faster than ``np.load``; anything else by ``np.load``
    (``allow_pickle=False``)."""
    if body[:8] == NPY_MAGIC + b"\x01\x00" and len(body) >= 10:
        size = int.from_bytes(body[8:10], "little")
        match = NPY_HEADER.fullmatch(body, 10, 10 + size)
        if match is not None:
            dtype = np.dtype(match[1].decode())
            shape = tuple(int(d) for d in match[2].split(b",") if d.strip())
            count = math.prod(shape)
            if len(body) - 10 - size == count * dtype.itemsize:
                return np.frombuffer(body, dtype, count, 10 + size).reshape(shape).copy()
    array: np.ndarray = np.load(io.BytesIO(body), allow_pickle=False)
    return array


def decode_binary(body: bytes, media: str, model: ServedModel) -> np.ndarray:
    """An ``.npy`` or safetensors body as the samples array."""
    if media in NPY_TYPES or (media == "application/octet-stream" and body[:6] == NPY_MAGIC):
        try:
            array = read_npy(body)
        except (ValueError, OSError, EOFError) as exc:
            raise model.fail(f"The body is not a readable .npy array: {exc}.", 400) from None
        return model.as_array(array, "The .npy array")
    try:
        from safetensors.numpy import load

        tensors = load(body)
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise model.fail(
            f"The body is neither an .npy array nor a safetensors file: {exc}.", 400
        ) from None
    name = model.spec.name
    if name in tensors:
        return model.as_array(tensors[name], f"Tensor {name!r}")
    if len(tensors) == 1:
        return model.as_array(next(iter(tensors.values())), "The tensor")
    raise model.fail(
        f"The safetensors body holds {sorted(tensors) or 'no tensors'}; give one tensor, or "
        f"one named {name!r} (the model's input)."
    )


async def decode_images(request: Any, state: ServerState) -> list[np.ndarray]:
    """The image files of a multipart upload (any field names), in order."""
    from starlette.datastructures import UploadFile
    from starlette.requests import Request

    from forgeml.eval.tasks._common import image_plan
    from forgeml.eval.tasks._datasets import read_image

    model = state.model
    if not model.image:
        raise model.fail(
            f"Model '{model.name}' is not an image model: send JSON instances or an array.", 415
        )
    body = await read_body(request, state.limit, state.settings.max_request_mb)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4096)
    except Exception as exc:  # python-multipart's parse errors
        raise model.fail(f"The multipart body cannot be parsed: {exc}.", 400) from None
    channels = image_plan(model.spec).channels
    images: list[np.ndarray] = []
    for key, value in form.multi_items():
        if not isinstance(value, UploadFile):
            continue
        data = await value.read()
        try:
            images.append(read_image(io.BytesIO(data), channels))  # type: ignore[arg-type]
        except Exception as exc:  # Pillow raises many types for damaged files
            reason = str(exc).strip() or type(exc).__name__
            raise model.fail(
                f"The upload {key!r} ({value.filename}) is not an image ({reason}). Upload "
                f"PNG, JPEG, BMP or other image files Pillow reads.",
                415,
            ) from None
    if not images:
        raise model.fail("The multipart body holds no files: upload one or more images.")
    return images


def decode_v2(
    data: Any, model: ServedModel, raw: bytes | None = None
) -> tuple[np.ndarray, bool, list[str] | None]:
    """A KServe v2 inference request -> (samples, preprocessed?, requested output names).

    ``raw``: the JSON body ``data`` came from (see :meth:`ServedModel.as_array`)."""
    if not isinstance(data, dict) or not isinstance(data.get("inputs"), list):
        raise model.fail(
            'A v2 request is a JSON object {"inputs": [{"name", "shape", "datatype", "data"}]}. '
            f"Got {_kind(data)}.",
            400 if not isinstance(data, dict) else 422,
        )
    inputs = data["inputs"]
    chosen = [i for i in inputs if isinstance(i, dict) and i.get("name") == model.spec.name]
    if not chosen and len(inputs) == 1 and isinstance(inputs[0], dict):
        chosen = inputs
    if len(chosen) != 1:
        raise model.fail(
            f"A v2 request for model '{model.name}' has one input, named {model.spec.name!r}. "
            f"Got {len(inputs)} input(s)."
        )
    tensor = chosen[0]
    shape, datatype, values = tensor.get("shape"), tensor.get("datatype"), tensor.get("data")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise model.fail(f"The input's 'shape' must be a list of sizes. Got {shape!r}.")
    if datatype not in NUMPY_DTYPES:
        raise model.fail(
            f"The input's 'datatype' must be one of {', '.join(sorted(NUMPY_DTYPES))}. "
            f"Got {datatype!r}."
        )
    if not isinstance(values, list):
        raise model.fail(f"The input's 'data' must be a list of numbers. Got {_kind(values)}.")
    array = model.as_array(values, "The input's 'data'", raw=raw)
    needed = math.prod(shape)  # Python integers: no overflow
    if array.size != needed:
        raise model.fail(
            f"The input's 'data' has {array.size} values, but its shape {shape} needs {needed}."
        )
    array = _cast(array, datatype, model).reshape(shape)
    parameters = data.get("parameters")
    preprocessed = isinstance(parameters, dict) and parameters.get("preprocessed") is True
    outputs = data.get("outputs")
    names = None
    if outputs is not None:
        known = model.output_names()
        if not isinstance(outputs, list) or not all(
            isinstance(o, dict) and o.get("name") in known for o in outputs
        ):
            got = (
                [o.get("name") if isinstance(o, dict) else o for o in outputs]
                if isinstance(outputs, list)
                else outputs
            )
            raise model.fail(
                f"The request's 'outputs' must be a list of {{\"name\": NAME}} with NAME one "
                f"of {', '.join(known)} (or leave 'outputs' out for all). Got {got!r}."
            )
        names = [str(o["name"]) for o in outputs]
    return array, preprocessed, names


def _cast(array: np.ndarray, datatype: str, model: ServedModel) -> np.ndarray:
    """``array`` as v2 ``datatype``, or a 422 when a value does not fit it (an integer out
    of range or with a fraction; a float beyond the type's range)."""
    dtype = np.dtype(NUMPY_DTYPES[datatype])
    if array.dtype == dtype or array.size == 0:
        return array
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        low, high = array.min(), array.max()
        if low < info.min or high > info.max:
            raise model.fail(
                f"The input's data do not fit {datatype} ({info.min} to {info.max}). Got "
                f"values from {low} to {high}: declare a wider datatype."
            )
        if array.dtype.kind == "f" and not np.array_equal(array, np.trunc(array)):
            raise model.fail(
                f"The input's data do not fit {datatype}: some values have a fraction. "
                f"Declare a floating-point datatype (FP32)."
            )
        return array.astype(dtype)
    with np.errstate(over="ignore"):
        cast = array.astype(dtype)
    if dtype.kind == "f" and not np.isfinite(cast).all():
        raise model.fail(
            f"The input's data do not fit {datatype}: some values are beyond its range "
            f"(±{np.finfo(dtype).max:g}). Declare a wider datatype (FP32)."
        )
    return cast


def create_app(model: str | ServeSettings, **options: Any) -> Any:
    """The FastAPI app serving ``model`` (a name, a manifest path, or :class:`ServeSettings`).

    ``options`` are :class:`ServeSettings` fields (``max_batch_size=8``, ...); those not
    given come from ``FORGEML_SERVE_*`` environment variables, else the defaults. The
    model loads in the background when the app starts (``GET /readyz`` says when).
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    settings = (
        model if isinstance(model, ServeSettings) else ServeSettings.resolve(model, **options)
    )
    state = ServerState(settings)
    served = state.model

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    app: FastAPI = _app_class()(
        title=f"forgeml serve: {served.name}",
        version=served.manifest.version,
        description=(
            f"{served.manifest.description or served.name} ({served.manifest.task}, "
            f"{served.agent}). Dynamic batching: up to {settings.effective_batch_size} samples "
            f"per model call, waiting at most {settings.max_latency_ms:g} ms."
        ),
        lifespan=lifespan,
    )
    app.state.forgeml = state
    app.forgeml_fast = FastRoutes(state)  # type: ignore[attr-defined]
    app.forgeml_metrics = state.metrics  # type: ignore[attr-defined]

    def error(exc: InputError) -> Any:
        headers = {"Retry-After": "1"} if exc.status in (429, 503) else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

    @app.exception_handler(InputError)
    async def input_error(request: Request, exc: InputError) -> Any:
        return error(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Any:
        return JSONResponse({"error": f"Invalid request: {exc.errors()}"}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Any:
        return error(internal_error(exc, f"Unexpected error on {request.url.path}"))

    @app.get("/healthz", summary="Liveness: the process answers (503 if the model failed)")
    async def healthz() -> Any:
        if state.error:
            return JSONResponse({"status": "failed", "error": state.error}, 503)
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: 200 once the model is loaded, else 503")
    async def readyz() -> Any:
        if state.ready:
            return {"status": "ready", "model": served.name}
        if state.error:
            return JSONResponse({"status": "failed", "error": state.error}, 503)
        return JSONResponse({"status": "loading", "model": served.name}, 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(state.metrics.text(), media_type=CONTENT_TYPE_LATEST)

    def model_status() -> dict[str, Any]:
        return {
            **served.describe(),
            "ready": state.ready,
            "backend": state.backend.where,
            "batching": {
                "enabled": settings.batching,
                "max_batch_size": settings.effective_batch_size,
                "max_latency_ms": settings.max_latency_ms,
                "max_queue": settings.max_queue,
            },
            "max_request_mb": settings.max_request_mb,
        }

    @app.get("/v1/models", summary="The served models")
    async def list_models() -> Any:
        return {"models": [model_status()]}

    @app.get("/v1/models/{name}", summary="One served model")
    async def get_model(name: str) -> Any:
        if name != served.name:
            raise InputError(404, f"Unknown model '{name}'. This server serves: {served.name}.")
        return model_status()

    predict_doc = {
        "requestBody": {
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["instances"],
                        "properties": {"instances": {"type": "array", "items": {}}},
                    },
                    "example": {"instances": [[[0.0] * 8] * 8]},
                },
                "application/x-npy": {"schema": {"type": "string", "format": "binary"}},
                "application/x-safetensors": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
            }
        }
    }

    @app.post(
        "/v1/models/{name}:predict",
        summary="Predict (TF-Serving/KServe v1): {instances: [...]} -> {predictions: [...]}",
        openapi_extra=predict_doc,
    )
    async def predict_v1(name: str, request: Request) -> Any:
        state.check(name)
        samples, wants_npy = await decode_v1(request, state)
        payload, media_type = await state.predict_v1(samples, wants_npy)
        return Response(payload, media_type=media_type)

    @app.post(
        "/v2/models/{name}/infer",
        summary="Infer (KServe v2): {inputs: [{name, shape, datatype, data}]} -> {outputs}",
    )
    async def infer_v2(name: str, request: Request) -> Any:
        state.check(name)
        data = _json(await read_body(request, state.limit, settings.max_request_mb))
        return Response(await state.infer_v2(data), media_type="application/json")

    @app.get("/v2", summary="KServe v2 server metadata")
    async def v2_server() -> Any:
        from forgeml._version import __version__

        return {"name": "forgeml", "version": __version__, "extensions": []}

    @app.get("/v2/health/live", summary="KServe v2 liveness")
    async def v2_live() -> Any:
        return {"live": True}

    @app.get("/v2/health/ready", summary="KServe v2 readiness")
    async def v2_ready() -> Any:
        return JSONResponse({"ready": state.ready}, 200 if state.ready else 503)

    @app.get("/v2/models/{name}", summary="KServe v2 model metadata")
    async def v2_model(name: str) -> Any:
        if name != served.name:
            raise InputError(404, f"Unknown model '{name}'. This server serves: {served.name}.")
        spec = served.spec
        from forgeml.serve._model import V2_DATATYPES

        return {
            "name": served.name,
            "versions": [served.manifest.version],
            "platform": served.manifest.framework,
            "inputs": [
                {
                    "name": spec.name,
                    "datatype": V2_DATATYPES.get(np.dtype(spec.dtype).name, "FP32"),
                    "shape": [-1, *spec.shape],
                }
            ],
            "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, -1]}],
        }

    @app.get("/v2/models/{name}/ready", summary="KServe v2 model readiness")
    async def v2_model_ready(name: str) -> Any:
        ready = name == served.name and state.ready
        return JSONResponse({"name": name, "ready": ready}, 200 if ready else 503)

    return app
