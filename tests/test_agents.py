"""Agents: real small models, saved and loaded through a manifest, predict as the model does."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from forgeml import Object, save_object
from forgeml.eval import Agent, EvalError, Manifest, Predictor, load_bundled, load_manifest
from forgeml.eval.agents import get_agent, normalize_device
from forgeml.eval.tasks import get_task

LABELS = [str(i) for i in range(10)]
IRIS = ["setosa", "versicolor", "virginica"]


# ----------------------------------------------------------------------------- models


class TorchNet(Object, torch.nn.Module):
    """A user's model: an Object that is a torch module (so its state_dict is saved)."""

    def __init__(self, hidden: int = 16) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(64, hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(0.2),  # eval mode turns it off
            torch.nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class SklearnModel(Object):
    def __init__(self, max_iter: int = 300) -> None:
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(max_iter=max_iter)


class XGBModel(Object):
    def __init__(self, n_estimators: int = 8) -> None:
        from xgboost import XGBClassifier

        self.model = XGBClassifier(n_estimators=n_estimators, max_depth=2, n_jobs=1)


class KerasModel(Object):
    def __init__(self, seed: int = 0) -> None:
        import keras

        keras.utils.set_random_seed(seed)
        self.model = keras.Sequential(
            [
                keras.Input((4,)),
                keras.layers.Dense(8, activation="relu"),
                keras.layers.Dense(3, activation="softmax"),
            ]
        )


def write_manifest(
    folder: Path,
    framework: str,
    weights: str,
    *,
    task: str = "image_classification",
    inputs: str = "{name: image, shape: [1, 8, 8], layout: NCHW, scale: [0.0625]}",
    labels: list[str] | None = None,
) -> Manifest:
    names = ", ".join(f'"{label}"' for label in (labels or LABELS))
    path = folder / f"model.{framework}.yml"
    path.write_text(
        f"name: test_model\ntask: {task}\nframework: {framework}\ninputs: [{inputs}]\n"
        f"output: {{type: classification, labels: [{names}]}}\nweights: {{path: {weights}}}\n",
        encoding="utf-8",
    )
    return load_manifest(path)


def digits_batch(manifest: Manifest, count: int = 50) -> np.ndarray:
    task = get_task(manifest.task)
    batch = next(task.load_dataset("digits", manifest).iter_batches(count))
    return task.preprocess(batch.raw, manifest)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Train on one thread: on data this small it is the fastest, and on a busy machine
    several threads that wait for each other are many times slower."""
    import threadpoolctl

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpoolctl.threadpool_limits(limits=1):
            yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def torch_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """A small MLP trained on digits:train, saved as an archive and exported to ONNX."""
    folder = tmp_path_factory.mktemp("torch")
    torch.manual_seed(0)
    net = TorchNet(hidden=32)
    train = load_bundled("digits:train")
    x = torch.tensor(train.x[:, None] / 16.0, dtype=torch.float32)
    y = torch.tensor(train.y)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    net.train()
    with one_thread():
        for _ in range(100):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
    net.eval()
    save_object(net, folder / "net.dry")
    with warnings.catch_warnings():  # "legacy TorchScript-based ONNX export"
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (x[:2],),
            str(folder / "net.onnx"),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        )
    return net, folder


@pytest.fixture
def restore_torch_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- agents


def test_agents_implement_the_protocol_and_aliases_resolve() -> None:
    names = (
        "pytorch",
        "onnxruntime",
        "sklearn",
        "xgboost",
        "tensorflow",
        "tensorrt",
        "torchscript",
    )
    for name in names:
        agent = get_agent(name)
        assert isinstance(agent, Agent)
        assert agent.name == name
    assert get_agent("torch") is get_agent("pytorch")
    assert get_agent("keras") is get_agent("tensorflow")
    assert get_agent("onnx") is get_agent("onnxruntime")
    for name in ("pytorch", "onnxruntime", "sklearn", "xgboost", "tensorflow"):
        assert get_agent(name).unavailable() is None


def test_unknown_agent_lists_the_known_and_suggests() -> None:
    with pytest.raises(EvalError) as info:
        get_agent("pytroch")
    assert str(info.value) == (
        "Unknown agent 'pytroch'. Known: onnxruntime, pytorch, sklearn, tensorflow, tensorrt, "
        "torchscript, xgboost. Did you mean 'pytorch'?"
    )


def test_devices_are_normalized() -> None:
    assert normalize_device("cpu") == "cpu"
    assert normalize_device("CUDA") == "cuda:0"
    assert normalize_device("gpu:1") == "cuda:1"
    with pytest.raises(EvalError, match="'cpu' or 'cuda:N'"):
        normalize_device("tpu")


def test_pytorch_agent_predicts_like_the_module(
    torch_model: tuple[Any, Path], restore_torch_threads: None
) -> None:
    import torch

    net, folder = torch_model
    manifest = write_manifest(folder, "pytorch", "net.dry")
    predictor = get_agent("torch").load(manifest, threads=1)
    assert isinstance(predictor, Predictor)
    assert torch.get_num_threads() == 1
    assert predictor.info["framework"] == "torch"
    assert predictor.info["version"] == torch.__version__
    assert (predictor.info["device"], predictor.info["threads"]) == ("cpu", "1")
    batch = digits_batch(manifest)
    out = predictor.predict(batch)
    predictor.synchronize()
    assert isinstance(out, np.ndarray)
    assert out.shape == (50, 10)
    with torch.no_grad():
        expected = net(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert (out.argmax(1) == load_bundled("digits").y[:50]).mean() > 0.8  # it learned
    predictor.close()
    with pytest.raises(EvalError, match="closed"):
        predictor.predict(batch)
    with pytest.raises(EvalError, match="'cuda:0' is not available to the pytorch agent"):
        get_agent("pytorch").load(manifest, device="cuda:0")


def test_onnxruntime_agent_runs_the_export(torch_model: tuple[Any, Path]) -> None:
    net, folder = torch_model
    manifest = write_manifest(folder, "onnxruntime", "net.onnx")
    predictor = get_agent("onnxruntime").load(manifest, threads=2)
    model: Any = getattr(predictor, "model", None)
    assert model.session.get_session_options().intra_op_num_threads == 2
    assert model.providers == ["CPUExecutionProvider"]
    assert predictor.info["threads"] == "2"
    assert predictor.info["framework"] == "onnxruntime"
    batch = digits_batch(manifest, 33)
    with torch.no_grad():
        expected = net(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(predictor.predict(batch), expected, rtol=1e-4, atol=1e-5)
    # the archive is not an ONNX file
    wrong = write_manifest(folder, "onnxruntime", "net.dry")
    with pytest.raises(EvalError, match=r"onnxruntime agent loads \.onnx files"):
        get_agent("onnxruntime").load(wrong)


def test_sklearn_agent_predicts_probabilities(tmp_path: Path) -> None:
    import threadpoolctl

    train = load_bundled("digits:train")
    obj = SklearnModel()
    with one_thread():
        obj.model.fit(train.x.reshape(len(train.x), -1) / 16.0, train.y)
    save_object(obj, tmp_path / "logreg.dry")
    flat = "{name: image, shape: [64], scale: [0.0625]}"
    manifest = write_manifest(tmp_path, "sklearn", "logreg.dry", inputs=flat)
    with threadpoolctl.threadpool_limits(limits=None):  # restores the thread pools after
        predictor = get_agent("sklearn").load(manifest, threads=2)
    model: Any = getattr(predictor, "model", None)
    assert model.n_jobs == 2
    assert predictor.info["threads"] == "2"
    batch = digits_batch(manifest)
    np.testing.assert_allclose(predictor.predict(batch), obj.model.predict_proba(batch))


def test_xgboost_agent_on_iris(tmp_path: Path) -> None:
    train = load_bundled("iris:train")
    obj = XGBModel()
    with one_thread():
        obj.model.fit(train.x, train.y)
    save_object(obj, tmp_path / "xgb.dry")
    manifest = write_manifest(
        tmp_path,
        "xgboost",
        "xgb.dry",
        task="tabular_classification",
        inputs="{name: features, shape: [4]}",
        labels=IRIS,
    )
    predictor = get_agent("xgboost").load(manifest, threads=2)
    model: Any = getattr(predictor, "model", None)
    assert model.get_params()["n_jobs"] == 2
    task = get_task("tabular_classification")
    batch = next(task.load_dataset("iris", manifest).iter_batches(20))
    inputs = task.preprocess(batch.raw, manifest)
    out = predictor.predict(inputs)
    np.testing.assert_allclose(out, obj.model.predict_proba(inputs), rtol=1e-6)
    assert (task.postprocess(out, manifest) == batch.labels).mean() > 0.8


def test_tensorflow_agent_runs_a_keras_model(tmp_path: Path) -> None:
    train = load_bundled("iris:train")
    obj = KerasModel()
    obj.model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with one_thread():
        obj.model.fit(train.x, train.y, epochs=2, verbose=0)
    save_object(obj, tmp_path / "keras.dry")
    manifest = write_manifest(
        tmp_path,
        "tensorflow",
        "keras.dry",
        task="tabular_classification",
        inputs="{name: features, shape: [4]}",
        labels=IRIS,
    )
    predictor = get_agent("keras").load(manifest, threads=1)
    assert predictor.info["framework"] == "keras"
    assert predictor.info["backend"] == "tensorflow"
    # TensorFlow's runtime started with the training above: its threads are fixed
    assert predictor.info["threads"] == "default"
    inputs = load_bundled("iris").x[:7].astype(np.float32)
    expected = np.asarray(obj.model(inputs, training=False))
    np.testing.assert_allclose(predictor.predict(inputs), expected, rtol=1e-5, atol=1e-6)


def test_tensorrt_is_unavailable_here_with_the_reason(tmp_path: Path) -> None:
    agent = get_agent("trt")
    reason = agent.unavailable()
    if reason is None:
        pytest.skip("TensorRT can run here (tested by test_tensorrt_on_a_gpu)")
    assert "NVIDIA GPU" in reason or "not installed" in reason
    manifest = write_manifest(tmp_path, "tensorrt", "model.onnx")
    with pytest.raises(EvalError, match="The tensorrt agent cannot run here: "):
        agent.load(manifest, device="cuda:0")


@pytest.mark.gpu
@pytest.mark.skipif(
    get_agent("tensorrt").unavailable() is not None,
    reason=f"TensorRT cannot run here: {get_agent('tensorrt').unavailable()}",
)
def test_tensorrt_on_a_gpu(torch_model: tuple[Any, Path]) -> None:
    net, folder = torch_model
    manifest = write_manifest(folder, "tensorrt", "net.onnx")
    predictor = get_agent("tensorrt").load(manifest, device="cuda:0")
    batch = digits_batch(manifest, 20)
    with torch.no_grad():
        expected = net(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(predictor.predict(batch), expected, rtol=1e-3, atol=1e-3)
    predictor.close()


def test_wrong_object_type_and_wrong_framework(tmp_path: Path) -> None:
    train = load_bundled("iris:train")
    obj = SklearnModel(max_iter=500)
    with one_thread():
        obj.model.fit(train.x, train.y)
    save_object(obj, tmp_path / "model.dry")
    inputs = "{name: features, shape: [4]}"
    as_torch = write_manifest(tmp_path, "pytorch", "model.dry", inputs=inputs, labels=IRIS)
    with pytest.raises(EvalError) as info:
        get_agent("pytorch").load(as_torch)
    message = str(info.value)
    assert "hold a test_agents.SklearnModel, which the pytorch agent cannot run" in message
    assert "torch.nn.Module" in message
    as_sklearn = write_manifest(tmp_path, "sklearn", "model.dry", inputs=inputs, labels=IRIS)
    with pytest.raises(EvalError, match="is a sklearn model; the xgboost agent runs xgboost"):
        get_agent("xgboost").load(as_sklearn)
    with pytest.raises(EvalError, match="threads must be a positive integer"):
        get_agent("sklearn").load(as_sklearn, threads=0)


def test_allow_restricts_the_modules_of_the_model_class(tmp_path: Path) -> None:
    train = load_bundled("iris:train")
    obj = SklearnModel(max_iter=500)
    with one_thread():
        obj.model.fit(train.x, train.y)
    save_object(obj, tmp_path / "model.dry")
    path = tmp_path / "allowed.yml"
    path.write_text(
        "name: m\ntask: tabular_classification\nframework: sklearn\n"
        "inputs: [{shape: [4]}]\noutput: {type: classification}\n"
        "weights: {path: model.dry}\nattributes: {allow: [mypackage.]}\n",
        encoding="utf-8",
    )
    with pytest.raises(EvalError, match="not allowed"):
        get_agent("sklearn").load(load_manifest(path))


def test_url_and_repo_weights_load_only_forgeml_and_framework_classes_by_default(
    tmp_path: Path,
) -> None:
    from forgeml.objects import Repo

    train = load_bundled("iris:train")
    obj = SklearnModel(max_iter=500)
    with one_thread():
        obj.model.fit(train.x, train.y)
    Repo(tmp_path / "repo", create=True).add_object(obj, tags="best")

    def repo_manifest(attributes: str) -> Manifest:
        path = tmp_path / "repo_model.yml"
        path.write_text(
            "name: m\ntask: tabular_classification\nframework: sklearn\n"
            "inputs: [{shape: [4]}]\noutput: {type: classification}\n"
            f"weights: {{repo: repo, selector: {{tags: best}}}}\n{attributes}",
            encoding="utf-8",
        )
        return load_manifest(path)

    with pytest.raises(EvalError) as info:
        get_agent("sklearn").load(repo_manifest(""))
    assert "'test_agents:SklearnModel' is not allowed" in str(info.value)
    assert "['forgeml.', 'sklearn.', 'skops.']" in str(info.value)
    widened = repo_manifest("attributes: {allow: [test_agents.]}\n")
    predictor = get_agent("sklearn").load(widened)
    assert predictor.predict(train.x[:3]).shape == (3, 3)
    # a local path loads as before: the user's own file, any importable class
    save_object(obj, tmp_path / "local.dry")
    assert get_agent("sklearn").load(
        write_manifest(
            tmp_path,
            "sklearn",
            "local.dry",
            task="tabular_classification",
            inputs="{name: features, shape: [4]}",
            labels=IRIS,
        )
    ).predict(train.x[:3]).shape == (3, 3)


def test_closing_a_predictor_restores_the_process_thread_settings(
    torch_model: tuple[Any, Path], tmp_path: Path, restore_torch_threads: None
) -> None:
    import threadpoolctl

    from forgeml.eval import evaluate

    _, folder = torch_model
    torch.set_num_threads(3)
    result = evaluate(
        write_manifest(folder, "pytorch", "net.dry"),
        dataset="digits",
        batch_size=100,
        num_batches=2,
        threads=1,
        store=False,
        track=False,
    )
    assert result.provenance["threads"]["agent"] == "1"  # it ran on one thread
    assert torch.get_num_threads() == 3  # and the setting is back

    train = load_bundled("digits:train")
    obj = SklearnModel()
    with one_thread():
        obj.model.fit(train.x.reshape(len(train.x), -1) / 16.0, train.y)
    save_object(obj, tmp_path / "logreg.dry")
    flat = "{name: image, shape: [64], scale: [0.0625]}"
    manifest = write_manifest(tmp_path, "sklearn", "logreg.dry", inputs=flat)
    with threadpoolctl.threadpool_limits(limits=3):
        before = [p["num_threads"] for p in threadpoolctl.threadpool_info()]
        predictor = get_agent("sklearn").load(manifest, threads=1)
        assert {p["num_threads"] for p in threadpoolctl.threadpool_info()} == {1}
        predictor.close()
        assert [p["num_threads"] for p in threadpoolctl.threadpool_info()] == before
