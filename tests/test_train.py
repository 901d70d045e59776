"""forgeml.train on digits: components as definitions, reproducible fits, checkpoints, pipes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from forgeml import ObjectDef, TrainError, load_object, save_object
from forgeml.data import NumpyDataset
from forgeml.eval import load_bundled
from forgeml.metrics import compute
from forgeml.train import (
    CNN,
    MLP,
    Callback,
    EpochLoop,
    Estimator,
    Fit,
    Loss,
    Optimizer,
    Pipe,
    ReportCallback,
    StopTraining,
    TrackCallback,
    Trainable,
    TrainResult,
)

Data = tuple[Any, Any]


@pytest.fixture(scope="module")
def digits() -> Data:
    """The bundled digits split: 1347 training and 450 test images, 8x8 in [0, 1]."""
    train, test = load_bundled("digits:train"), load_bundled("digits")
    return (
        NumpyDataset((train.x.astype(np.float32) / 16, train.y), supervised=True),
        NumpyDataset((test.x.astype(np.float32) / 16, test.y), supervised=True),
    )


def mlp(epochs: int = 3, **loop: Any) -> ObjectDef:
    return ObjectDef(
        Trainable,
        model=ObjectDef(MLP, hidden=[32]),
        optimizer=ObjectDef(Optimizer, "Adam", lr=1e-2),
        loss=ObjectDef(Loss, "cross_entropy"),
        procedure=ObjectDef(EpochLoop, epochs=epochs, batch_size=64, **loop),
    )


def weights(trainable: Trainable) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in trainable.net.state_dict().items()}


# --------------------------------------------------------------------------- torch


def test_torch_fit_is_reproducible_from_definition_and_seed(digits: Data) -> None:
    train, test = digits
    first = mlp().build()
    result = first.fit(train, test, seed=3)
    assert isinstance(result, TrainResult)
    assert result.framework == "torch"
    assert result.epochs == 3
    assert result.monitor == "val_loss"
    assert result.mode == "min"
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert set(result.history[0]) == {"epoch", "loss", "val_loss", "val_accuracy"}
    assert result.best_value == min(row["val_loss"] for row in result.history)
    score = first.evaluate(test)
    assert score["accuracy"] > 0.9
    assert score["accuracy"] == result.last["val_accuracy"]

    again = first.definition().build()  # the definition rebuilds it untrained
    assert again.fit(train, test, seed=3).history == result.history
    assert all(
        np.array_equal(a, b)
        for a, b in zip(weights(first).values(), weights(again).values(), strict=True)
    )
    assert again.evaluate(test) == score

    other = mlp().build()
    other.fit(train, test, seed=4)
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(weights(first).values(), weights(other).values(), strict=True)
    )


def test_save_and_load_keep_the_trained_weights(digits: Data, tmp_path: Path) -> None:
    train, test = digits
    trainable = mlp(epochs=2).build()
    trainable.fit(train, test, seed=0)
    path = tmp_path / "mlp.dry"
    assert save_object(trainable, path)
    loaded = load_object(path)
    assert isinstance(loaded, Trainable)
    assert loaded.fitted
    assert loaded.result is not None
    assert loaded.result.history == trainable.result.history
    metrics = ["accuracy", "f1", "confusion_matrix"]
    assert loaded.evaluate(test, metrics) == trainable.evaluate(test, metrics)
    np.testing.assert_array_equal(loaded.predict(test), trainable.predict(test))
    assert loaded.definition() == trainable.definition()
    untrained = loaded.definition().build()
    assert not untrained.fitted
    assert untrained.evaluate(test)["accuracy"] < 0.5


def test_a_small_cnn_trains_and_continues_without_a_seed(digits: Data) -> None:
    train, test = digits
    cnn = Trainable(
        model=ObjectDef(CNN, channels=[8, 16], hidden=32),
        procedure=ObjectDef(EpochLoop, epochs=1, batch_size=32),
    )
    cnn.fit(train, seed=0)
    once = cnn.evaluate(test)["accuracy"]
    result = cnn.fit(train)  # no seed: continues from the current weights
    assert result.monitor == "loss"  # no validation data
    assert cnn.evaluate(test)["accuracy"] > once + 0.1


def test_early_stopping_and_restore_best(digits: Data) -> None:
    train, test = digits
    trainable = mlp(
        epochs=8, monitor="val_accuracy", patience=1, min_delta=0.5, restore_best=True
    ).build()
    result = trainable.fit(train, test, seed=0)
    assert result.early_stopped
    assert not result.stopped
    assert result.epochs == 2
    assert result.best_epoch == 1
    assert result.mode == "max"
    # the best (first) epoch's weights are back
    assert trainable.evaluate(test)["accuracy"] == result.history[0]["val_accuracy"]


def test_a_reporter_prunes_with_stop_training(digits: Data) -> None:
    train, test = digits
    seen: list[tuple[int, dict[str, float]]] = []

    def report(epoch: int, metrics: dict[str, float]) -> None:
        seen.append((epoch, metrics))
        if epoch == 2:
            raise StopTraining("pruned by the median rule")

    class Ends(Callback):
        result: TrainResult | None = None

        def on_train_end(self, result: TrainResult) -> None:
            self.result = result

    ends = Ends()
    trainable = Trainable(
        model=ObjectDef(MLP, hidden=[16]),
        procedure=ObjectDef(EpochLoop, epochs=10, batch_size=128),
        callbacks=[ReportCallback(report)],
    )
    result = trainable.fit(train, test, seed=0, callbacks=[ends])
    assert result.stopped
    assert result.stop_reason == "pruned by the median rule"
    assert result.epochs == 2
    assert [e for e, _ in seen] == [1, 2]
    assert seen[0][1].keys() == {"loss", "val_loss", "val_accuracy"}
    assert ends.result is result
    # a ReportCallback holds a function: it is not part of the definition
    assert "callbacks" not in trainable.definition().kwargs
    assert len(trainable.definition().build().callbacks) == 0


def test_checkpoints_and_resume_give_the_uninterrupted_result(digits: Data, tmp_path: Path) -> None:
    train, test = digits
    whole = mlp(epochs=4).build()
    expected = whole.fit(train, test, seed=7)

    folder = tmp_path / "ckpt"
    interrupted = mlp(epochs=2, checkpoint_dir=str(folder)).build()
    interrupted.fit(train, test, seed=7)  # "killed" after two epochs
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["best", "epoch-0001", "epoch-0002"]
    assert sorted(p.name for p in (folder / "epoch-0002").iterdir()) == [
        "model.safetensors",
        "optimizer.json",
        "optimizer.safetensors",
        "rng.safetensors",
        "state.json",
    ]
    state = json.loads((folder / "best" / "state.json").read_text())
    assert state["epoch"] == state["progress"]["best_epoch"]

    resumed = mlp(epochs=4, checkpoint_dir=str(folder), resume=True).build()
    result = resumed.fit(train, test, seed=7)
    assert result.history == expected.history
    assert all(
        np.array_equal(a, b)
        for a, b in zip(weights(whole).values(), weights(resumed).values(), strict=True)
    )
    assert (folder / "epoch-0004").is_dir()

    # restore_best after resuming: the best epoch (the least accurate: mode="min") came before
    other = tmp_path / "other"
    worst = {"monitor": "val_accuracy", "mode": "min", "checkpoint_dir": str(other)}
    mlp(epochs=2, **worst).build().fit(train, test, seed=7)
    restored = mlp(epochs=3, resume=True, restore_best=True, **worst).build()
    result = restored.fit(train, test, seed=7)
    assert result.best_epoch == 1
    assert result.history[0]["val_accuracy"] < result.history[-1]["val_accuracy"]
    assert restored.evaluate(test)["accuracy"] == result.history[0]["val_accuracy"]


def test_resume_takes_the_highest_epoch_by_number(tmp_path: Path) -> None:
    from forgeml.frameworks._train_torch import _latest_checkpoint

    assert _latest_checkpoint(tmp_path) is None
    for name in ("epoch-0002", "epoch-9999", "epoch-10000", "epoch-10001", "epoch-x"):
        (tmp_path / name).mkdir()
        if name != "epoch-10001":  # an incomplete checkpoint has no state.json yet
            (tmp_path / name / "state.json").write_text("{}")
    latest = _latest_checkpoint(tmp_path)
    assert latest is not None
    assert latest.name == "epoch-10000"  # a sort by name would pick epoch-9999


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_a_gpu_device_without_a_gpu_says_so(digits: Data) -> None:
    train, _ = digits
    on_gpu = Trainable(model=ObjectDef(MLP), procedure=ObjectDef(EpochLoop, device="cuda"))
    with pytest.raises(TrainError, match=r"needs a CUDA GPU, and torch sees none here"):
        on_gpu.fit(train)
    on_cpu = Trainable(model=ObjectDef(MLP), procedure=ObjectDef(EpochLoop, epochs=1, device="cpu"))
    assert on_cpu.fit(train).epochs == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (none here)")
def test_training_on_a_gpu_saves_and_resumes(digits: Data, tmp_path: Path) -> None:
    train, test = digits
    whole = mlp(epochs=4, device="cuda").build()
    expected = whole.fit(train, test, seed=5)
    assert next(whole.net.parameters()).device.type == "cuda"
    assert expected.last["val_accuracy"] > 0.9
    folder = tmp_path / "ckpt"
    mlp(epochs=2, device="cuda", checkpoint_dir=str(folder)).build().fit(train, test, seed=5)
    resumed = mlp(epochs=4, device="cuda", checkpoint_dir=str(folder), resume=True).build()
    assert resumed.fit(train, test, seed=5).history == expected.history
    save_object(whole, tmp_path / "gpu.dry")
    on_cpu = load_object(tmp_path / "gpu.dry")  # rebuilt on the CPU, the weights copied in
    assert next(on_cpu.net.parameters()).device.type == "cpu"
    assert on_cpu.evaluate(test)["accuracy"] == pytest.approx(
        expected.last["val_accuracy"], abs=0.005
    )


# --------------------------------------------------------------------------- sklearn, xgboost


def sgd(epochs: int = 4, **fit: Any) -> ObjectDef:
    return ObjectDef(
        Trainable,
        model=ObjectDef(Estimator, "sklearn.linear_model:SGDClassifier", loss="log_loss"),
        procedure=ObjectDef(Fit, epochs=epochs, batch_size=256, **fit),
    )


def test_sklearn_fit_is_reproducible_and_epochs_use_partial_fit(digits: Data) -> None:
    train, test = digits
    first = sgd().build()
    result = first.fit(train, test, seed=1)
    assert result.framework == "sklearn"
    assert result.epochs == 4
    assert result.monitor == "val_accuracy"
    assert result.mode == "max"
    assert set(result.history[0]) == {"epoch", "accuracy", "val_accuracy"}
    again = first.definition().build()
    assert again.fit(train, test, seed=1).history == result.history
    np.testing.assert_array_equal(first.net.coef_, again.net.coef_)
    other = sgd().build()
    other.fit(train, test, seed=2)
    assert not np.array_equal(first.net.coef_, other.net.coef_)
    assert first.evaluate(test)["accuracy"] == result.last["val_accuracy"]


def test_sklearn_and_torch_are_scored_on_the_same_footing(digits: Data, tmp_path: Path) -> None:
    train, test = digits
    forest = Trainable(
        model=ObjectDef(
            Estimator, "sklearn.ensemble:RandomForestClassifier", n_estimators=20, max_depth=8
        )
    )
    forest.fit(train, test, seed=0)
    x, y = test.numpy().peek()
    names = ["accuracy", "f1", "top3_accuracy"]
    expected = compute(y, forest.net.predict_proba(x.reshape(len(x), -1)), names)
    assert forest.evaluate(test, names) == expected
    assert forest.evaluate(test.torch(), names) == expected
    assert expected["accuracy"] > 0.85
    save_object(forest, tmp_path / "forest.dry")
    assert load_object(tmp_path / "forest.dry").evaluate(test, names) == expected


def test_xgboost_through_the_estimator(digits: Data, tmp_path: Path) -> None:
    train, test = digits
    booster = Trainable(
        model=ObjectDef(Estimator, "xgboost:XGBClassifier", n_estimators=15, max_depth=3)
    )
    result = booster.fit(train, test, seed=0)
    assert result.framework == "xgboost"
    assert result.last["val_accuracy"] > 0.85
    save_object(booster, tmp_path / "xgb.dry")
    assert load_object(tmp_path / "xgb.dry").evaluate(test) == booster.evaluate(test)


# --------------------------------------------------------------------------- pipes


def test_a_pipe_chains_sklearn_into_torch(digits: Data, tmp_path: Path) -> None:
    train, test = digits
    pipe = Pipe(
        ObjectDef(Trainable, model=ObjectDef(Estimator, "sklearn.preprocessing:StandardScaler")),
        ObjectDef(
            Trainable, model=ObjectDef(Estimator, "sklearn.decomposition:PCA", n_components=24)
        ),
        ObjectDef(
            Trainable,
            model=ObjectDef(MLP, inputs=24, hidden=[32]),
            optimizer=ObjectDef(Optimizer, "Adam", lr=1e-2),
            procedure=ObjectDef(EpochLoop, epochs=4, batch_size=64),
        ),
    )
    result = pipe.fit(train, test, seed=0)
    assert [stage.framework for stage in result.stages] == ["sklearn", "sklearn", "torch"]
    assert result.history == result.stages[-1].history
    assert result.monitor == "val_loss"
    score = pipe.evaluate(test, ["accuracy", "f1"])
    assert score["accuracy"] == result.last["val_accuracy"] > 0.85
    assert pipe.predict(test).shape == (450, 10)
    x = test.numpy().peek()[0]
    np.testing.assert_array_equal(pipe.predict(x), pipe.predict(test))

    save_object(pipe, tmp_path / "pipe.dry")
    loaded = load_object(tmp_path / "pipe.dry")
    assert loaded.evaluate(test, ["accuracy", "f1"]) == score
    rebuilt = pipe.definition().build()
    rebuilt.fit(train, test, seed=0)
    assert rebuilt.evaluate(test, ["accuracy", "f1"]) == score


# --------------------------------------------------------------------------- tracking


@pytest.mark.slow
def test_track_callback_logs_every_epoch(digits: Data, tmp_path: Path) -> None:
    from forgeml import track

    train, test = digits
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    trainable = Trainable(
        model=ObjectDef(Estimator, "sklearn.linear_model:SGDClassifier", loss="log_loss"),
        procedure=ObjectDef(Fit, epochs=3),
        callbacks=[ObjectDef(TrackCallback, prefix="digits/")],
    )
    with track.start_run("train-test", uri=uri, log_system=False, log_output=False) as run:
        trainable.fit(train, test, seed=0)
    history = track.get_metrics(run.run_id, uri=uri)
    assert [p.step for p in history["digits/val_accuracy"]] == [1, 2, 3]
    assert [p.value for p in history["digits/accuracy"]] == [
        row["accuracy"]
        for row in trainable.result.history  # type: ignore[union-attr]
    ]
    # a TrackCallback is an Object: it stays in the definition
    kept = trainable.definition().kwargs["callbacks"]
    assert kept == (ObjectDef(TrackCallback, prefix="digits/"),)
    assert isinstance(trainable.definition().build().callbacks[0], TrackCallback)


# --------------------------------------------------------------------------- keras


@pytest.mark.slow
def test_keras_fit_with_early_stopping_and_archive(digits: Data, tmp_path: Path) -> None:
    from forgeml.train import KerasMLP

    train, test = digits
    definition = ObjectDef(
        Trainable,
        model=ObjectDef(KerasMLP, inputs=[8, 8], hidden=[32]),
        optimizer=ObjectDef(Optimizer, "Adam", lr=1e-2),
        procedure=ObjectDef(Fit, epochs=6, batch_size=64, patience=1, min_delta=0.5),
    )
    keras_model = definition.build()
    result = keras_model.fit(train, test, seed=0)
    assert result.framework == "keras"
    assert result.early_stopped
    assert result.epochs == 2
    assert set(result.history[0]) == {"epoch", "loss", "val_loss", "val_accuracy"}
    score = keras_model.evaluate(test.tf())
    assert score["accuracy"] == result.last["val_accuracy"] > 0.8
    save_object(keras_model, tmp_path / "keras.dry")
    assert load_object(tmp_path / "keras.dry").evaluate(test) == score


# --------------------------------------------------------------------------- errors


def test_errors_say_what_was_wrong_and_the_fix(digits: Data) -> None:
    train, _ = digits
    with pytest.raises(TrainError, match="must be an ObjectDef"):
        Trainable(model=MLP)
    with pytest.raises(TrainError, match="is not a model forgeml can train"):
        Trainable(model=ObjectDef(Optimizer))
    with pytest.raises(TrainError, match=r"epochs must be a positive integer\. Got 0"):
        EpochLoop(epochs=0)
    with pytest.raises(TrainError, match="needs checkpoint_dir"):
        EpochLoop(resume=True)
    with pytest.raises(TrainError, match=r"Unknown metric 'acc'"):
        Fit(metrics=["acc"])
    with pytest.raises(TrainError, match="cannot import"):
        Estimator("sklearn.linear_model:Nope")
    with pytest.raises(TrainError, match=r"Unknown torch optimizer 'Adamm'.*Did you mean 'Adam'"):
        Trainable(model=ObjectDef(MLP), optimizer=ObjectDef(Optimizer, "Adamm")).fit(train)
    with pytest.raises(TrainError, match=r"Unknown loss 'cross_entropi'.*Did you mean"):
        Trainable(model=ObjectDef(MLP), loss=ObjectDef(Loss, "cross_entropi")).fit(train)
    with pytest.raises(TrainError, match="torch modules train with the EpochLoop"):
        Trainable(model=ObjectDef(MLP), procedure=ObjectDef(Fit)).fit(train)
    logreg = ObjectDef(Estimator, "sklearn.linear_model:LogisticRegression")
    with pytest.raises(TrainError, match="needs an estimator with partial_fit"):
        Trainable(model=logreg, procedure=ObjectDef(Fit, epochs=3)).fit(train)
    with pytest.raises(TrainError, match="does not apply to LogisticRegression"):
        Trainable(model=logreg, optimizer=ObjectDef(Optimizer)).fit(train)
    with pytest.raises(TrainError, match="must be supervised"):
        Trainable(model=logreg).fit(NumpyDataset(np.zeros((4, 2))))
    with pytest.raises(TrainError, match="monitored metric 'val_f1' is not among"):
        Trainable(
            model=ObjectDef(MLP), procedure=ObjectDef(EpochLoop, epochs=1, monitor="val_f1")
        ).fit(train)
    with pytest.raises(TrainError, match="Stage 0 of the Pipe"):
        Pipe(ObjectDef(MLP))
    assert torch.get_num_threads() >= 1  # threads="auto" restored torch's setting
