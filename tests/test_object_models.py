"""Objects holding real trained models survive save_object/load_object with identical output."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("xgboost")
pytest.importorskip("keras")

from forgeml import load_object, save_object
from forgeml.objects import read_manifest
from model_objects import Ensemble, TorchClassifier, TorchNet


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    data = load_iris()
    return data.data.astype(np.float32), data.target


def test_torch_model_and_optimizer_round_trip(tmp_path: Path, digits) -> None:
    import torch

    x, y = digits
    torch.manual_seed(0)
    model = TorchClassifier(64, 10, hidden=16)
    model.fit(x, y)
    save_object(model, tmp_path / "m.dry")
    loaded = load_object(tmp_path / "m.dry")
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    # The optimizer state came back too: one more identical step on both.
    model.fit(x, y, steps=1)
    loaded.fit(x, y, steps=1)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    files = set(read_manifest(tmp_path / "m.dry")["members"])
    assert files == {
        "state/root/net.safetensors",
        "state/root/optimizer.safetensors",
        "state/root/optimizer.json",
    }


def test_object_that_is_a_torch_module(tmp_path: Path, iris) -> None:
    import torch

    x, _ = iris
    net = TorchNet(4, 3)
    with torch.no_grad():
        net.body.weight.fill_(0.25)
    buffer = io.BytesIO()
    save_object(net, buffer)
    buffer.seek(0)
    loaded = load_object(buffer)
    assert isinstance(loaded, torch.nn.Module)
    with torch.no_grad():
        expected = net(torch.as_tensor(x)).numpy()
        np.testing.assert_array_equal(loaded(torch.as_tensor(x)).numpy(), expected)


@pytest.mark.slow
def test_every_framework_in_one_object(tmp_path: Path, iris) -> None:
    x, y = iris
    ensemble = Ensemble(seed=3)
    ensemble.fit(x, y)
    save_object(ensemble, tmp_path / "e.dry")
    loaded = load_object(tmp_path / "e.dry")
    expected, got = ensemble.predict(x), loaded.predict(x)
    assert set(got) == {"logreg", "forest", "xgb", "keras", "torch"}
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=0, err_msg=name)
    adapters = {
        slot: entry["adapter"]
        for slot, entry in read_manifest(tmp_path / "e.dry")["object"]["state"]["attrs"].items()
    }
    assert adapters == {
        "models.logreg": "sklearn",
        "models.forest": "sklearn",
        "models.xgb": "xgboost",
        "keras_model": "keras",
    }
