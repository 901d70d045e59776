"""``Client``: call a forgeml server (or any TF-Serving v1 / KServe v2 server) from Python."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from forgeml._core._errors import ServeError


class Client:
    """An httpx client for one server and model::

        with Client("http://127.0.0.1:8000") as client:
            client.wait_ready()
            client.predict(images)         # [{"label": "3", "class_id": 3, "scores": [...]}, ...]

    ``model`` defaults to the server's only model (``GET /v1/models``). A reply with
    an error status raises :class:`~forgeml.ServeError` with the server's message;
    its ``status`` attribute holds the HTTP status.
    """

    def __init__(
        self, url: str = "http://127.0.0.1:8000", model: str | None = None, *, timeout: float = 30
    ) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._model = model
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    # -- plumbing

    def _check(self, response: Any) -> Any:
        if response.status_code < 400:
            return response
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        error = ServeError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {message}"
        )
        error.status = response.status_code  # type: ignore[attr-defined]
        raise error

    @property
    def model(self) -> str:
        if self._model is None:
            models = self.models()
            if len(models) != 1:
                names = ", ".join(m["name"] for m in models)
                raise ServeError(f"The server at {self.url} serves {names}; pass model=.")
            self._model = str(models[0]["name"])
        return self._model

    # -- status

    def models(self) -> list[dict[str, Any]]:
        """The served models: name, task, inputs, labels, batching, readiness."""
        return list(self._check(self._http.get("/v1/models")).json()["models"])

    def health(self) -> bool:
        """Whether the server is alive and its model did not fail (``GET /healthz``);
        False when it cannot be reached."""
        return self._ok("/healthz")

    def ready(self) -> bool:
        """Whether the model is loaded (``GET /readyz``); False when the server cannot
        be reached."""
        return self._ok("/readyz")

    def _ok(self, path: str) -> bool:
        import httpx

        try:
            return bool(self._http.get(path).status_code == 200)
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until the model is loaded (``GET /readyz``); ServeError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while not self.ready():
            if time.monotonic() > deadline:
                raise ServeError(f"The server at {self.url} was not ready within {timeout:g} s.")
            time.sleep(0.1)

    def metrics(self) -> str:
        """The Prometheus metrics text."""
        return str(self._check(self._http.get("/metrics")).text)

    # -- predictions

    def predict(self, instances: Any) -> list[Any]:
        """v1 JSON: ``instances`` (an array or nested lists, one entry per sample)."""
        data = np.asarray(instances).tolist() if isinstance(instances, np.ndarray) else instances
        response = self._http.post(f"/v1/models/{self.model}:predict", json={"instances": data})
        return list(self._check(response).json()["predictions"])

    def predict_array(self, samples: np.ndarray, *, format: str = "npy") -> list[Any]:
        """The samples as a binary body: ``format`` ``"npy"`` or ``"safetensors"``."""
        array = np.ascontiguousarray(samples)
        if format == "npy":
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            body, media = buffer.getvalue(), "application/x-npy"
        elif format == "safetensors":
            from safetensors.numpy import save

            body, media = save({"input": array}), "application/x-safetensors"
        else:
            raise ServeError(f"format must be 'npy' or 'safetensors'. Got {format!r}.")
        response = self._http.post(
            f"/v1/models/{self.model}:predict", content=body, headers={"content-type": media}
        )
        return list(self._check(response).json()["predictions"])

    def predict_images(self, images: Iterable[str | os.PathLike[str] | bytes]) -> list[Any]:
        """Image files (paths or encoded bytes: PNG, JPEG, ...) as a multipart upload."""
        files: list[tuple[str, tuple[str, bytes, str]]] = []
        for index, image in enumerate(images):
            if isinstance(image, bytes):
                files.append(("file", (f"image{index}", image, "application/octet-stream")))
            else:
                path = Path(image)
                files.append(("file", (path.name, path.read_bytes(), "application/octet-stream")))
        response = self._http.post(f"/v1/models/{self.model}:predict", files=files)
        return list(self._check(response).json()["predictions"])

    def infer(
        self,
        samples: np.ndarray,
        *,
        input_name: str | None = None,
        outputs: Sequence[str] | None = None,
        preprocessed: bool = False,
    ) -> dict[str, np.ndarray]:
        """KServe v2: the samples as one input tensor; returns the output tensors by name."""
        from forgeml.serve._model import NUMPY_DTYPES, V2_DATATYPES

        array = np.asarray(samples)
        datatype = V2_DATATYPES.get(array.dtype.name)
        if datatype is None:
            array, datatype = array.astype(np.float32), "FP32"
        body: dict[str, Any] = {
            "inputs": [
                {
                    "name": input_name or "input",
                    "shape": list(array.shape),
                    "datatype": datatype,
                    "data": array.reshape(-1).tolist(),
                }
            ]
        }
        if outputs:
            body["outputs"] = [{"name": name} for name in outputs]
        if preprocessed:
            body["parameters"] = {"preprocessed": True}
        answer = self._check(self._http.post(f"/v2/models/{self.model}/infer", json=body)).json()
        result: dict[str, np.ndarray] = {}
        for tensor in answer["outputs"]:
            if tensor["datatype"] == "BYTES":
                result[tensor["name"]] = np.asarray(tensor["data"], dtype=object)
            else:
                dtype = NUMPY_DTYPES.get(tensor["datatype"], "float64")
                data = np.asarray(tensor["data"], dtype=dtype)
                result[tensor["name"]] = data.reshape(tensor["shape"])
        return result

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
