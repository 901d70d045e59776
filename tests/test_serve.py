"""``forgeml serve``: real uvicorn servers on 127.0.0.1 serving real zoo models.

Servers run in a thread of the test process (:class:`BackgroundServer`) or as a
``forgeml serve`` subprocess (signals, the CLI, environment variables).
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from forgeml import ServeError
from forgeml._core._env import parse_bool
from forgeml._core._net import free_port
from forgeml.eval import build_zoo, get_manifest, load_bundled
from forgeml.eval.agents import get_agent
from forgeml.eval.tasks import get_task
from forgeml.serve import BackgroundServer, Client, ServeSettings, create_app
from forgeml.serve._batcher import Batcher

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")

ZOO_MODELS = ["digits_cnn", "digits_logreg"]


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("serve-zoo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORGEML_CACHE", str(folder))
        build_zoo(ZOO_MODELS, progress=False)
    return folder


@pytest.fixture(scope="module")
def env(zoo_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """FORGEML_CACHE (the module's zoo) and FORGEML_HOME, for the module's servers."""
    home = tmp_path_factory.mktemp("serve-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORGEML_CACHE", str(zoo_cache))
        patch.setenv("FORGEML_HOME", str(home))
        patch.delenv("FORGEML_MODELS", raising=False)
        for name in list(os.environ):
            if name.startswith("FORGEML_SERVE_"):
                patch.delenv(name)
        yield {"FORGEML_CACHE": str(zoo_cache), "FORGEML_HOME": str(home)}


@pytest.fixture(scope="module")
def cnn(env: dict[str, str]) -> Iterator[BackgroundServer]:
    with BackgroundServer("digits_cnn", framework="pytorch", threads=1) as server:
        yield server


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.asarray(load_bundled("digits:test").x[:64], dtype=np.float64)


def direct(model: str, framework: str, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's outputs and class ids, run directly by its agent and task (no HTTP)."""
    manifest = get_manifest(model, framework)
    task = get_task(manifest.task)
    predictor = get_agent(framework).load(manifest, threads=1)
    try:
        outputs = np.asarray(predictor.predict(task.preprocess(images, manifest)))
    finally:
        predictor.close()
    return outputs, np.asarray(task.postprocess(outputs, manifest))


def check(predictions: list[Any], outputs: np.ndarray, ids: np.ndarray) -> None:
    assert [p["class_id"] for p in predictions] == ids.tolist()
    assert [p["label"] for p in predictions] == [str(i) for i in ids.tolist()]
    np.testing.assert_allclose([p["scores"] for p in predictions], outputs, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- settings


def test_env_booleans_are_typed() -> None:
    assert parse_bool("false", name="X") is False
    assert parse_bool(" TRUE ", name="X") is True
    assert parse_bool("0", name="X") is False
    with pytest.raises(ValueError, match=r"X must be a boolean.*Got 'nope'"):
        parse_bool("nope", name="X")


def test_settings_come_from_options_then_env_then_defaults() -> None:
    environ = {"FORGEML_SERVE_MAX_BATCH_SIZE": "8", "FORGEML_SERVE_EXTERNAL": "false"}
    settings = ServeSettings.resolve("m", environ=environ, backend_url="http://b:1")
    assert settings.max_batch_size == 8
    assert settings.external is False  # explicitly false wins over a backend URL
    settings = ServeSettings.resolve("m", environ=environ, max_batch_size=4)
    assert settings.max_batch_size == 4
    assert ServeSettings.resolve("m", environ={}, backend_url="http://b:1").external is True
    with pytest.raises(ServeError, match="FORGEML_SERVE_EXTERNAL must be a boolean"):
        ServeSettings.resolve("m", environ={"FORGEML_SERVE_EXTERNAL": "maybe"})
    with pytest.raises(ServeError, match="FORGEML_SERVE_PORT must be an integer"):
        ServeSettings.resolve("m", environ={"FORGEML_SERVE_PORT": "eighty"})
    with pytest.raises(ServeError, match="needs the backend's URL"):
        ServeSettings.resolve("m", environ={"FORGEML_SERVE_EXTERNAL": "1"})
    with pytest.raises(ServeError, match="'max_batch_size' option of serve must be a positive"):
        ServeSettings.resolve("m", environ={}, max_batch_size=0)
    with pytest.raises(ServeError, match="Did you mean 'max_batch_size'"):
        ServeSettings.resolve("m", environ={}, max_batch=3)


def test_unknown_models_fail_before_serving(env: dict[str, str]) -> None:
    with pytest.raises(ServeError, match=r"Unknown model 'digits_cn'.*Did you mean 'digits_cnn'"):
        create_app("digits_cn")
    with pytest.raises(ServeError, match="several frameworks"):
        create_app("digits_cnn")


# ----------------------------------------------------------------------------- the batcher


def test_the_batcher_batches_splits_and_never_exceeds_the_limit() -> None:
    seen: list[int] = []

    async def run(x: np.ndarray) -> np.ndarray:
        seen.append(len(x))
        await asyncio.sleep(0.01)
        return x * 2

    async def main() -> list[np.ndarray]:
        batcher = Batcher(run, max_batch_size=8, max_latency_ms=20)
        batcher.start()
        requests = [np.full((n, 2), i, dtype=float) for i, n in enumerate([1, 3, 20, 2, 5, 1])]
        results = await asyncio.gather(*(batcher.submit(r) for r in requests))
        await batcher.close()
        return [np.asarray(r) for r in results]

    results = asyncio.run(main())
    assert max(seen) <= 8
    assert sum(seen) == 32
    assert len(seen) < 6  # requests ran together
    for i, (n, result) in enumerate(zip([1, 3, 20, 2, 5, 1], results, strict=True)):
        np.testing.assert_array_equal(result, np.full((n, 2), 2 * i))


def test_a_full_batch_runs_at_once_and_a_partial_one_at_its_deadline() -> None:
    seen: list[int] = []

    async def run(x: np.ndarray) -> np.ndarray:
        seen.append(len(x))
        return x + 1

    async def main() -> None:
        batcher = Batcher(run, max_batch_size=4, max_latency_ms=60_000)
        batcher.start()
        # Four samples fill the batch: it runs now, not after the one-minute deadline.
        full = [batcher.submit(np.full((1, 2), i)) for i in range(4)]
        results = await asyncio.wait_for(asyncio.gather(*full), timeout=10)
        assert [r[0, 0] for r in results] == [1, 2, 3, 4]
        # One sample waits for its deadline (or the drain on close) before it runs.
        batcher.max_latency = 0.05
        one = await asyncio.wait_for(batcher.submit(np.zeros((1, 2))), timeout=10)
        np.testing.assert_array_equal(one, np.ones((1, 2)))
        # close() answers what is queued, then takes nothing new.
        batcher.max_latency = 60.0
        pending = asyncio.ensure_future(batcher.submit(np.zeros((2, 2))))
        await asyncio.sleep(0)
        await asyncio.wait_for(batcher.close(), timeout=10)
        np.testing.assert_array_equal(await pending, np.ones((2, 2)))
        with pytest.raises(ServeError, match="shutting down"):
            await batcher.submit(np.zeros((1, 2)))

    asyncio.run(main())
    assert seen == [4, 1, 2]


def test_the_model_thread_runs_calls_in_order_and_returns_errors() -> None:
    from forgeml.serve._model import ModelThread

    thread = ModelThread("test-model")
    names: list[str] = []

    def work(i: int) -> int:
        import threading

        names.append(threading.current_thread().name)
        if i == 3:
            raise ValueError("three")
        return i * 10

    async def main() -> list[Any]:
        calls = [thread.call(work, i) for i in range(5)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    thread.shutdown()
    assert results[:3] == [0, 10, 20]
    assert results[4] == 40
    assert isinstance(results[3], ValueError)
    assert set(names) == {"test-model"}


def test_json_without_orjson_answers_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from forgeml.serve import _app

    payload = {"predictions": [{"label": "3", "class_id": 3, "scores": [0.5, -1.25e-7, 3.0]}]}
    fast_loads, fast_dumps = _app._codec()
    monkeypatch.setitem(sys.modules, "orjson", None)  # import orjson fails
    loads, dumps = _app._codec()
    assert loads is json.loads
    assert json.loads(dumps(payload)) == json.loads(fast_dumps(payload)) == payload
    assert b" " not in dumps(payload)  # compact, as orjson writes it
    assert fast_loads(b'{"instances": [[1, 2.5]]}') == loads(b'{"instances": [[1, 2.5]]}')


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((1, 8, 8), np.float32),
        np.arange(12, dtype=">i8").reshape(3, 4),
        np.array([True, False]),
        np.float64(3.5),
        np.zeros((0, 3)),
        np.asfortranarray(np.ones((2, 3))),  # not the common case: np.load reads it
    ],
)
def test_npy_bodies_read_as_np_load_reads_them(array: np.ndarray) -> None:
    from forgeml.serve._app import read_npy

    buffer = io.BytesIO()
    np.save(buffer, array)
    body = buffer.getvalue()
    read = read_npy(body)
    assert read.dtype == array.dtype
    np.testing.assert_array_equal(read, array)
    assert read.flags.writeable
    with pytest.raises(ValueError, match="EOF"):  # a truncated body
        read_npy(body[:-1] if array.size else body[:20])


# ----------------------------------------------------------------------------- routes


def test_v1_json_predictions_match_the_model(cnn: BackgroundServer, images: np.ndarray) -> None:
    outputs, ids = direct("digits_cnn", "pytorch", images[:5])
    with Client(cnn.url) as client:
        check(client.predict(images[:5]), outputs, ids)  # images (H, W)
        check(client.predict(images[:5, None]), outputs, ids)  # the input shape (1, 8, 8)
        assert client.models()[0]["batching"]["max_batch_size"] == 32


def test_binary_bodies_npy_and_safetensors(cnn: BackgroundServer, images: np.ndarray) -> None:
    outputs, ids = direct("digits_cnn", "pytorch", images[:7])
    with Client(cnn.url) as client:
        check(client.predict_array(images[:7].astype(np.float32)), outputs, ids)
        check(client.predict_array(images[:7], format="safetensors"), outputs, ids)
    buffer = io.BytesIO()
    np.save(buffer, images[:2])
    answer = httpx.post(
        f"{cnn.url}/v1/models/digits_cnn:predict",
        content=buffer.getvalue(),
        headers={"content-type": "application/x-npy", "accept": "application/x-npy"},
    )
    scores = np.load(io.BytesIO(answer.content), allow_pickle=False)
    np.testing.assert_allclose(scores, outputs[:2], rtol=1e-4, atol=1e-4)


def test_multipart_png_uploads(cnn: BackgroundServer, images: np.ndarray) -> None:
    from PIL import Image

    pngs = []
    for image in images[:3]:
        buffer = io.BytesIO()
        Image.fromarray((image * 16).clip(0, 255).astype(np.uint8)).save(buffer, format="PNG")
        pngs.append(buffer.getvalue())
    # A PNG holds 0-255; the model takes 0-16: the server reads what the file holds.
    outputs, ids = direct("digits_cnn", "pytorch", (images[:3] * 16).clip(0, 255).round())
    with Client(cnn.url) as client:
        check(client.predict_images(pngs), outputs, ids)
        with pytest.raises(ServeError, match=r"415.*not an image"):
            client.predict_images([b"not a png"])


def test_v2_infer(cnn: BackgroundServer, images: np.ndarray) -> None:
    outputs, ids = direct("digits_cnn", "pytorch", images[:4])
    with Client(cnn.url) as client:
        answer = client.infer(images[:4, None].astype(np.float32), input_name="image")
        np.testing.assert_allclose(answer["scores"], outputs, rtol=1e-4, atol=1e-4)
        assert answer["class_id"].tolist() == ids.tolist()
        assert answer["label"].tolist() == [str(i) for i in ids]
        only = client.infer(images[:4], outputs=["class_id"])
        assert list(only) == ["class_id"]
    meta = httpx.get(f"{cnn.url}/v2/models/digits_cnn").json()
    assert meta["inputs"][0] == {"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}
    assert httpx.get(f"{cnn.url}/v2/models/digits_cnn/ready").status_code == 200


def test_health_metrics_and_openapi(cnn: BackgroundServer, images: np.ndarray) -> None:
    with Client(cnn.url) as client:
        client.predict(images[:3])
        text = client.metrics()
    assert httpx.get(f"{cnn.url}/healthz").json() == {"status": "ok"}
    for line in (
        'forgeml_serve_requests_total{code="200",route="v1_predict"}',
        "forgeml_serve_request_seconds_bucket",
        "forgeml_serve_batch_size_bucket",
        "forgeml_serve_queue_depth 0.0",
        "forgeml_serve_model_ready 1.0",
    ):
        assert line in text
    spec = httpx.get(f"{cnn.url}/openapi.json").json()
    assert "/v1/models/{name}:predict" in spec["paths"]
    assert "/v2/models/{name}/infer" in spec["paths"]
    assert httpx.get(f"{cnn.url}/docs").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ({"instances": [[1, 2, 3]]}, 422, "Got samples of shape [3]"),
        ({"instances": [[[1, 2], [3]]]}, 422, "ragged"),
        ({"instances": [["a"] * 8] * 8}, 422, "must hold numbers"),
        ({"instances": []}, 422, "non-empty list"),
        ({"samples": [1]}, 422, '{"instances": [sample, ...]}'),
        ([1, 2], 400, "JSON object"),
        (b"{not json", 400, "not valid JSON"),
    ],
)
def test_bad_input_gets_a_helpful_4xx(
    cnn: BackgroundServer, body: Any, status: int, says: str
) -> None:
    url = f"{cnn.url}/v1/models/digits_cnn:predict"
    response = (
        httpx.post(url, content=body) if isinstance(body, bytes) else httpx.post(url, json=body)
    )
    assert response.status_code == status
    error = response.json()
    assert says in error["error"]
    if status == 422:
        assert error["expected"]["sample_shapes"][0] == [1, 8, 8]


