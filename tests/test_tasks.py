"""Tasks: preprocessing as the manifest says, the dataset sources, and streaming metrics."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from forgeml.data import NumpyDataset
from forgeml.eval import EvalError, Manifest, Task, parse_manifest
from forgeml.eval.tasks import (
    ClassificationMetrics,
    RegressionMetrics,
    get_task,
    preprocess_features,
    preprocess_images,
)

image_task = get_task("image_classification")
tabular_task = get_task("tabular_classification")
regression_task = get_task("tabular_regression")


def manifest(
    shape: list[int],
    *,
    layout: str = "flat",
    task: str = "image_classification",
    labels: list[str] | None = None,
    kind: str = "classification",
    **spec: Any,
) -> Manifest:
    output: dict[str, Any] = {"type": kind}
    if labels is not None:
        output["labels"] = labels
    return parse_manifest(
        {
            "name": "m",
            "task": task,
            "framework": "pytorch",
            "inputs": [{"name": "x", "shape": shape, "layout": layout, **spec}],
            "output": output,
            "weights": {"path": "m.dry"},
        }
    )


def spec(shape: list[int], **kwargs: Any) -> Any:
    return manifest(shape, **kwargs).input


# ------------------------------------------------------------------------- preprocessing


def test_layouts_mean_scale_and_dtype() -> None:
    raw = np.arange(2 * 2 * 3 * 3, dtype=np.uint8).reshape(2, 2, 3, 3)  # N, H, W, C (RGB)
    mean, scale = [1.0, 2.0, 3.0], [0.5, 0.25, 2.0]
    expected = (raw.astype(np.float64) - mean) * scale  # per channel, channels last
    nchw = preprocess_images(raw, spec([3, 2, 3], layout="NCHW", mean=mean, scale=scale))
    assert nchw.dtype == np.float32
    assert nchw.shape == (2, 3, 2, 3)
    np.testing.assert_allclose(nchw, expected.transpose(0, 3, 1, 2), rtol=1e-6)
    nhwc = preprocess_images(raw, spec([2, 3, 3], layout="NHWC", mean=mean, scale=scale))
    np.testing.assert_allclose(nhwc, expected, rtol=1e-6)
    flat = preprocess_images(raw, spec([18], mean=mean, scale=scale, dtype="float64"))
    assert flat.dtype == np.float64
    np.testing.assert_allclose(flat, expected.reshape(2, 18))
    # integer inputs are rounded and clipped to the dtype's range
    as_uint8 = preprocess_images(
        np.array([[[0.0, 100.0]]]), spec([1, 1, 2], layout="NCHW", scale=[2.6], dtype="uint8")
    )
    assert as_uint8.dtype == np.uint8
    assert as_uint8.tolist() == [[[[0, 255]]]]


def test_grayscale_images_get_a_channel_axis() -> None:
    raw = np.arange(2 * 8 * 8, dtype=np.float64).reshape(2, 8, 8)  # the digits layout
    out = preprocess_images(raw, spec([1, 8, 8], layout="NCHW", scale=[0.0625]))
    np.testing.assert_allclose(out, raw[:, None] * 0.0625)
    flat = preprocess_images(raw, spec([64]))
    np.testing.assert_array_equal(flat, raw.reshape(2, 64).astype(np.float32))


def test_resize_is_bilinear_like_torch() -> None:
    import torch

    raw = np.array([[[0.0, 4.0], [8.0, 12.0]], [[1.0, 0.0], [0.0, 1.0]]])  # (2, 2, 2)
    out = preprocess_images(raw, spec([1, 4, 3], layout="NCHW"))
    expected = torch.nn.functional.interpolate(
        torch.tensor(raw[:, None], dtype=torch.float32),
        size=(4, 3),
        mode="bilinear",
        align_corners=False,
    ).numpy()
    assert out.shape == (2, 1, 4, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    # images of different sizes (a list) are resized one by one
    mixed = [np.zeros((2, 2)), np.ones((5, 7))]
    out = preprocess_images(mixed, spec([3, 3, 1], layout="NHWC"))
    assert out.shape == (2, 3, 3, 1)
    np.testing.assert_array_equal(out[1], np.ones((3, 3, 1)))


def test_color_conversions() -> None:
    rgb = np.array([[[[10.0, 20.0, 30.0], [0.0, 0.0, 100.0]]]])  # (1, 1, 2, 3)
    gray = preprocess_images(rgb, spec([1, 1, 2], layout="NCHW", color_mode="grayscale"))
    np.testing.assert_allclose(
        gray[0, 0, 0], [0.299 * 10 + 0.587 * 20 + 0.114 * 30, 0.114 * 100], rtol=1e-6
    )
    bgr = preprocess_images(rgb, spec([1, 2, 3], layout="NHWC", color_mode="bgr"))
    np.testing.assert_array_equal(bgr[0, 0], [[30, 20, 10], [100, 0, 0]])
    from_gray = preprocess_images(
        np.array([[[7.0]]]), spec([3, 1, 1], layout="NCHW", color_mode="rgb")
    )
    assert from_gray.reshape(-1).tolist() == [7.0, 7.0, 7.0]
    rgba = np.concatenate([rgb, np.full((1, 1, 2, 1), 255.0)], axis=-1)
    no_alpha = preprocess_images(rgba, spec([1, 2, 3], layout="NHWC", color_mode="rgb"))
    np.testing.assert_array_equal(no_alpha, rgb)


def test_preprocessing_errors_say_what_does_not_fit() -> None:
    with pytest.raises(EvalError, match=r"8x8x1 .*do not fit input 'x' of shape \[10\]"):
        preprocess_images(np.zeros((1, 8, 8)), spec([10]))
    with pytest.raises(EvalError, match="shape must be 3 numbers"):
        preprocess_images(np.zeros((1, 8, 8)), spec([64], layout="NCHW"))
    with pytest.raises(EvalError, match="2 mean values for 3 channels"):
        preprocess_images(np.zeros((1, 2, 2, 3)), spec([3, 2, 2], layout="NCHW", mean=[1, 2]))


def test_features_mean_and_scale_per_feature() -> None:
    raw = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out = preprocess_features(raw, spec([3], mean=[1.0, 2.0, 3.0], scale=[1.0, 0.5, 2.0]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (raw - [1, 2, 3]) * [1, 0.5, 2])
    assert preprocess_features(raw, spec([3, 1])).shape == (2, 3, 1)
    with pytest.raises(EvalError, match="3 features per sample; input 'x' of the model takes 4"):
        preprocess_features(raw, spec([4]))


def test_postprocess() -> None:
    m = manifest([4])
    assert image_task.postprocess(np.array([[0.1, 0.9], [0.8, 0.2]]), m).tolist() == [1, 0]
    assert image_task.postprocess(np.array([0.2, 0.7]), m).tolist() == [0, 1]
    r = manifest([4], task="tabular_regression", kind="regression")
    assert regression_task.postprocess(np.array([[1.5], [2.5]]), r).tolist() == [1.5, 2.5]


# ------------------------------------------------------------------------- datasets


def write_image(path: Path, size: tuple[int, int], value: int, mode: str = "L") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    color: Any = value if mode == "L" else (value, value, value)
    Image.new(mode, size, color).save(path)


def test_the_tasks_implement_the_protocol() -> None:
    for task in (image_task, tabular_task, regression_task):
        assert isinstance(task, Task)
    assert image_task.output_type == tabular_task.output_type == "classification"
    assert regression_task.output_type == "regression"


def test_bundled_digits_split() -> None:
    m = manifest([1, 8, 8], layout="NCHW", labels=[str(i) for i in range(10)])
    data = image_task.load_dataset("digits", m)
    assert (data.size, data.has_labels, data.name) == (450, True, "digits")
    assert image_task.load_dataset("digits:all", m).size == 1797
    assert image_task.load_dataset("digits:train", m, limit=10).size == 10
    batches = list(data.iter_batches(100))
    assert [len(b) for b in batches] == [100, 100, 100, 100, 50]
    assert batches[0].raw.shape == (100, 8, 8)
    assert batches[0].ids[:2] == ["digits[0]", "digits[1]"]
    with pytest.raises(EvalError, match="'iris' is a classification dataset"):
        image_task.load_dataset("iris", m)


def test_unknown_dataset_lists_the_bundled_and_suggests(tmp_path: Path) -> None:
    m = manifest([64])
    with pytest.raises(EvalError) as info:
        image_task.load_dataset("digts", m)
    assert "Bundled: digits, iris, breast_cancer, wine, diabetes" in str(info.value)
    assert "Did you mean 'digits'?" in str(info.value)
    with pytest.raises(EvalError, match="does not exist"):
        tabular_task.load_dataset(str(tmp_path / "nope.csv"), m)
    with pytest.raises(EvalError, match="part must be one of test, train, all"):
        image_task.load_dataset("digits:val", m)
    with pytest.raises(EvalError, match="A dataset is"):
        image_task.load_dataset(42, m)


def test_unknown_task_lists_the_known_and_suggests() -> None:
    with pytest.raises(EvalError) as info:
        get_task("image_clasification")
    message = str(info.value)
    assert "Known: image_classification, tabular_classification, tabular_regression" in message
    assert "Did you mean 'image_classification'?" in message


def test_image_folder_with_class_folders_and_a_corrupt_file(tmp_path: Path) -> None:
    root = tmp_path / "images"
    write_image(root / "cat" / "1.png", (4, 4), 10)
    write_image(root / "cat" / "2.jpg", (6, 5), 20, mode="RGB")  # resized, made grayscale
    (root / "cat" / "3.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    write_image(root / "dog" / "sub" / "1.png", (4, 4), 30)  # any depth inside a class
    (root / "dog" / "notes.txt").write_text("hello")
    m = manifest([1, 4, 4], layout="NCHW", color_mode="grayscale", labels=["dog", "cat"])
    data = image_task.load_dataset(root, m)
    assert data.size == 4
    assert data.has_labels
    assert data.problems == ["dog/notes.txt: not an image file; skipped."]
    batches = list(data.iter_batches(2))
    assert [b.ids for b in batches] == [["cat/1.png", "cat/2.jpg"], ["dog/sub/1.png"]]
    # classes are matched to the manifest's labels by name: cat is 1, dog is 0
    assert [b.labels.tolist() for b in batches if b.labels is not None] == [[1, 1], [0]]
    assert len(data.problems) == 2
    assert data.problems[1].startswith("cat/3.png: cannot read the image")
    x = image_task.preprocess(batches[0].raw, m)
    assert x.shape == (2, 1, 4, 4)
    np.testing.assert_allclose(x[0], 10.0)
    np.testing.assert_allclose(x[1], 20.0, atol=1)
    list(data.iter_batches(2))  # reading again reports nothing twice
    assert len(data.problems) == 2


def test_image_folder_labels_by_sorted_name_and_unknown_class(tmp_path: Path) -> None:
    for name in ("b", "a"):
        write_image(tmp_path / name / "x.png", (2, 2), 0)
    data = image_task.load_dataset(tmp_path, manifest([4]))
    assert [b.labels.tolist() for b in data.iter_batches(8) if b.labels is not None] == [[0, 1]]
    with pytest.raises(EvalError, match=r"classes a are not labels of model 'm'.*Did you mean"):
        image_task.load_dataset(tmp_path, manifest([4], labels=["b", "aa"]))


def test_class_names_that_match_no_label_are_not_mapped_by_position(tmp_path: Path) -> None:
    words = ("zero", "one", "two")
    for name in words:  # sorted: one, two, zero; by position "one" would be label "0"
        write_image(tmp_path / "words" / name / "x.png", (2, 2), 0)
    digits = manifest([4], labels=["0", "1", "2"])
    with pytest.raises(EvalError) as info:
        image_task.load_dataset(tmp_path / "words", digits)
    message = str(info.value)
    assert "none of the dataset's classes (one, two, zero) is a label of model 'm'" in message
    assert "(its labels: 0, 1, 2)" in message
    assert "set the manifest's output.labels" in message
    # bare indices as class names are the model's order, whatever its labels are called
    for index in ("0", "1", "2"):
        write_image(tmp_path / "indices" / index / "x.png", (2, 2), 0)
    data = image_task.load_dataset(tmp_path / "indices", manifest([4], labels=list(words)))
    assert [b.labels.tolist() for b in data.iter_batches(8) if b.labels is not None] == [[0, 1, 2]]


def test_flat_image_folder_has_no_labels(tmp_path: Path) -> None:
    write_image(tmp_path / "one.png", (3, 3), 1, mode="RGB")
    write_image(tmp_path / "two.png", (3, 3), 2, mode="RGB")
    m = manifest([3, 3, 3], layout="NHWC", color_mode="rgb")
    data = image_task.load_dataset(tmp_path, m)
    assert not data.has_labels
    (batch,) = data.iter_batches(8)
    assert batch.labels is None
    assert batch.ids == ["one.png", "two.png"]
    assert image_task.preprocess(batch.raw, m)[:, 0, 0].tolist() == [[1, 1, 1], [2, 2, 2]]


def test_npz_dataset(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    x = np.random.default_rng(0).random((5, 4, 4))
    np.savez(path, x=x, y=np.array([0, 1, 2, 1, 0]))
    data = image_task.load_dataset(path, manifest([16]), limit=4)
    assert data.size == 4
    (batch,) = data.iter_batches(10)
    np.testing.assert_array_equal(batch.raw, x[:4])
    assert batch.labels.tolist() == [0, 1, 2, 1]
    np.savez(tmp_path / "nox.npz", images_are_here=x)
    with pytest.raises(EvalError, match="holds them under 'x'"):
        image_task.load_dataset(tmp_path / "nox.npz", manifest([16]))


def test_csv_dataset_with_named_classes_and_a_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "flowers.csv"
    path.write_text(
        "species,length,width\nsetosa,1.0,2.0\nvirginica,3.0,4.5\nsetosa,oops,1\nversicolor,5,6\n"
    )
    labels = ["setosa", "versicolor", "virginica"]
    m = manifest([2], task="tabular_classification", labels=labels)
    data = tabular_task.load_dataset(path, m, label_column="species")
    assert data.size == 3
    assert data.problems == [
        "flowers.csv line 4: column 'length' is not a number ('oops'); skipped."
    ]
    (batch,) = data.iter_batches(8)
    assert batch.labels.tolist() == [0, 2, 1]
    assert batch.ids == ["flowers.csv:2", "flowers.csv:3", "flowers.csv:5"]
    np.testing.assert_array_equal(tabular_task.preprocess(batch.raw, m), [[1, 2], [3, 4.5], [5, 6]])
    with pytest.raises(EvalError, match=r"no column 'specie'.*Did you mean 'species'"):
        tabular_task.load_dataset(path, m, label_column="specie")


def test_csv_regression_uses_the_last_column(tmp_path: Path) -> None:
    path = tmp_path / "houses.csv"
    path.write_text("rooms,age,price\n3,10,250.5\n4,2,400\n")
    m = manifest([2], task="tabular_regression", kind="regression")
    (batch,) = regression_task.load_dataset(path, m).iter_batches(8)
    assert batch.labels.tolist() == [250.5, 400.0]
    assert batch.raw.tolist() == [[3, 10], [4, 2]]


def test_bundled_tabular_datasets() -> None:
    iris = manifest([4], task="tabular_classification")
    data = tabular_task.load_dataset("iris", iris)
    assert data.size == 38
    assert data.has_labels
    digits = tabular_task.load_dataset("digits", manifest([64], task="tabular_classification"))
    assert next(digits.iter_batches(4)).raw.shape == (4, 64)
    diabetes = regression_task.load_dataset("diabetes", manifest([10], kind="regression"))
    batch = next(diabetes.iter_batches(5))
    assert batch.labels is not None
    assert batch.labels.dtype == np.float64
    with pytest.raises(EvalError, match="'diabetes' is a regression dataset"):
        tabular_task.load_dataset("diabetes", iris)


def test_a_forgeml_dataset_of_image_label_pairs() -> None:
    x = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)
    y = np.array(["b", "a", "b"])
    dataset = NumpyDataset((x, y), supervised=True)
    m = manifest([4], labels=["a", "b"])
    data = image_task.load_dataset(dataset, m)
    (batch,) = data.iter_batches(8)
    np.testing.assert_array_equal(batch.raw, x)
    assert batch.labels.tolist() == [1, 0, 1]
    unlabeled = image_task.load_dataset(NumpyDataset(x), m, limit=2)
    assert not unlabeled.has_labels
    assert unlabeled.size == 2


# ------------------------------------------------------------------------- metrics


def test_classification_metrics_by_hand() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 0, 2])
    metrics = ClassificationMetrics(["a", "b", "c"])
    metrics.update(predicted, np.eye(3)[predicted], labels)
    result = metrics.result()
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert result["top1"] == pytest.approx(4 / 6)
    assert "top5" not in result  # fewer than 5 classes
    per_class = {row["label"]: row for row in result["per_class"]}
    # a: precision 1/2, recall 1/2; b: 2/3, 1; c: 1, 1/2
    assert per_class["a"]["precision"] == pytest.approx(0.5)
    assert per_class["b"]["precision"] == pytest.approx(2 / 3)
    assert per_class["b"]["recall"] == pytest.approx(1.0)
    assert per_class["c"]["f1"] == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert per_class["c"]["support"] == 2
    assert result["macro_recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert result["labels"] == ["a", "b", "c"]


def test_classification_metrics_match_sklearn_and_stream() -> None:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    classes = 7
    outputs = rng.random((230, classes))
    labels = rng.integers(0, classes, 230)
    outputs[np.arange(100), labels[:100]] += 1.0  # some right answers
    predicted = outputs.argmax(axis=1)
    whole = ClassificationMetrics(num_classes=classes)
    whole.update(predicted, outputs, labels)
    streamed = ClassificationMetrics(num_classes=classes)
    for start in range(0, 230, 17):
        stop = start + 17
        streamed.update(predicted[start:stop], outputs[start:stop], labels[start:stop])
    assert streamed.result() == whole.result()
    result = whole.result()
    assert result["confusion_matrix"] == confusion_matrix(labels, predicted).tolist()
    p, r, f, _s = precision_recall_fscore_support(labels, predicted, zero_division=0)
    np.testing.assert_allclose([row["precision"] for row in result["per_class"]], p)
    np.testing.assert_allclose([row["recall"] for row in result["per_class"]], r)
    np.testing.assert_allclose([row["f1"] for row in result["per_class"]], f)
    assert result["macro_f1"] == pytest.approx(f.mean())
    top5 = np.argsort(outputs, axis=1)[:, -5:]
    assert result["top5"] == pytest.approx(np.mean([labels[i] in top5[i] for i in range(230)]))
    with pytest.raises(EvalError, match="outside the 7 classes"):
        whole.update(np.array([0]), outputs[:1], np.array([9]))


def test_regression_metrics_match_sklearn_and_stream() -> None:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    rng = np.random.default_rng(1)
    truth = 1000.0 + rng.normal(size=101)  # a large offset: sums must stay precise
    predicted = truth + rng.normal(scale=0.3, size=101)
    streamed = RegressionMetrics()
    for start in range(0, 101, 10):
        stop = start + 10
        streamed.update(predicted[start:stop], predicted[start:stop], truth[start:stop])
    result = streamed.result()
    assert result["mae"] == pytest.approx(mean_absolute_error(truth, predicted))
    assert result["rmse"] == pytest.approx(math.sqrt(mean_squared_error(truth, predicted)))
    assert result["r2"] == pytest.approx(r2_score(truth, predicted), rel=1e-9)
    constant = RegressionMetrics()
    constant.update(np.array([2.0, 2.0]), np.array([2.0, 2.0]), np.array([2.0, 2.0]))
    assert constant.result()["r2"] == 1.0
    assert RegressionMetrics().result() == {}
