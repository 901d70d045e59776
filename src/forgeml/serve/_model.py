"""The served model: its manifest and task (pre- and post-processing), and its backend.

Input rules (v1 ``instances``, v2 tensors, ``.npy``/safetensors bodies), per sample:

- the model's input shape (``manifest.inputs[0].shape``, e.g. ``[1, 8, 8]`` for
  ``digits_cnn``), holding raw values: the server applies the manifest's
  ``(x - mean) * scale`` and casts to its dtype;
- image models also take an image, ``(H, W)`` or ``(H, W, C)`` with C 1, 3 or 4,
  of any size: it is resized and converted as the task does for datasets;
- tabular models take a feature row of the input's size.

The backend runs the prepared batch: :class:`EmbeddedBackend` loads the model in
this process through its evaluation agent (a worker thread runs it, so the event
loop never blocks); :class:`ExternalBackend` sends it to a KServe-v2 endpoint
(another forgeml server, or any v2 server) and post-processes the answer here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from forgeml._core._errors import ServeError
from forgeml.eval._manifest import Manifest
from forgeml.eval._protocols import Predictor, Task

#: numpy dtype name -> KServe v2 datatype
V2_DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
NUMPY_DTYPES = {v: k for k, v in V2_DATATYPES.items()}

log = logging.getLogger("forgeml.serve")


class InputError(ServeError):
    """A request the server cannot run: HTTP ``status`` with a JSON body that says why."""

    def __init__(
        self,
        status: int,
        message: str,
        expected: Mapping[str, Any] | None = None,
        *,
        request_id: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.expected = dict(expected) if expected else None
        self.request_id = request_id

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.expected:
            body["expected"] = self.expected
        if self.request_id:
            body["request_id"] = self.request_id
        return body


class BackendError(ServeError):
    """The external backend failed or answered something unusable (HTTP 502).

    ``batch_wide``: the failure is the backend's, not one request's (it cannot be
    reached), so the batcher does not retry the batch's requests one by one.
    """

    def __init__(self, message: str, *, batch_wide: bool = False) -> None:
        super().__init__(message)
        self.batch_wide = batch_wide


def _has_bool(values: list[Any]) -> bool:
    """Whether nested lists hold a boolean anywhere."""
    stack = [values]
    while stack:
        for value in stack.pop():
            kind = type(value)
            if kind is list:
                stack.append(value)
            elif kind is bool:
                return True
    return False


class ServedModel:
    """A manifest and its task: turns requests into model batches and outputs into answers."""

    def __init__(self, manifest: Manifest, task: Task, agent: str) -> None:
        self.manifest = manifest
        self.task = task
        self.agent = agent
        self.spec = manifest.input
        self.input_shape = tuple(self.spec.shape)
        self.dtype = np.dtype(self.spec.dtype)
        self.labels = manifest.output.labels
        self.classification = manifest.output.type == "classification"
        self.image = manifest.task.startswith("image") or self.spec.layout in ("NCHW", "NHWC")

    @property
    def name(self) -> str:
        return self.manifest.name

    def expected(self) -> dict[str, Any]:
        """What a request's samples may look like (sent with every input error)."""
        shapes: list[Any] = [list(self.input_shape)]
        if self.image:
            shapes += ["[H, W]", "[H, W, C] (C: 1, 3 or 4)"]
        return {
            "input": self.spec.name,
            "sample_shapes": shapes,
            "dtype": "numbers (converted to " + str(self.dtype) + ")",
        }

    def fail(self, message: str, status: int = 422) -> InputError:
        return InputError(status, message, self.expected())

    def output_names(self) -> list[str]:
        """The names of the v2 output tensors (:meth:`v2_outputs`)."""
        return ["scores", "class_id", "label"] if self.classification else ["scores", "value"]

    def as_array(self, data: Any, what: str, *, raw: bytes | None = None) -> np.ndarray:
        """Request data (nested lists or an array) as a numeric array of finite values,
        or a 422. ``raw``: the JSON body ``data`` came from (lists are searched for
        booleans only when it spells ``true`` or ``false``)."""
        try:
            array = np.asarray(data)
        except (ValueError, TypeError, RecursionError):
            array = None
        if array is None or array.dtype == object:
            raise self.fail(
                f"{what} must be numbers, every sample of the same shape (a rectangular "
                f"nested list). Got ragged or mixed data."
            )
        kind = array.dtype.kind
        if kind == "b" or (
            isinstance(data, list)
            and (raw is None or b"true" in raw or b"false" in raw)
            and _has_bool(data)
        ):
            raise self.fail(
                f"{what} must be numbers. Got booleans (true/false): send them as 1 and 0."
            )
        if kind not in "iuf":
            raise self.fail(f"{what} must hold numbers. Got values of type {array.dtype}.")
        if kind == "f" and not np.isfinite(array).all():
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            raise self.fail(
                f"{what} must be finite numbers. Got {bad} NaN or infinite value(s): replace "
                f"them (e.g. with 0) before sending."
            )
        return array

    def prepare(self, samples: Any, *, preprocessed: bool = False) -> np.ndarray:
        """Samples (an array, first axis samples; or a list of images) -> the model's batch."""
        from forgeml._core._errors import EvalError

        if isinstance(samples, list):  # images of different sizes (multipart uploads)
            try:
                return self.task.preprocess(samples, self.manifest)
            except EvalError as exc:
                raise self.fail(f"The images cannot be prepared for the model: {exc}") from None
        x = samples
        if x.ndim < 1 or len(x) == 0:
            raise self.fail("A request needs at least one sample. Got none.")
        shape = tuple(x.shape[1:])
        if preprocessed:
            if shape != self.input_shape:
                raise self.fail(
                    f"Preprocessed samples must have the model's input shape "
                    f"{list(self.input_shape)}. Got samples of shape {list(shape)}."
                )
            with np.errstate(over="ignore"):  # what overflows fails in the model
                return np.ascontiguousarray(x, dtype=self.dtype)
        try:
            if self.image:
                return self.task.preprocess(self._image_batch(x, shape), self.manifest)
            if math.prod(shape) != math.prod(self.input_shape):
                raise self.fail(
                    f"Samples of model '{self.name}' have {math.prod(self.input_shape)} values "
                    f"(shape {list(self.input_shape)}). Got samples of shape {list(shape)}."
                )
            return self.task.preprocess(x, self.manifest)
        except EvalError as exc:
            raise self.fail(f"The samples cannot be prepared for the model: {exc}") from None

    def _image_batch(self, x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Image samples as the task's raw images ``(N, H, W[, C])`` (channels last)."""
        layout = self.spec.layout
        if shape == self.input_shape:
            if layout == "NCHW":
                return x.transpose(0, 2, 3, 1)
            if layout == "flat" and len(shape) == 1:
                channels = 3 if self.spec.color_mode in ("rgb", "bgr") else 1
                if shape[0] % channels == 0:
                    return x.reshape(len(x), 1, shape[0] // channels, channels)
            return x
        if len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 3, 4)):
            return x
        raise self.fail(
            f"Samples of image model '{self.name}' are its input of shape "
            f"{list(self.input_shape)} ({layout}), or images [H, W] or [H, W, C]. Got samples "
            f"of shape {list(shape)}."
        )

    def class_ids(self, outputs: np.ndarray) -> np.ndarray:
        return np.asarray(self.task.postprocess(outputs, self.manifest)).astype(np.int64)

    def label(self, class_id: int) -> str:
        if self.labels is not None and 0 <= class_id < len(self.labels):
            return self.labels[class_id]
        return str(class_id)

    def v1_predictions(self, outputs: np.ndarray) -> list[Any]:
        """``[{"label", "class_id", "scores"}]`` per sample (classifiers), else the values."""
        if not self.classification:
            values = np.asarray(self.task.postprocess(outputs, self.manifest))
            return list(values.tolist())
        ids = self.class_ids(outputs)
        scores = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1).tolist()
        return [
            {"label": self.label(int(i)), "class_id": int(i), "scores": s}
            for i, s in zip(ids.tolist(), scores, strict=True)
        ]

    def v2_outputs(self, outputs: np.ndarray) -> list[dict[str, Any]]:
        """KServe-v2 output tensors: ``scores`` (the model's outputs), and for classifiers
        ``class_id`` and ``label``; for regressors ``value``."""
        array = np.asarray(outputs)
        dtype = V2_DATATYPES.get(array.dtype.name, "FP64")
        if dtype == "FP64" and array.dtype.name != "float64":
            array = array.astype(np.float64)
        tensors = [_tensor("scores", array, dtype)]
        if self.classification:
            ids = self.class_ids(outputs)
            tensors.append(_tensor("class_id", ids, "INT64"))
            labels = [self.label(int(i)) for i in ids.tolist()]
            tensors.append({"name": "label", "shape": [len(labels)], "datatype": "BYTES",
                            "data": labels})  # fmt: skip
        else:
            values = np.asarray(self.task.postprocess(outputs, self.manifest), dtype=np.float64)
            tensors.append(_tensor("value", values, "FP64"))
        return tensors

    def describe(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "name": m.name,
            "version": m.version,
            "task": m.task,
            "framework": m.framework,
            "agent": self.agent,
            "inputs": [
                {"name": i.name, "shape": list(i.shape), "dtype": i.dtype, "layout": i.layout}
                for i in m.inputs
            ],
            "output": {"type": m.output.type, "labels": list(self.labels or [])},
        }