def test_chunked_bodies_and_requests_left_to_fastapi(
    cnn: BackgroundServer, images: np.ndarray
) -> None:
    outputs, ids = direct("digits_cnn", "pytorch", images[:6])
    text = json.dumps({"instances": images[:6].tolist()}).encode()

    def chunks() -> Iterator[bytes]:  # chunked transfer: several ASGI body messages
        for i in range(0, len(text), 100):
            yield text[i : i + 100]

    url = f"{cnn.url}/v1/models/digits_cnn:predict"
    answer = httpx.post(url, content=chunks(), headers={"content-type": "application/json"})
    assert answer.status_code == 200
    check(answer.json()["predictions"], outputs, ids)
    # Paths the fast routes do not own go to FastAPI's router (and are counted too).
    assert httpx.post(f"{cnn.url}/v1/models/a/b:predict", json={}).status_code == 404
    assert httpx.get(url).status_code == 404  # GET /v1/models/{name}: no such model
    metrics = httpx.get(f"{cnn.url}/metrics").text
    assert 'forgeml_serve_requests_total{code="404",route="v1_predict"}' in metrics
    assert httpx.get(f"{cnn.url}/nowhere").status_code == 404
    metrics = httpx.get(f"{cnn.url}/metrics").text
    assert 'forgeml_serve_requests_total{code="404",route="other"}' in metrics


