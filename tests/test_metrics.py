"""forgeml.metrics: the numbers of scikit-learn, the same on numpy, torch and TensorFlow data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import sklearn.metrics as skm

from forgeml import TrainError
from forgeml.data import NumpyDataset
from forgeml.metrics import (
    MetricSet,
    accuracy,
    compute,
    confusion_matrix,
    evaluate,
    f1,
    mae,
    mse,
    precision,
    r2,
    recall,
    rmse,
    top_k_accuracy,
)

CLASSES = 7


@pytest.fixture(scope="module")
def classes() -> tuple[np.ndarray, np.ndarray]:
    """Targets and class scores; class 6 never occurs in the targets (sklearn's label rule)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, CLASSES - 1, size=300)
    scores = rng.random((300, CLASSES)).astype(np.float32)
    scores[np.arange(300), y] += rng.random(300) * 0.9  # mostly right
    return y, scores


@pytest.fixture(scope="module")
def values() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    y = rng.normal(3.0, 2.0, size=200)
    return y, y + rng.normal(0, 0.5, size=200)


ALL_CLASSIFICATION = [
    "accuracy",
    "top3_accuracy",
    "precision",
    "recall",
    "f1",
    "precision_micro",
    "recall_weighted",
    "f1_weighted",
    "f1_micro",
    "confusion_matrix",
]


def sklearn_classification(y: np.ndarray, scores: np.ndarray) -> dict[str, object]:
    pred = scores.argmax(1)
    return {
        "accuracy": skm.accuracy_score(y, pred),
        "top3_accuracy": skm.top_k_accuracy_score(y, scores, k=3, labels=range(CLASSES)),
        "precision": skm.precision_score(y, pred, average="macro", zero_division=0),
        "recall": skm.recall_score(y, pred, average="macro", zero_division=0),
        "f1": skm.f1_score(y, pred, average="macro", zero_division=0),
        "precision_micro": skm.precision_score(y, pred, average="micro", zero_division=0),
        "recall_weighted": skm.recall_score(y, pred, average="weighted", zero_division=0),
        "f1_weighted": skm.f1_score(y, pred, average="weighted", zero_division=0),
        "f1_micro": skm.f1_score(y, pred, average="micro", zero_division=0),
        "confusion_matrix": skm.confusion_matrix(y, pred, labels=range(CLASSES)).tolist(),
    }


def assert_same(ours: dict[str, object], theirs: dict[str, object]) -> None:
    assert ours.keys() == theirs.keys()
    for name, value in theirs.items():
        if name == "confusion_matrix":
            assert ours[name] == value
        else:
            assert ours[name] == pytest.approx(value, abs=1e-12), name


def test_classification_matches_scikit_learn(classes: tuple[np.ndarray, np.ndarray]) -> None:
    y, scores = classes
    ours = compute(y, scores, ALL_CLASSIFICATION)
    assert_same(ours, sklearn_classification(y, scores))
    assert ours["accuracy"] < 1  # the data has errors to count


def test_class_indices_score_like_scores(classes: tuple[np.ndarray, np.ndarray]) -> None:
    y, scores = classes
    names = ["accuracy", "f1", "precision_weighted", "confusion_matrix"]
    from_indices = compute(y, scores.argmax(1), names)
    from_floats = compute(y.astype(np.float64), scores.argmax(1).astype(np.float32), names)
    assert from_indices == compute(y, scores, names) == from_floats


def test_num_classes_counts_absent_classes_in_macro_averages() -> None:
    y, pred = np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2])
    ours = f1(y, pred, num_classes=5)
    assert ours == pytest.approx(
        skm.f1_score(y, pred, average="macro", labels=range(5), zero_division=0)
    )
    assert f1(y, pred) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert confusion_matrix(y, pred, num_classes=4).shape == (4, 4)