def _tensor(name: str, array: np.ndarray, datatype: str) -> dict[str, Any]:
    return {
        "name": name,
        "shape": list(array.shape),
        "datatype": datatype,
        "data": array.reshape(-1).tolist(),
    }


# ----------------------------------------------------------------------------- backends


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the awaiting request was cancelled
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class ModelThread:
    """One thread that runs calls in order and hands each result back to the event loop.

    Lighter than ``loop.run_in_executor`` on a one-thread pool (no
    ``concurrent.futures`` future, lock and callback chain per call): the hop costs
    ~35 instead of ~50 µs of CPU here, which matters when every request is a model
    call (batching off).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None  # started by the first call

    def call(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """``fn(*args)`` in the thread, as a future of the running loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self.name, daemon=True)
            self._thread.start()
        self._calls.put((fn, args, future, loop))
        return future

    def _work(self) -> None:
        while True:
            job = self._calls.get()
            if job is None:
                return
            fn, args, future, loop = job
            try:
                result, error = fn(*args), None
            except BaseException as exc:  # handed to the awaiting request
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, result, error)

    def shutdown(self, *, wait: bool = True) -> None:
        """Run the calls already queued, then end the thread (``wait``: wait for that;
        never from the event loop, which would block while a model loads)."""
        if self._thread is not None:
            self._calls.put(None)
            if wait:
                self._thread.join()
            self._thread = None