def test_unknown_model_and_content_type(cnn: BackgroundServer) -> None:
    response = httpx.post(f"{cnn.url}/v1/models/nope:predict", json={"instances": [[0]]})
    assert response.status_code == 404
    assert "This server serves: digits_cnn" in response.json()["error"]
    response = httpx.post(
        f"{cnn.url}/v1/models/digits_cnn:predict", content=b"x", headers={"content-type": "a/b"}
    )
    assert response.status_code == 415
    assert "application/x-npy" in response.json()["error"]


def test_max_request_mb_gives_413(env: dict[str, str], images: np.ndarray) -> None:
    with BackgroundServer("digits_logreg", max_request_mb=0.01) as server:
        big = {"instances": np.zeros((100, 8, 8)).tolist()}
        response = httpx.post(f"{server.url}/v1/models/digits_logreg:predict", json=big)
        assert response.status_code == 413
        assert response.json()["expected"] == {"max_request_mb": 0.01}
        assert "--max_request_mb" in response.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted while read
            yield json.dumps(big).encode()

        response = httpx.post(f"{server.url}/v1/models/digits_logreg:predict", content=chunks())
        assert response.status_code == 413
        outputs, ids = direct("digits_logreg", "sklearn", images[:2])
        check(Client(server.url).predict(images[:2]), outputs, ids)