def test_the_functions(
    classes: tuple[np.ndarray, np.ndarray], values: tuple[np.ndarray, np.ndarray]
) -> None:
    y, scores = classes
    pred = scores.argmax(1)
    assert accuracy(y, scores) == pytest.approx(skm.accuracy_score(y, pred))
    assert top_k_accuracy(y, scores, k=2) == pytest.approx(
        skm.top_k_accuracy_score(y, scores, k=2, labels=range(CLASSES))
    )
    assert precision(y, pred, average="weighted") == pytest.approx(
        skm.precision_score(y, pred, average="weighted", zero_division=0)
    )
    assert recall(y, pred, average="micro") == pytest.approx(
        skm.recall_score(y, pred, average="micro")
    )
    np.testing.assert_array_equal(confusion_matrix(y, pred), skm.confusion_matrix(y, pred))
    t, p = values
    assert mae(t, p) == pytest.approx(skm.mean_absolute_error(t, p))
    assert mse(t, p) == pytest.approx(skm.mean_squared_error(t, p))
    assert rmse(t, p) == pytest.approx(np.sqrt(skm.mean_squared_error(t, p)))
    assert r2(t, p) == pytest.approx(skm.r2_score(t, p))
    assert r2(t, p[:, None]) == pytest.approx(skm.r2_score(t, p))  # a column of values
    assert r2([2.0, 2.0], [2.0, 2.0]) == 1.0  # constant targets, as scikit-learn
    assert top_k_accuracy(y, scores, k=CLASSES + 3) == 1.0


def test_streaming_gives_the_numbers_of_the_whole_set(
    classes: tuple[np.ndarray, np.ndarray], values: tuple[np.ndarray, np.ndarray]
) -> None:
    y, scores = classes
    stream = MetricSet(ALL_CLASSIFICATION)
    for start in range(0, len(y), 37):  # the last batch is short; early ones lack classes
        stream.update(y[start : start + 37], scores[start : start + 37])
    assert_same(stream.result(), sklearn_classification(y, scores))
    t, p = values
    regression = MetricSet(["mae", "mse", "rmse", "r2"])
    for start in range(0, len(t), 64):
        regression.update(t[start : start + 64], p[start : start + 64])
    whole = compute(t, p, ["mae", "mse", "rmse", "r2"])
    assert regression.result() == pytest.approx(whole)
    assert whole["r2"] == pytest.approx(skm.r2_score(t, p))
    stream.reset()
    with pytest.raises(TrainError, match="No samples were scored"):
        stream.result()


def test_datasets_of_numpy_and_torch_score_the_same(
    classes: tuple[np.ndarray, np.ndarray], values: tuple[np.ndarray, np.ndarray]
) -> None:
    t, p = values
    regression = ["mae", "mse", "rmse", "r2"]
    by_value = NumpyDataset((p, t), supervised=True).batch(30)
    assert evaluate(by_value.torch(), regression) == pytest.approx(compute(t, p, regression))
    assert evaluate(by_value, regression) == pytest.approx(compute(t, p, regression))
    y, scores = classes
    names = ["accuracy", "top3_accuracy", "f1", "confusion_matrix"]
    expected = compute(y, scores, names)
    batched = NumpyDataset((scores, y), supervised=True).batch(50)
    assert evaluate(batched, names) == expected
    assert evaluate(batched.torch(), names) == expected
    unbatched = NumpyDataset((scores, y), supervised=True, batched=False)
    assert evaluate(unbatched.torch(), names) == expected
    # with a predict function: elements are (x, y) and the outputs are predict(x)
    features = NumpyDataset((scores * 2, y), supervised=True).batch(64)
    assert evaluate(features.torch(), names, predict=lambda x: x.numpy() / 2) == expected
    import torch

    assert accuracy(torch.as_tensor(y), torch.as_tensor(scores)) == expected["accuracy"]


