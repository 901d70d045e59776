"""A predictor that sends each batch to a model served over HTTP (KServe v2).

``forgeml eval --endpoint URL`` measures a served model with the same runner,
tasks and scenarios as an in-process one: batches are preprocessed here, sent as
a KServe-v2 inference request (``{"inputs": [{name, shape, datatype, data}]}``
with ``parameters: {"preprocessed": true}``, which ``forgeml serve`` honours), and
the first output tensor (``scores`` from ``forgeml serve``) comes back as the
batch's outputs. Latency then includes the network round trip and the server's
queueing, as a client sees it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import numpy as np

from forgeml._core._errors import EvalError

#: numpy dtype name -> KServe v2 datatype
_V2_TYPES = {
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "int16": "INT16",
    "int8": "INT8",
    "uint8": "UINT8",
    "bool": "BOOL",
}
_NUMPY_TYPES = {v2: np.dtype(name) for name, v2 in _V2_TYPES.items()}


def infer_url(endpoint: str, model: str) -> str:
    """The v2 infer URL: ``endpoint`` as is when it ends in ``/infer``, else
    ``ENDPOINT/v2/models/MODEL/infer``."""
    if not endpoint.startswith(("http://", "https://")):
        raise EvalError(
            f"The 'endpoint' option of eval must be an http(s) URL of a server, such as "
            f"http://127.0.0.1:8000 (forgeml serve). Got '{endpoint}'."
        )
    if endpoint.rstrip("/").endswith("/infer"):
        return endpoint.rstrip("/")
    return f"{endpoint.rstrip('/')}/v2/models/{quote(model, safe='')}/infer"


class HTTPPredictor:
    """Predicts by POSTing batches to a KServe-v2 endpoint (one keep-alive connection)."""

    def __init__(self, endpoint: str, model: str, *, timeout: float = 60.0) -> None:
        import httpx

        self.url = infer_url(endpoint, model)
        self.info: Mapping[str, str] = {"framework": "http", "endpoint": self.url}
        self._client: Any = httpx.Client(timeout=timeout)
        self._httpx = httpx
        self.input_name = self._input_name()

    def _input_name(self) -> str:
        """The model's one input, from the server's v2 model metadata (``input`` when the
        server does not say)."""
        metadata_url = self.url.removesuffix("/infer")
        try:
            response = self._client.get(metadata_url)
            inputs = response.json().get("inputs") if response.status_code == 200 else None
        except (self._httpx.HTTPError, ValueError, AttributeError):
            return "input"
        if isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict):
            return str(inputs[0].get("name") or "input")
        return "input"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        array = np.ascontiguousarray(batch)
        datatype = _V2_TYPES.get(array.dtype.name)
        if datatype is None:
            array, datatype = array.astype(np.float32), "FP32"
        body = {
            "inputs": [
                {
                    "name": self.input_name,
                    "shape": list(array.shape),
                    "datatype": datatype,
                    "data": array.ravel().tolist(),
                }
            ],
            "parameters": {"preprocessed": True},
        }
        try:
            response = self._client.post(self.url, json=body)
        except self._httpx.HTTPError as exc:
            raise EvalError(
                f"The endpoint {self.url} did not answer: {exc}. Is the server running "
                f"(forgeml serve MODEL --port N)?"
            ) from exc
        if response.status_code != 200:
            raise EvalError(
                f"The endpoint {self.url} answered {response.status_code}: {response.text[:500]}"
            )
        try:
            payload = response.json()
        except ValueError:
            raise EvalError(
                f"The endpoint {self.url} answered 200 with a body that is not JSON: "
                f"{response.text[:300]!r}"
            ) from None
        return _first_output(payload, self.url)

    def synchronize(self) -> None:
        return None

    def close(self) -> None:
        self._client.close()


def _first_output(payload: Any, url: str) -> np.ndarray:
    outputs = payload.get("outputs") if isinstance(payload, dict) else None
    if not isinstance(outputs, list) or not outputs or not isinstance(outputs[0], dict):
        raise EvalError(
            f"The endpoint {url} did not answer in the KServe v2 form "
            f'{{"outputs": [{{name, shape, datatype, data}}]}}. Got: {str(payload)[:300]}'
        )
    tensor = outputs[0]
    dtype = _NUMPY_TYPES.get(str(tensor.get("datatype")), np.dtype(np.float32))
    try:
        return np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise EvalError(
            f"The endpoint {url} sent an output tensor that is not valid: {exc}"
        ) from None