def test_sklearn_and_onnxruntime_models(env: dict[str, str], images: np.ndarray) -> None:
    for model, agent in (("digits_logreg", "sklearn"), ("digits_cnn", "onnxruntime")):
        outputs, ids = direct(model, agent, images[:9])
        server = BackgroundServer(model, agent=agent, max_batch_size=4)
        with server, Client(server.url) as client:
            check(client.predict(images[:9]), outputs, ids)  # split into 4 + 4 + 1
            assert client.models()[0]["agent"] == agent
            # sklearn's input shape is [64]: flat rows are samples too
            flat = images[:9].reshape(9, -1) if model == "digits_logreg" else images[:9]
            check(client.predict(flat), outputs, ids)


def test_external_backend_proxies_to_another_server(
    cnn: BackgroundServer, images: np.ndarray
) -> None:
    outputs, ids = direct("digits_cnn", "pytorch", images[:6])
    with (
        BackgroundServer(
            "digits_cnn", framework="pytorch", backend_url=cnn.url, max_batch_size=4
        ) as proxy,
        Client(proxy.url) as client,
    ):
        assert client.models()[0]["backend"] == cnn.url
        check(client.predict(images[:6]), outputs, ids)
        with pytest.raises(ServeError, match="422"):
            client.predict([[1, 2]])