@pytest.mark.slow
def test_tensorflow_datasets_score_the_same(
    classes: tuple[np.ndarray, np.ndarray], values: tuple[np.ndarray, np.ndarray]
) -> None:
    y, scores = classes
    names = ["accuracy", "top3_accuracy", "precision", "recall", "f1", "confusion_matrix"]
    batched = NumpyDataset((scores, y), supervised=True).batch(40)
    assert evaluate(batched.tf(), names) == compute(y, scores, names)
    t, p = values
    tf_values = NumpyDataset((p, t), supervised=True).batch(30).tf()
    assert evaluate(tf_values, ["mae", "rmse", "r2"]) == pytest.approx(
        compute(t, p, ["mae", "rmse", "r2"])
    )


def test_one_score_per_sample_is_a_binary_output() -> None:
    y = np.array([0, 1, 1, 0, 1])
    probabilities = np.array([0.1, 0.9, 0.4, 0.6, 0.51])  # class 1 above 0.5
    logits = np.array([[-2.0], [3.0], [-0.1], [0.2], [0.02]])  # a column; class 1 above 0
    predicted = np.array([0, 1, 0, 1, 1])
    expected = {
        "accuracy": skm.accuracy_score(y, predicted),
        "f1": skm.f1_score(y, predicted, average="macro"),
        "confusion_matrix": skm.confusion_matrix(y, predicted).tolist(),
    }
    for outputs in (probabilities, logits, probabilities.astype(np.float32)):
        result = compute(y, outputs, list(expected))
        assert result["confusion_matrix"] == expected["confusion_matrix"]
        assert (result["accuracy"], result["f1"]) == pytest.approx(
            (expected["accuracy"], expected["f1"])
        )
    assert accuracy(y, probabilities) == pytest.approx(0.6)
    assert accuracy([0, 1], [-3.0, 2.0]) == 1.0  # whole numbers, but a negative one: logits
    assert accuracy([0, 1], [0.0, 1.0]) == 1.0  # whole numbers >= 0: class indices, as before
    streamed = MetricSet("accuracy")  # each batch read alone: probabilities, then logits
    streamed.update(y[:2], probabilities[:2])
    streamed.update(y[2:], logits[2:])
    assert streamed.result()["accuracy"] == pytest.approx(0.6)


def test_errors_say_what_and_how_to_fix() -> None:
    with pytest.raises(TrainError, match=r"Unknown metric 'acuracy'.*Did you mean 'accuracy'\?"):
        compute([0], [0], "acuracy")
    with pytest.raises(TrainError, match=r"\(e\.g\. 0\.2\)\. .*only for 0/1 targets.*class 2"):
        compute([0, 2], [0.2, 0.7], "accuracy")  # one value per sample, not a binary task
    with pytest.raises(TrainError, match="non-finite value"):
        compute([0, 1], [0.2, np.nan], "accuracy")
    with pytest.raises(TrainError, match="3 targets but outputs of shape"):
        compute([0, 1, 2], [0, 1], "accuracy")
    with pytest.raises(TrainError, match="top2_accuracy needs class scores"):
        compute([0, 1], [0, 1], "top2_accuracy")
    with pytest.raises(TrainError, match="outside the 2 classes"):
        compute([0, 2], [0, 1], "accuracy", num_classes=2)
    with pytest.raises(TrainError, match="one value per sample"):
        compute([0.5, 1.5], [[1.0, 2.0], [3.0, 4.0]], "mae")
    with pytest.raises(TrainError, match=r"indices 0\.\.classes-1"):
        compute([-1, 0], [0, 0], "accuracy")
    with pytest.raises(TrainError, match="not one-hot"):
        compute(np.eye(3), np.eye(3), "accuracy")
    with pytest.raises(TrainError, match="average must be"):
        f1([0], [0], average="binary")
    with pytest.raises(TrainError, match="needs a supervised dataset"):
        evaluate(NumpyDataset(np.zeros((3, 2))), "accuracy")
    with pytest.raises(TrainError, match=r"takes a forgeml\.data\.Dataset"):
        evaluate(np.zeros(3), "accuracy")


def test_import_loads_no_framework() -> None:
    code = (
        "import sys, forgeml.metrics, forgeml.train\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'sklearn', 'xgboost') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