class EmbeddedBackend:
    """The model loaded in this process by its agent, run in one worker thread
    (:class:`ModelThread`)."""

    def __init__(self, manifest: Manifest, agent: str, *, device: str, threads: int | None):
        self.manifest = manifest
        self.agent = agent
        self.device = device
        self.threads = threads
        self.predictor: Predictor | None = None
        self._thread = ModelThread("forgeml-model")
        self._closed = False

    @property
    def where(self) -> str:
        return "embedded"

    def load(self) -> None:
        """Load the model (trains a zoo model the first time); runs in the worker thread."""
        from forgeml.eval._runner import resolve_agent

        predictor = resolve_agent(self.agent).load(
            self.manifest, device=self.device, threads=self.threads
        )
        if self._closed:  # the server stopped while the model loaded
            predictor.close()
            return
        self.predictor = predictor

    async def start(self) -> None:
        await self._thread.call(self.load)

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        predictor = self.predictor
        assert predictor is not None
        session = getattr(predictor, "session", None)
        context = session() if callable(session) else contextlib.nullcontext()
        with context:
            return np.asarray(predictor.predict(batch))

    async def predict(self, batch: np.ndarray) -> np.ndarray:
        result: np.ndarray = await self._thread.call(self._predict, batch)
        return result

    async def close(self) -> None:
        """Release the model. Does not block the event loop: a model still loading is
        closed by the worker thread once it has loaded, then the thread ends."""
        self._closed = True
        predictor, self.predictor = self.predictor, None
        if predictor is not None:
            await self._thread.call(predictor.close)
        self._thread.shutdown(wait=False)