# ----------------------------------------------------------------------------- acceptance


@pytest.mark.slow
def test_1000_concurrent_mixed_requests(cnn: BackgroundServer, images: np.ndarray) -> None:
    """Good requests are answered correctly, malformed ones get a 4xx; no 5xx, none lost."""
    outputs, ids = direct("digits_cnn", "pytorch", images)
    rng = np.random.default_rng(0)
    url = f"{cnn.url}/v1/models/digits_cnn:predict"
    bad_bodies: list[dict[str, Any]] = [
        {"json": {"instances": [[1, 2, 3]]}},
        {"json": {"instances": "x"}},
        {"json": {"nope": 1}},
        {"content": b"{broken"},
        {"json": {"instances": [[[1, 2], [3]]]}},
        {"content": b"\x93NUMPYgarbage", "headers": {"content-type": "application/x-npy"}},
    ]

    async def one(i: int, client: httpx.AsyncClient) -> tuple[int, Any, httpx.Response]:
        if i % 10 < 7:  # good: 1-3 samples, as images or in the input shape
            picked = rng.choice(len(images), size=int(rng.integers(1, 4)), replace=False)
            samples = images[picked] if i % 2 else images[picked][:, None]
            response = await client.post(url, json={"instances": samples.tolist()})
            return i, picked, response
        kwargs = bad_bodies[i % len(bad_bodies)]
        return i, None, await client.post(url, **kwargs)

    async def main() -> list[tuple[int, Any, httpx.Response]]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            return await asyncio.gather(*(one(i, client) for i in range(1000)))

    results = asyncio.run(main())
    assert len(results) == 1000
    statuses = [response.status_code for _, _, response in results]
    assert not [s for s in statuses if s >= 500]
    good = bad = 0
    for _, picked, response in results:
        if picked is None:
            assert 400 <= response.status_code < 500
            assert response.json()["error"]
            bad += 1
        else:
            assert response.status_code == 200, response.text
            check(response.json()["predictions"], outputs[picked], ids[picked])
            good += 1
    assert (good, bad) == (700, 300)
    text = httpx.get(f"{cnn.url}/metrics").text
    sizes = [line for line in text.splitlines() if line.startswith("forgeml_serve_batch_size_")]
    count = float(next(s for s in sizes if "_count" in s).split()[-1])
    total = float(next(s for s in sizes if "_sum" in s).split()[-1])
    assert total / count > 1.5  # requests were batched together


# ----------------------------------------------------------------------------- processes


