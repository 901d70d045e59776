"""Framework adapters save and restore state in safe formats: round trips on real tiny models.

Every round trip saves a trained object with ``save_state``, builds a fresh one
the way forgeml would (same constructor arguments, other random weights) and
checks that ``load_state`` makes it predict exactly the same. Frameworks that
are not installed skip their tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forgeml._core._errors import ObjectError
from forgeml.frameworks import Seedable, StateAdapter, get_adapter, state_adapter_for


def add_one(x: Any) -> Any:
    """A user function: skops saves it by name, and only a trusted load may import it."""
    return x + 1


def _iris() -> tuple[Any, Any]:
    datasets = pytest.importorskip("sklearn.datasets")
    return datasets.load_iris(return_X_y=True)  # type: ignore[no-any-return]


def _digits() -> tuple[Any, Any]:
    datasets = pytest.importorskip("sklearn.datasets")
    return datasets.load_digits(return_X_y=True)  # type: ignore[no-any-return]


# --- choosing the adapter -------------------------------------------------------------


@pytest.mark.parametrize("value", [object(), 3, "text", {"a": 1}, [1.0], np.zeros(3), None])
def test_plain_objects_have_no_state_adapter(value: object) -> None:
    assert state_adapter_for(value) is None


def test_state_adapter_for_a_plain_object_imports_no_framework() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from forgeml.frameworks import state_adapter_for
        class Plain:
            pass
        assert state_adapter_for(object()) is None
        assert state_adapter_for(Plain()) is None
        assert state_adapter_for({"weights": [1, 2]}) is None
        heavy = ("torch", "tensorflow", "keras", "sklearn", "skops", "xgboost", "safetensors")
        print(json.dumps(sorted(m for m in heavy if m in sys.modules)))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []


def test_adapters_implement_the_protocols_that_make_sense() -> None:
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    pytest.importorskip("xgboost")
    for name in ("torch", "sklearn", "xgboost"):
        assert isinstance(get_adapter(name), StateAdapter)
    assert isinstance(get_adapter("torch"), Seedable)
    # Neither has a global random generator of its own: the launcher seeds numpy.
    assert not isinstance(get_adapter("sklearn"), Seedable)
    assert not isinstance(get_adapter("xgboost"), Seedable)


# --- torch ----------------------------------------------------------------------------


def _torch_net(seed: int, width: int = 8) -> Any:
    """A small CNN for 8x8 digits: BatchNorm (buffers), a non-persistent buffer, tied weights."""
    torch = pytest.importorskip("torch")

    class DigitsNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, width, 3)
            self.bn = torch.nn.BatchNorm2d(width)
            self.hidden = torch.nn.Linear(width * 36, 16)
            self.mix = torch.nn.Linear(16, 16)
            self.mix_again = torch.nn.Linear(16, 16)
            self.mix_again.weight = self.mix.weight  # tied: one tensor, two names
            self.head = torch.nn.Linear(16, 10)
            self.register_buffer("scale", torch.tensor(1 / 16), persistent=False)

        def forward(self, x: Any) -> Any:
            x = torch.relu(self.bn(self.conv(x.view(-1, 1, 8, 8) * self.scale)))
            x = torch.relu(self.hidden(x.flatten(1)))
            return self.head(torch.relu(self.mix_again(torch.relu(self.mix(x)))))

    torch.manual_seed(seed)
    return DigitsNet()


def _digits_batches(n: int = 4) -> list[tuple[Any, Any]]:
    torch = pytest.importorskip("torch")
    x, y = _digits()
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    return [(xt[i * 64 : (i + 1) * 64], yt[i * 64 : (i + 1) * 64]) for i in range(n)]


def _train_step(model: Any, optimizer: Any, batch: tuple[Any, Any]) -> None:
    torch = pytest.importorskip("torch")
    model.train()
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(batch[0]), batch[1]).backward()
    optimizer.step()


def test_torch_module_round_trip_with_buffers_and_tied_weights(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors import safe_open

    model = _torch_net(seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for batch in _digits_batches():
        _train_step(model, optimizer, batch)
    model.eval()
    assert state_adapter_for(model) is get_adapter("torch")

    info = get_adapter("torch").save_state(model, tmp_path, "model")
    json.dumps(info)  # JSON-safe
    assert info["format"] == "torch.module.safetensors"
    assert info["files"] == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"} <= keys
    assert "scale" not in keys  # non-persistent: not state, __init__ rebuilds it
    assert ("mix.weight" in keys) != ("mix_again.weight" in keys)  # tied: stored once

    fresh = _torch_net(seed=1).eval()
    x = _digits_batches(1)[0][0]
    assert not torch.equal(fresh(x), model(x))
    assert get_adapter("torch").load_state(fresh, tmp_path, info) is fresh
    assert torch.equal(fresh(x), model(x))
    assert fresh.mix_again.weight is fresh.mix.weight  # still tied after loading
    assert torch.equal(fresh.bn.running_var, model.bn.running_var)
    assert fresh.bn.num_batches_tracked.item() == 4


def test_torch_module_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    adapter = get_adapter("torch")
    info = adapter.save_state(_torch_net(seed=0, width=8), tmp_path, "model")
    with pytest.raises(ObjectError, match=r"(?s)does not fit .*DigitsNet.*HINT: build the module"):
        adapter.load_state(_torch_net(seed=0, width=4), tmp_path, info)


def test_torch_extra_state_and_overlapping_views(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Counter(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("flat", torch.zeros(6))
            self.register_buffer("head", self.flat[:3])  # a view: shares memory, not a tie
            self.extra: dict[str, Any] = {"calls": 0, "limits": (0.5, float("inf")), 3: "x"}

        def get_extra_state(self) -> Any:
            return {**self.extra, "scale": torch.full((2,), 2.0)}

        def set_extra_state(self, state: Any) -> None:
            self.extra = state

    saved = Counter()
    saved.flat += torch.arange(6.0)
    saved.extra["calls"] = 3
    info = get_adapter("torch").save_state(saved, tmp_path, "counter")
    fresh = get_adapter("torch").load_state(Counter(), tmp_path, info)
    assert torch.equal(fresh.flat, torch.arange(6.0))
    assert torch.equal(fresh.head, torch.arange(3.0))
    assert fresh.head.data_ptr() == fresh.flat.data_ptr()  # __init__'s view, filled in place
    scale = fresh.extra.pop("scale")
    assert torch.equal(scale, torch.full((2,), 2.0))
    assert fresh.extra == {"calls": 3, "limits": (0.5, float("inf")), 3: "x"}


def test_torch_state_that_json_cannot_hold_is_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")

    class Odd(torch.nn.Module):
        def get_extra_state(self) -> Any:
            return {"when": object()}

        def set_extra_state(self, state: Any) -> None:
            pass

    with pytest.raises(ObjectError, match=r"'_extra_state/when' is a object.*without pickle"):
        get_adapter("torch").save_state(Odd(), tmp_path, "odd")


def test_torch_optimizer_round_trip_continues_identically(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    adapter = get_adapter("torch")
    batches = _digits_batches(4)

    def build(seed: int) -> tuple[Any, Any]:
        model = _torch_net(seed)
        head = list(model.head.parameters())
        rest = [p for n, p in model.named_parameters() if not n.startswith("head.")]
        optimizer = torch.optim.Adam(
            [{"params": rest}, {"params": head, "lr": 3e-3}], lr=1e-3, betas=(0.8, 0.99)
        )
        return model, optimizer

    model, optimizer = build(seed=0)
    for batch in batches[:3]:
        _train_step(model, optimizer, batch)
    assert state_adapter_for(optimizer) is adapter
    model_info = adapter.save_state(model, tmp_path, "model")
    info = adapter.save_state(optimizer, tmp_path, "optimizer")
    json.dumps(info)
    assert info["files"] == ["optimizer.safetensors", "optimizer.json"]
    document = json.loads((tmp_path / "optimizer.json").read_text())
    assert document["state_dict"]["param_groups"][1]["lr"] == 3e-3

    fresh_model, fresh_optimizer = build(seed=1)
    adapter.load_state(fresh_model, tmp_path, model_info)
    assert adapter.load_state(fresh_optimizer, tmp_path, info) is fresh_optimizer
    assert fresh_optimizer.param_groups[0]["betas"] == (0.8, 0.99)
    assert sorted(fresh_optimizer.state_dict()["state"]) == sorted(optimizer.state_dict()["state"])

    _train_step(model, optimizer, batches[3])
    _train_step(fresh_model, fresh_optimizer, batches[3])
    for (name, p), q in zip(model.named_parameters(), fresh_model.parameters(), strict=True):
        assert torch.equal(p, q), name


def test_torch_state_of_another_kind_is_refused(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    adapter = get_adapter("torch")
    model = _torch_net(seed=0)
    info = adapter.save_state(model, tmp_path, "model")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ObjectError, match="is a SGD"):
        adapter.load_state(optimizer, tmp_path, info)
    with pytest.raises(ObjectError, match=r"cannot load state of format 'sklearn\.skops'"):
        adapter.load_state(model, tmp_path, {"format": "sklearn.skops", "files": ["m.skops"]})
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ObjectError, match="Cannot read the torch state file"):
        adapter.load_state(model, tmp_path, info)
    with pytest.raises(ObjectError, match="should name one"):
        adapter.load_state(model, tmp_path, {**info, "files": ["../model.safetensors"]})


# --- scikit-learn ---------------------------------------------------------------------


def test_sklearn_logistic_regression_round_trip(tmp_path: Path) -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    x, y = _iris()
    model = linear_model.LogisticRegression(max_iter=500).fit(x, y)
    adapter = state_adapter_for(model)
    assert adapter is get_adapter("sklearn")
    info = adapter.save_state(model, tmp_path, "clf")
    json.dumps(info)
    assert info["files"] == ["clf.skops"]
    loaded = adapter.load_state(linear_model.LogisticRegression(max_iter=500), tmp_path, info)
    assert type(loaded) is type(model)
    assert loaded is not model
    assert np.array_equal(loaded.predict_proba(x), model.predict_proba(x))


def test_sklearn_pipeline_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    def build() -> Any:
        return Pipeline(
            [("scale", StandardScaler()), ("forest", RandomForestClassifier(20, random_state=0))]
        )

    x, y = _digits()
    model = build().fit(x, y)
    adapter = get_adapter("sklearn")
    info = adapter.save_state(model, tmp_path, "pipe")
    # skops does not trust sklearn.tree._tree.Tree by default; the allowlist admits it.
    loaded = adapter.load_state(build(), tmp_path, info)
    assert np.array_equal(loaded.predict_proba(x), model.predict_proba(x))


def test_sklearn_untrusted_function_is_refused_unless_trusted(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, y = _iris()
    model = make_pipeline(FunctionTransformer(add_one), LogisticRegression(max_iter=500))
    model.fit(x, y)
    adapter = get_adapter("sklearn")
    info = adapter.save_state(model, tmp_path, "pipe")
    with pytest.raises(ObjectError, match=r"(?s)add_one.*HINT: if you trust this file.*trust=True"):
        adapter.load_state(None, tmp_path, info)
    loaded = adapter.load_state(None, tmp_path, info, trust=True)
    assert loaded.steps[0][1].func is add_one
    assert np.array_equal(loaded.predict_proba(x), model.predict_proba(x))


@pytest.mark.parametrize(
    ("name", "admitted"),
    [
        ("sklearn.tree._tree.Tree", True),
        ("numpy.dtype", True),
        ("scipy.sparse._csr.csr_matrix", True),
        ("numpy.load", False),  # a function, even from an allowed package
        ("builtins.eval", False),
        ("sklearnx.Model", False),
        ("sklearn.NoSuchThing", False),
        ("numpy.f2py.__main__.main", False),  # importing it would run f2py
    ],
)
def test_sklearn_allowlist_admits_only_classes_of_safe_packages(name: str, admitted: bool) -> None:
    sklearn_adapter = pytest.importorskip("forgeml.frameworks.sklearn")
    assert sklearn_adapter._is_safe_class(name) is admitted


def test_sklearn_state_of_another_estimator_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    x, y = _iris()
    adapter = get_adapter("sklearn")
    info = adapter.save_state(DecisionTreeClassifier().fit(x, y), tmp_path, "m")
    with pytest.raises(
        ObjectError, match=r"holds a sklearn\.tree\._classes:DecisionTreeClassifier"
    ):
        adapter.load_state(LogisticRegression(), tmp_path, info)


# --- xgboost --------------------------------------------------------------------------


def test_xgboost_booster_round_trip(tmp_path: Path) -> None:
    xgb = pytest.importorskip("xgboost")
    x, y = _iris()
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 2}
    booster = xgb.train(params, xgb.DMatrix(x, y), num_boost_round=5)
    adapter = state_adapter_for(booster)
    assert adapter is get_adapter("xgboost")
    info = adapter.save_state(booster, tmp_path, "trees")
    json.dumps(info)
    assert info["files"] == ["trees.ubj"]
    fresh = xgb.Booster()
    assert adapter.load_state(fresh, tmp_path, info) is fresh
    assert np.array_equal(fresh.predict(xgb.DMatrix(x)), booster.predict(xgb.DMatrix(x)))


def test_xgboost_classifier_round_trip(tmp_path: Path) -> None:
    xgb = pytest.importorskip("xgboost")
    pytest.importorskip("sklearn")
    x, y = _iris()
    model = xgb.XGBClassifier(n_estimators=5, max_depth=2, learning_rate=0.5).fit(x, y)
    # An XGBClassifier is also a scikit-learn estimator: the more specific adapter wins.
    assert state_adapter_for(model) is get_adapter("xgboost")
    adapter = get_adapter("xgboost")
    info = adapter.save_state(model, tmp_path, "clf")
    json.dumps(info)
    assert info["files"] == ["clf.ubj", "clf.json"]
    assert info["class"] == "xgboost.sklearn:XGBClassifier"

    rebuilt = adapter.load_state(None, tmp_path, info)  # rebuilt from the saved class + params
    assert type(rebuilt) is xgb.XGBClassifier
    assert rebuilt.get_params()["n_estimators"] == 5
    assert np.array_equal(rebuilt.predict_proba(x), model.predict_proba(x))

    fresh = xgb.XGBClassifier(n_estimators=5, max_depth=2, learning_rate=0.5)
    assert adapter.load_state(fresh, tmp_path, info) is fresh  # in place
    assert np.array_equal(fresh.predict_proba(x), model.predict_proba(x))


def test_xgboost_unfitted_model_keeps_its_parameters(tmp_path: Path) -> None:
    xgb = pytest.importorskip("xgboost")
    adapter = get_adapter("xgboost")
    info = adapter.save_state(xgb.XGBRegressor(max_depth=3, missing=-1.0), tmp_path, "reg")
    assert info["files"] == ["reg.json"]
    assert info["fitted"] is False
    loaded = adapter.load_state(None, tmp_path, info)
    assert type(loaded) is xgb.XGBRegressor
    assert loaded.get_params()["max_depth"] == 3
    assert loaded.get_params()["missing"] == -1.0
    assert not loaded.__sklearn_is_fitted__()


def test_xgboost_foreign_model_class_needs_trust(tmp_path: Path) -> None:
    pytest.importorskip("xgboost")
    adapter = get_adapter("xgboost")
    document = {"format": "xgboost.sklearn.ubj+json", "class": "os:system", "params": {}}
    (tmp_path / "m.json").write_text(json.dumps({**document, "fitted": False}))
    info = {"format": "xgboost.sklearn.ubj+json", "files": ["m.json"]}
    with pytest.raises(ObjectError, match=r"(?s)os:system is not part of xgboost.*trust=True"):
        adapter.load_state(None, tmp_path, info)
    with pytest.raises(ObjectError, match=r"is not an xgboost\.XGBModel"):
        adapter.load_state(None, tmp_path, info, trust=True)


# --- keras ----------------------------------------------------------------------------


def _keras() -> Any:
    # The adapter picks a backend that is installed (torch here) before Keras is imported.
    pytest.importorskip("forgeml.frameworks.keras")
    import keras

    return keras


def _keras_model(seed: int, width: int = 8) -> Any:
    keras = _keras()
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(shape=(4,)),
            keras.layers.Dense(width, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def test_keras_model_round_trip(tmp_path: Path) -> None:
    _keras()
    x, y = _iris()
    x = x.astype("float32")
    model = _keras_model(seed=0)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    adapter = state_adapter_for(model)
    # On the torch backend a Keras model is also a torch.nn.Module: keras is more specific.
    assert adapter is get_adapter("keras")
    info = adapter.save_state(model, tmp_path, "net")
    json.dumps(info)
    assert info["files"] == ["net.weights.h5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.weights.h5"]

    fresh = _keras_model(seed=1)
    assert not np.array_equal(fresh.predict(x, verbose=0), model.predict(x, verbose=0))
    assert adapter.load_state(fresh, tmp_path, info) is fresh
    assert np.array_equal(fresh.predict(x, verbose=0), model.predict(x, verbose=0))


def test_keras_layer_round_trip_and_refusals(tmp_path: Path) -> None:
    keras = _keras()
    adapter = get_adapter("keras")
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    info = adapter.save_state(layer, tmp_path, "dense")
    fresh = keras.layers.Dense(3)
    fresh.build((None, 4))
    adapter.load_state(fresh, tmp_path, info)
    for a, b in zip(fresh.get_weights(), layer.get_weights(), strict=True):
        assert np.array_equal(a, b)

    unbuilt = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(
        ObjectError, match=r"(?s)not built.*HINT: build it in __init__.*keras\.Input"
    ):
        adapter.load_state(unbuilt, tmp_path, info)
    with pytest.raises(ObjectError, match="not built"):
        adapter.save_state(unbuilt, tmp_path, "unbuilt")

    model_info = adapter.save_state(_keras_model(seed=0, width=8), tmp_path, "net")
    with pytest.raises(ObjectError, match=r"(?s)do not fit Sequential.*HINT: build the model"):
        adapter.load_state(_keras_model(seed=0, width=5), tmp_path, model_info)