class ExternalBackend:
    """A KServe-v2 endpoint that runs the model: prepared batches go to
    ``{url}/v2/models/{model}/infer`` (with ``parameters: {preprocessed: true}``, which a
    forgeml server honours); the output named ``scores``, else the first, comes back."""

    #: Seconds between the warnings logged while the backend is not ready.
    warn_every = 10.0

    def __init__(
        self,
        manifest: Manifest,
        url: str,
        *,
        model: str | None,
        timeout: float,
        start_timeout: float = 0.0,
    ):
        self.manifest = manifest
        self.url = url.rstrip("/")
        self.model = model or manifest.name
        self.timeout = timeout
        self.start_timeout = start_timeout
        self._client: Any = None

    @property
    def where(self) -> str:
        return self.url

    async def start(self) -> None:
        """Wait until the backend says the model is ready (``GET /v2/models/{m}/ready``),
        logging a warning every :attr:`warn_every` seconds; :class:`BackendError` after
        ``start_timeout`` seconds (0: wait forever)."""
        import httpx

        self._client = httpx.AsyncClient(
            timeout=self.timeout, limits=httpx.Limits(max_connections=16)
        )
        ready = f"{self.url}/v2/models/{self.model}/ready"
        began = last_warning = time.monotonic()
        while True:
            try:
                response = await self._client.get(ready)
                if response.status_code == 200:
                    return
                reason = f"it answered {response.status_code}"
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            now = time.monotonic()
            if self.start_timeout and now - began >= self.start_timeout:
                raise BackendError(
                    f"The backend {ready} was not ready within {self.start_timeout:g} s "
                    f"(last try: {reason}). Check that it runs and serves model "
                    f"{self.model!r}, or give it longer with --backend_start_timeout "
                    f"(FORGEML_SERVE_BACKEND_START_TIMEOUT; 0 waits forever)."
                )
            if now - last_warning >= self.warn_every:
                last_warning = now
                log.warning(
                    "Still waiting for the backend %s to be ready after %.0f s (last try: %s)",
                    ready,
                    now - began,
                    reason,
                )
            await asyncio.sleep(0.2)

    async def predict(self, batch: np.ndarray) -> np.ndarray:
        import httpx

        spec = self.manifest.input
        datatype = V2_DATATYPES.get(batch.dtype.name)
        if datatype is None:
            batch, datatype = batch.astype(np.float32), "FP32"
        body = {
            "inputs": [
                {
                    "name": spec.name,
                    "shape": list(batch.shape),
                    "datatype": datatype,
                    "data": batch.reshape(-1).tolist(),
                }
            ],
            "parameters": {"preprocessed": True},
        }
        url = f"{self.url}/v2/models/{self.model}/infer"
        try:
            response = await self._client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise BackendError(
                f"The backend {url} cannot be reached: {exc!r}.", batch_wide=True
            ) from None
        if response.status_code != 200:
            raise BackendError(
                f"The backend {url} answered {response.status_code}: {response.text[:500]}"
            )
        try:
            outputs = response.json()["outputs"]
            chosen = next((o for o in outputs if o.get("name") == "scores"), outputs[0])
            dtype = NUMPY_DTYPES.get(str(chosen.get("datatype")), "float64")
            return np.asarray(chosen["data"], dtype=dtype).reshape(chosen["shape"])
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise BackendError(
                f"The backend {url} answered no usable KServe-v2 outputs ({exc!r})."
            ) from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