def start(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    environ = {**os.environ, **env}
    process = subprocess.Popen(
        [sys.executable, "-m", "forgeml", "serve", *args, "--port", str(port)],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    url = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        try:
            status = httpx.get(f"{url}/readyz").status_code
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        if status == 200:
            return process
        time.sleep(0.05)
    process.kill()
    raise AssertionError("the server did not become ready")


@pytest.mark.slow
def test_cli_manifest_file_env_vars_and_sigterm_drain(
    env: dict[str, str], images: np.ndarray, tmp_path: Path
) -> None:
    """``forgeml serve FILE.yml`` (weights next to it, as in a container), options from
    FORGEML_SERVE_* (typed booleans), and SIGTERM with requests queued: all answered, exit 0."""
    bad = subprocess.run(
        [sys.executable, "-m", "forgeml", "serve", "digits_logreg", "--check"],
        env={**os.environ, **env, "FORGEML_SERVE_EXTERNAL": "flase"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert "FORGEML_SERVE_EXTERNAL must be a boolean" in bad.stderr
    manifest = get_manifest("digits_logreg", "sklearn")
    from forgeml.eval._weights import resolve_weights

    (tmp_path / "digits_logreg.dry").write_bytes(resolve_weights(manifest).read_bytes())
    text = manifest.source.read_text() if manifest.source else ""
    (tmp_path / "model.yml").write_text(
        text.replace("weights: {zoo: digits_logreg}", "weights: {path: digits_logreg.dry}")
    )
    port = free_port()
    environ = {**env, "FORGEML_SERVE_EXTERNAL": "false", "FORGEML_SERVE_MAX_BATCH_SIZE": "4"}
    args = [str(tmp_path / "model.yml"), "--max-latency-ms", "400"]
    process = start([*args, "--backend-url", "http://127.0.0.1:9"], environ, port)
    try:
        with Client(f"http://127.0.0.1:{port}") as client:
            status = client.models()[0]
        assert status["backend"] == "embedded"  # FORGEML_SERVE_EXTERNAL=false wins
        assert status["batching"]["max_batch_size"] == 4
    except BaseException:
        process.kill()
        raise
    outputs, ids = direct("digits_logreg", "sklearn", images[:40])
    url = f"http://127.0.0.1:{port}/v1/models/digits_logreg:predict"

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            tasks = [
                asyncio.ensure_future(client.post(url, json={"instances": [images[i].tolist()]}))
                for i in range(40)
            ]
            await asyncio.sleep(0.3)  # sent, and waiting in the batcher's queue
            process.send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks)

    responses = asyncio.run(main())
    assert process.wait(timeout=30) == 0
    assert [r.status_code for r in responses] == [200] * 40
    for i, response in enumerate(responses):
        check(response.json()["predictions"], outputs[i : i + 1], ids[i : i + 1])


def test_readyz_is_503_until_the_model_loads(env: dict[str, str], tmp_path: Path) -> None:
    """A zoo model that is not built yet trains while the server already answers."""
    from forgeml.serve._app import ServerState

    settings = ServeSettings.resolve("digits_logreg", port=free_port())
    server = BackgroundServer(settings)
    state: ServerState = server.app.state.forgeml
    gate = __import__("threading").Event()
    load = state.backend.load

    def slow_load() -> None:
        gate.wait(10)
        load()

    state.backend.load = slow_load  # type: ignore[method-assign]
    import threading

    thread = threading.Thread(target=server.start)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                response = httpx.get(f"{server.url}/readyz")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert response.status_code == 503
        assert response.json()["status"] == "loading"
        predict = httpx.post(f"{server.url}/v1/models/digits_logreg:predict", json={})
        assert predict.status_code == 503
        assert predict.headers["retry-after"] == "1"
        gate.set()
        thread.join(30)
        assert httpx.get(f"{server.url}/readyz").status_code == 200
    finally:
        gate.set()
        thread.join(30)
        server.stop()


# ----------------------------------------------------------------------------- review fixes


@pytest.fixture(scope="module")
def logreg(env: dict[str, str]) -> Iterator[BackgroundServer]:
    """digits_logreg (scikit-learn) with a batching window wide enough that concurrent
    requests share model calls."""
    with BackgroundServer("digits_logreg", framework="sklearn", max_latency_ms=150) as server:
        yield server


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def test_a_failing_batch_is_rerun_request_by_request() -> None:
    calls: list[int] = []

    async def run(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if (x < 0).any():
            raise ValueError("negative input")
        return x * 2

    async def main() -> list[Any]:
        batcher = Batcher(run, max_batch_size=6, max_latency_ms=60_000)  # closes when full
        batcher.start()
        samples = [np.full((1, 2), i, dtype=np.float32) for i in range(5)]
        samples.insert(2, np.full((1, 2), -1, dtype=np.float32))
        results = await asyncio.gather(
            *(batcher.submit(x) for x in samples), return_exceptions=True
        )
        await batcher.close()
        return results

    results = asyncio.run(main())
    assert calls == [6, 1, 1, 1, 1, 1, 1]  # the batch, then each request alone
    assert isinstance(results[2], ValueError)
    good = [r for i, r in enumerate(results) if i != 2]
    assert [float(r[0, 0]) for r in good] == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_max_queue_counts_chunks_and_says_so() -> None:
    async def main() -> None:
        async def run(x: np.ndarray) -> np.ndarray:
            return x

        batcher = Batcher(run, max_batch_size=2, max_queue=2)
        batcher.start()
        try:
            await batcher.submit(np.zeros((6, 1)))  # 3 chunks of 2
        finally:
            await batcher.close()

    with pytest.raises(ServeError, match=r"counts once per 2"):
        asyncio.run(main())


def test_one_bad_request_does_not_fail_its_batch(
    logreg: BackgroundServer, images: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    """Five good JSON requests, one NaN .npy and one that fails in the model (values
    beyond float32 reach scikit-learn as inf), sent together: the good ones get their
    predictions, the NaN one a 422 that says why, the model failure a fixed 500."""
    outputs, ids = direct("digits_logreg", "sklearn", images[:5])
    url = f"{logreg.url}/v1/models/digits_logreg:predict"
    nan = images[:1].copy()
    nan[0, 0, 0] = np.nan
    huge = {
        "inputs": [{"name": "image", "shape": [1, 64], "datatype": "FP64", "data": [1e300] * 64}],
        "parameters": {"preprocessed": True},
    }

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            good = [client.post(url, json={"instances": [images[i].tolist()]}) for i in range(5)]
            bad = client.post(url, content=npy(nan), headers={"content-type": "application/x-npy"})
            fails = client.post(f"{logreg.url}/v2/models/digits_logreg/infer", json=huge)
            return await asyncio.gather(*good, bad, fails)

    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200] * 5 + [422, 500]
    for i in range(5):
        check(responses[i].json()["predictions"], outputs[i : i + 1], ids[i : i + 1])
    assert "finite" in responses[5].json()["error"]
    error = responses[6].json()
    assert error["error"] == (
        f"Internal server error (request id {error['request_id']}); the server's log has "
        f"the details."
    )
    messages = [r.getMessage() for r in caplog.records]
    # The failing request shared a model call with others (how many depends on timing).
    assert any(re.match(r"A model call on \d+ requests failed", m) for m in messages)
    assert any(error["request_id"] in m and "infinity" in m for m in messages)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"instances": [[True] * 64]}, "booleans"),
        ({"instances": [[1.0] * 63 + [False]]}, "booleans"),
        ({"instances": [[1.0] * 64, [float("nan")] * 64]}, "finite"),
    ],
)
def test_booleans_and_non_finite_values_get_422(
    logreg: BackgroundServer, body: Any, says: str
) -> None:
    text = json.dumps(body).encode()  # NaN: Python's json writes it, orjson reads it as NaN
    response = httpx.post(
        f"{logreg.url}/v1/models/digits_logreg:predict",
        content=text,
        headers={"content-type": "application/json"},
    )
    assert response.status_code in (400, 422)
    if response.status_code == 422:
        assert says in response.json()["error"]
    else:  # the JSON reader refused NaN itself
        assert "JSON" in response.json()["error"]


def v2(data: list[Any], shape: list[int], datatype: str = "FP32", **more: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "image", "shape": shape, "datatype": datatype, "data": data}]
    } | more


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"[" * 100_000 + b"]" * 100_000, 400, "JSON"),
        (v2([1.0] * 64, [2**32, 2**32]), 422, "needs 18446744073709551616"),
        (v2([300] * 64, [1, 64], "UINT8"), 422, "do not fit UINT8 (0 to 255)"),
        (v2([1.5] * 64, [1, 64], "INT32"), 422, "fraction"),
        (v2([1e6] * 64, [1, 64], "FP16"), 422, "do not fit FP16"),
        (v2([True] * 64, [1, 64], "BOOL"), 422, "booleans"),
        (v2([1.0] * 64, [1, 64], outputs=[{"name": None}]), 422, "scores, class_id, label"),
        (v2([1.0] * 64, [1, 64], outputs=[{"name": "probs"}]), 422, "Got ['probs']"),
    ],
)
def test_v2_values_must_fit_and_outputs_must_exist(
    logreg: BackgroundServer, body: Any, status: int, says: str
) -> None:
    url = f"{logreg.url}/v2/models/digits_logreg/infer"
    response = (
        httpx.post(url, content=body) if isinstance(body, bytes) else httpx.post(url, json=body)
    )
    assert response.status_code == status, response.text
    assert says in response.json()["error"]


def test_known_v2_outputs_are_chosen(logreg: BackgroundServer, images: np.ndarray) -> None:
    answer = httpx.post(
        f"{logreg.url}/v2/models/digits_logreg/infer",
        json=v2(images[:2].reshape(2, 64).tolist(), [2, 64], outputs=[{"name": "label"}]),
    ).json()
    assert [o["name"] for o in answer["outputs"]] == ["label"]


def test_deep_json_with_the_standard_library_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    from forgeml.serve import _app
    from forgeml.serve._model import InputError

    monkeypatch.setattr(_app, "loads", json.loads)
    with pytest.raises(InputError, match="nested too deeply") as caught:
        _app._json(b"[" * 100_000 + b"]" * 100_000)
    assert caught.value.status == 400


def test_internal_errors_are_fixed_500s_and_keep_the_connection(
    logreg: BackgroundServer,
    images: np.ndarray,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected error (here raised by a route added for the test) is answered with a
    fixed message and a request id that the log names; the connection stays open for the
    next request (uvicorn closes it when the app re-raises)."""
    import http.client

    async def boom() -> None:
        raise RuntimeError("secret detail")

    logreg.app.add_api_route("/test-boom", boom)
    connection = http.client.HTTPConnection("127.0.0.1", logreg.settings.port, timeout=30)
    try:
        connection.request("GET", "/test-boom")
        response = connection.getresponse()
        body = json.loads(response.read())
        sock = connection.sock
        assert response.status == 500
        assert "secret" not in json.dumps(body)
        assert body["request_id"] in body["error"]
        assert sock is not None
        payload = json.dumps({"instances": [images[0].tolist()]})
        connection.request(
            "POST",
            "/v1/models/digits_logreg:predict",
            body=payload,
            headers={"content-type": "application/json"},
        )
        again = connection.getresponse()
        assert again.status == 200
        again.read()
        assert connection.sock is sock  # the same keep-alive connection
    finally:
        connection.close()
    assert any(
        body["request_id"] in r.getMessage() and "secret detail" in r.getMessage()
        for r in caplog.records
    )


def test_an_unready_backend_times_out_with_a_reason(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from forgeml.serve._model import ExternalBackend

    monkeypatch.setattr(ExternalBackend, "warn_every", 0.3)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    server = BackgroundServer("digits_logreg", backend_url=dead, backend_start_timeout=1.0)
    with pytest.raises(ServeError, match=r"not ready within 1 s \(last try: ConnectError"):
        server.start()
    assert server.app.state.forgeml.error.startswith("BackendError")
    assert any("Still waiting for the backend" in r.getMessage() for r in caplog.records)
    with pytest.raises(ServeError, match="backend_start_timeout"):
        ServeSettings.resolve("m", environ={"FORGEML_SERVE_BACKEND_START_TIMEOUT": "-1"})


def test_json_needs_check_and_health_never_raises() -> None:
    from click.testing import CliRunner

    from forgeml.cli.serve import serve

    result = CliRunner().invoke(serve, ["digits_logreg", "--json"])
    assert result.exit_code == 2
    assert "Add --check" in result.output
    with Client(f"http://127.0.0.1:{free_port()}", model="m", timeout=2) as client:
        assert client.health() is False
        assert client.ready() is False
