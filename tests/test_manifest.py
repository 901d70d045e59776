"""Model manifests: validation errors that name the file and field, search order, lookups,
labels files, and the ``forgeml models`` commands that read and add manifests."""

from __future__ import annotations

import json
import logging
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from forgeml import EvalError
from forgeml.cli import cli
from forgeml.eval import (
    FRAMEWORK_NAMES,
    dump_manifest,
    find_manifests,
    get_manifest,
    load_manifest,
    manifest_dirs,
    parse_manifest,
)

BUILTIN = Path(__file__).resolve().parents[1] / "src" / "forgeml" / "eval" / "manifests"

VALID = """
name: tiny
version: "2.1"
task: tabular_classification
description: A tiny model.
framework: {name: sklearn, version: ">=1.4"}
inputs:
  - {name: features, shape: [4], dtype: float32, layout: flat, mean: [1.0], scale: [0.5]}
output: {type: classification, labels: [a, b, c]}
weights: {path: tiny.dry}
attributes: {training_dataset: iris, kind: logistic_regression, license: MIT}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def manifest_text(**changes: Any) -> str:
    """VALID with top-level fields replaced (None removes one)."""
    data = yaml.safe_load(VALID)
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return yaml.safe_dump(data, sort_keys=False)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="forgeml")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No user manifests: a fresh FORGEML_HOME, no FORGEML_MODELS, a temp cache."""
    home = tmp_path / "home"
    monkeypatch.setenv("FORGEML_HOME", str(home))
    monkeypatch.setenv("FORGEML_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FORGEML_MODELS", raising=False)
    return home


# ----------------------------------------------------------------------------- reading


def test_a_valid_manifest_reads_completely(tmp_path: Path) -> None:
    path = write(tmp_path / "tiny.yml", VALID)
    m = load_manifest(path)
    assert (m.name, m.version, m.task, m.framework, m.framework_version) == (
        "tiny",
        "2.1",
        "tabular_classification",
        "sklearn",
        ">=1.4",
    )
    (spec,) = m.inputs
    assert (spec.name, spec.shape, spec.dtype, spec.layout, spec.mean, spec.scale) == (
        "features",
        (4,),
        "float32",
        "flat",
        (1.0,),
        (0.5,),
    )
    assert m.output.labels == ("a", "b", "c")
    assert m.weights.source == "path"
    assert m.attributes["kind"] == "logistic_regression"
    assert m.source == path.absolute()
    # dump -> parse gives the same manifest
    again = parse_manifest(yaml.safe_load(dump_manifest(m)), source=path)
    assert again == m


def test_framework_aliases_and_string_form(tmp_path: Path) -> None:
    m = parse_manifest(yaml.safe_load(manifest_text(framework="scikit-learn")))
    assert m.framework == "sklearn"
    m = parse_manifest(yaml.safe_load(manifest_text(framework={"name": "torch"})))
    assert m.framework == "pytorch"


def test_a_model_with_several_inputs_says_a_task_must_handle_them() -> None:
    inputs = [{"name": "image", "shape": [4]}, {"name": "mask", "shape": [4]}]
    m = parse_manifest(yaml.safe_load(manifest_text(inputs=inputs)))
    with pytest.raises(EvalError) as info:
        _ = m.input
    assert str(info.value) == (
        "Model 'tiny' has 2 inputs (image, mask), but this needs a model with one input. A "
        "model with several inputs needs a task that prepares each of them (from "
        "manifest.inputs)."
    )


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"name": None}, "'name'", "is required"),
        ({"task": None}, "'task'", "is required"),
        ({"inputs": None}, "'inputs'", "must be a list of inputs"),
        ({"output": None}, "'output'", "must be a mapping"),
        ({"weights": None}, "'weights'", "must be a mapping"),
        ({"framework": {"version": ">=1"}}, "'framework.name'", "is required"),
        (
            {"framework": "pytroch"},
            "'framework.name'",
            "is not a known framework. Known: onnxruntime, pytorch, sklearn, tensorflow, ",
        ),
        ({"framework": "pytroch"}, "'framework.name'", "Got 'pytroch'. Did you mean 'pytorch'?"),
        ({"framework": "../torch"}, "'framework.name'", "it becomes part of a file name"),
        ({"name": "../../escaped"}, "'name'", "must start with a letter or digit"),
        ({"name": "a/b"}, "'name'", "Got 'a/b'."),
        ({"name": ".hidden"}, "'name'", "must start with a letter or digit"),
        ({"descripton": "x"}, "'descripton'", "Did you mean 'description'?"),
        (
            {"inputs": [{"shape": [4], "layout": "NHCW"}]},
            "'inputs[0].layout'",
            "must be one of NCHW, NHWC, flat. Got 'NHCW'. Did you mean 'NHWC'?",
        ),
        ({"inputs": [{"layout": "flat"}]}, "'inputs[0].shape'", "is required"),
        ({"inputs": [{"shape": [0, 3]}]}, "'inputs[0].shape'", "must be positive integers"),
        ({"inputs": [{"shape": [4], "dtype": "floaty"}]}, "'inputs[0].dtype'", "numpy dtype"),
        ({"inputs": [{"shape": [4], "mean": "zero"}]}, "'inputs[0].mean'", "list of numbers"),
        (
            {"inputs": [{"shape": [4], "color_mode": "rbg"}]},
            "'inputs[0].color_mode'",
            "Did you mean 'rgb'?",
        ),
        ({"output": {"type": "clasification"}}, "'output.type'", "Did you mean 'classification'?"),
        (
            {"output": {"type": "classification", "lables": ["a"]}},
            "'output.lables'",
            "Did you mean 'labels'?",
        ),
        ({"output": {"type": "classification", "labels": []}}, "'output.labels'", "list of names"),
        (
            {"output": {"type": "classification", "labels": ["a"], "labels_file": "l.txt"}},
            "'output'",
            "has both labels and labels_file",
        ),
        ({"weights": {"url": "https://example.com/m.dry"}}, "'weights.sha256'", "is required"),
        (
            {"weights": {"path": "m.dry", "zoo": "digits_cnn"}},
            "'weights'",
            "must name exactly one of path, url, repo, zoo. Got ['path', 'zoo']",
        ),
        ({"weights": {}}, "'weights'", "must name exactly one of"),
        ({"weights": {"path": "m.dry", "sha256": "abc"}}, "'weights.sha256'", "64 hex digits"),
        ({"weights": {"path": "m.dry", "checksum": "x"}}, "'weights.checksum'", "is unknown"),
        ({"weights": {"repo": "models"}}, "'weights.selector'", "is required with weights.repo"),
        (
            {"weights": {"repo": "models", "selector": {"class": "Net"}}},
            "'weights.selector.class'",
            "Did you mean 'cls'?",
        ),
        (
            {"weights": {"repo": "models", "selector": {"cls": "Net", "args": 3}}},
            "'weights.selector.args'",
            "must be a list",
        ),
    ],
)
def test_validation_errors_name_the_file_and_field(
    tmp_path: Path, changes: dict[str, Any], field: str, message: str
) -> None:
    path = write(tmp_path / "bad.yml", manifest_text(**changes))
    with pytest.raises(EvalError) as info:
        load_manifest(path)
    text = str(info.value)
    assert text.startswith(f"{path}: {field} "), text
    assert message in text


def test_yaml_errors_name_the_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.yml", "name: x\ninputs: [a, b\n")
    with pytest.raises(EvalError, match=r"broken\.yml.*line"):
        load_manifest(path)


def test_unreadable_manifest(tmp_path: Path) -> None:
    with pytest.raises(EvalError, match=r"Cannot read manifest"):
        load_manifest(tmp_path / "missing.yml")


# ----------------------------------------------------------------------------- labels file


def test_labels_file_is_read_next_to_the_manifest(tmp_path: Path) -> None:
    write(tmp_path / "m" / "labels.txt", "cat\n  dog  \n\nbird\n")
    output = {"type": "classification", "labels_file": "labels.txt"}
    path = write(tmp_path / "m" / "tiny.yml", manifest_text(output=output))
    m = load_manifest(path)
    assert m.output.labels == ("cat", "dog", "bird")
    assert m.output.labels_file == "labels.txt"
    # The dump names the file again (not the labels), so it reads back the same.
    dumped = yaml.safe_load(dump_manifest(m))
    assert dumped["output"] == {"type": "classification", "labels_file": "labels.txt"}
    assert parse_manifest(dumped, source=path) == m


def test_labels_file_errors(tmp_path: Path) -> None:
    output = {"type": "classification", "labels_file": "nope.txt"}
    path = write(tmp_path / "tiny.yml", manifest_text(output=output))
    with pytest.raises(EvalError) as info:
        load_manifest(path)
    assert f"{path}: 'output.labels_file' names '{tmp_path / 'nope.txt'}'" in str(info.value)
    assert "one label per line" in str(info.value)
    write(tmp_path / "nope.txt", "\n \n")
    with pytest.raises(EvalError, match=r"holds no labels"):
        load_manifest(path)


# ----------------------------------------------------------------------------- built-ins


def test_builtin_manifests_are_valid_and_cover_the_zoo() -> None:
    manifests = [load_manifest(p) for p in sorted(BUILTIN.glob("*.yml"))]
    assert len(manifests) == 23
    keys = [m.key for m in manifests]
    assert len(set(keys)) == len(keys)
    for path, m in zip(sorted(BUILTIN.glob("*.yml")), manifests, strict=True):
        assert path.name == f"{m.name}.{m.framework}.yml"
        assert m.framework in FRAMEWORK_NAMES
        assert m.weights.source == "zoo"
        assert m.attributes["license"] == "Apache-2.0"
    frameworks: dict[str, set[str]] = {}
    for m in manifests:
        frameworks.setdefault(m.name, set()).add(m.framework)
    five = {"pytorch", "onnxruntime", "sklearn", "xgboost", "tensorflow"}
    assert frameworks == {
        "digits_cnn": {"pytorch", "onnxruntime"},
        "digits_mlp": {"pytorch", "onnxruntime"},
        "digits_keras_cnn": {"tensorflow"},
        "digits_logreg": {"sklearn"},
        "digits_forest": {"sklearn"},
        "digits_xgb": {"xgboost"},
        "iris_classifier": five,
        "breast_cancer_classifier": five,
        "diabetes_regressor": five,
    }


def test_builtins_are_found_without_any_setting(isolated: Path) -> None:
    dirs = manifest_dirs()
    assert dirs[0] == BUILTIN
    assert dirs[-1] == isolated / "models"
    assert {m.key for m in find_manifests()} == {
        m.key for m in (load_manifest(p) for p in BUILTIN.glob("*.yml"))
    }


# ----------------------------------------------------------------------------- search order


def override(folder: Path, note: str, name: str = "digits_logreg") -> Path:
    text = manifest_text(
        name=name,
        task="image_classification",
        description=note,
        inputs=[{"name": "image", "shape": [64], "scale": [0.0625]}],
        output={"type": "classification", "labels": [str(i) for i in range(10)]},
        weights={"path": "weights/logreg.dry"},
    )
    return write(folder / f"{name}.yml", text)


def test_forgeml_models_overrides_builtins_and_models_add_overrides_both(
    tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    override(first, "from first")
    override(second, "from second")
    write(second / "notes.txt", "not a manifest")
    monkeypatch.setenv("FORGEML_MODELS", f"{first}:{second}:{tmp_path / 'missing'}")
    assert manifest_dirs()[1:3] == [first, second]
    chosen = get_manifest("digits_logreg")
    assert chosen.description == "from second"  # the later folder wins
    assert chosen.source == (second / "digits_logreg.yml").absolute()
    assert sum(m.name == "digits_logreg" for m in find_manifests()) == 1

    added = override(tmp_path / "elsewhere", "added")
    result = invoke("models", "add", str(added))
    assert result.exit_code == 0, result.output
    target = isolated / "models" / "digits_logreg.sklearn.yml"
    assert f"added digits_logreg (sklearn) as {target}" in result.output
    assert f"it overrides {second / 'digits_logreg.yml'}" in result.output
    chosen = get_manifest("digits_logreg", "sklearn")
    assert chosen.description == "added"
    assert chosen.source == target


def test_models_add_makes_paths_absolute_and_inlines_labels(tmp_path: Path, isolated: Path) -> None:
    folder = tmp_path / "mine"
    write(folder / "labels.txt", "no\nyes\n")
    text = manifest_text(
        name="mine",
        output={"type": "classification", "labels_file": "labels.txt"},
        weights={"path": "weights/mine.dry", "sha256": "ab" * 32},
    )
    source = write(folder / "mine.yml", text)
    result = invoke("models", "add", str(source))
    assert result.exit_code == 0, result.output
    copy = isolated / "models" / "mine.sklearn.yml"
    assert copy.read_text().startswith(f"# Added by 'forgeml models add' from {source}")
    m = load_manifest(copy)
    assert m.weights.path == str((folder / "weights" / "mine.dry").resolve())
    assert m.weights.sha256 == "ab" * 32
    assert m.output.labels == ("no", "yes")
    assert m.output.labels_file is None
    # The original stays usable from its folder; the copy from anywhere.
    assert get_manifest("mine").source == copy


def test_models_add_never_writes_outside_the_models_folder(tmp_path: Path, isolated: Path) -> None:
    escaping = write(tmp_path / "evil.yml", manifest_text(name="../../escaped"))
    result = invoke("models", "add", str(escaping))
    assert result.exit_code == 1
    assert f"Error: {escaping}: 'name' must start with a letter or digit" in result.output
    assert not list(tmp_path.rglob("escaped*"))
    assert not (isolated / "models").exists()


def test_models_add_refuses_an_invalid_manifest(tmp_path: Path, isolated: Path) -> None:
    bad = write(tmp_path / "bad.yml", manifest_text(weights={"url": "https://x.org/m.dry"}))
    result = invoke("models", "add", str(bad))
    assert result.exit_code == 1
    assert f"Error: {bad}: 'weights.sha256' is required" in result.output
    assert not (isolated / "models").exists()


def test_a_broken_manifest_in_a_search_folder_is_skipped_with_a_warning(
    tmp_path: Path,
    isolated: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = write(tmp_path / "extra" / "bad.yml", manifest_text(task=None))
    broken = write(isolated / "models" / "broken.sklearn.yml", "name: x\ninputs: [a, b\n")
    good = override(tmp_path / "extra", "still found", name="mine")
    monkeypatch.setenv("FORGEML_MODELS", str(tmp_path / "extra"))
    with caplog.at_level(logging.WARNING, logger="forgeml.eval"):
        found = find_manifests()
    assert get_manifest("mine").source == good.absolute()  # the other models are still found
    assert any(m.name == "digits_cnn" for m in found)
    messages = [r.getMessage() for r in caplog.records]
    assert any(
        m.startswith(f"Skipping manifest '{bad}': {bad}: 'task' is required") for m in messages
    )
    assert any(m.startswith(f"Skipping manifest '{broken}': ") and "line" in m for m in messages)
    with pytest.raises(EvalError, match=re.escape(f"{bad}: 'task' is required")):
        load_manifest(bad)  # read on its own, it is an error
    result = invoke("models", "add", str(bad))
    assert result.exit_code == 1
    assert f"{bad}: 'task' is required" in result.output


# ----------------------------------------------------------------------------- lookups


def test_get_manifest_errors() -> None:
    with pytest.raises(EvalError, match=r"Unknown model 'digits_cn'.*Did you mean 'digits_cnn'"):
        get_manifest("digits_cn")
    with pytest.raises(EvalError, match=r"exists for several frameworks \(onnxruntime, pytorch\)"):
        get_manifest("digits_cnn")
    with pytest.raises(EvalError, match=r"has no sklearn version. It exists for: onnxruntime"):
        get_manifest("digits_cnn", "sklearn")
    assert get_manifest("digits_cnn", "torch").framework == "pytorch"
    assert get_manifest("digits_cnn", "ort").framework == "onnxruntime"
    assert get_manifest("digits_keras_cnn").framework == "tensorflow"


# ----------------------------------------------------------------------------- CLI ls / show


def test_models_ls_table_filters_and_json() -> None:
    result = invoke("models", "ls")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["NAME", "FRAMEWORK", "TASK", "VERSION", "WEIGHTS", "BUILT"]
    assert len(lines) == 24
    assert any(line.split()[:2] == ["digits_cnn", "onnxruntime"] for line in lines)
    assert all(line.split()[-1] == "no" for line in lines[1:])  # a fresh cache: nothing built

    result = invoke("models", "ls", "--task", "tabular_regression", "--framework", "torch")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines()[1:]]
    assert rows == [
        ["diabetes_regressor", "pytorch", "tabular_regression", "1.0", "zoo:diabetes_torch", "no"]
    ]

    result = invoke("models", "ls", "--framework", "keras", "--json")
    records = json.loads(result.output)
    assert {r["name"] for r in records} == {
        "digits_keras_cnn",
        "iris_classifier",
        "breast_cancer_classifier",
        "diabetes_regressor",
    }
    first = records[0]
    assert set(first) >= {"name", "framework", "task", "version", "weights", "built", "path"}
    assert first["built"] is False
    assert first["path"] is None

    result = invoke("models", "ls", "--task", "segmentation")
    assert result.output == "No models match.\n"


def test_models_show_text_and_json(tmp_path: Path) -> None:
    result = invoke("models", "show", "digits_logreg")
    assert result.exit_code == 0, result.output
    assert f"# {BUILTIN / 'digits_logreg.sklearn.yml'}" in result.output
    assert "  shape: [64]" in result.output
    assert "  labels: ['0', '1', '2'" in result.output
    assert "#   not built yet: forgeml models build digits_logreg" in result.output

    result = invoke("models", "show", "iris_classifier", "--framework", "sklearn", "--json")
    record = json.loads(result.output)
    assert record["manifest"]["weights"] == {"zoo": "iris_sklearn"}
    assert record["file"] == str(BUILTIN / "iris_classifier.sklearn.yml")
    assert record["weights"] == {"source": "zoo:iris_sklearn", "path": None, "built": False}

    result = invoke("models", "show", "iris_classifier")
    assert result.exit_code == 1
    assert "several frameworks (onnxruntime, pytorch, sklearn, tensorflow, xgboost)" in (
        result.output
    )
    assert "--framework" in result.output
    result = invoke("models", "show", "iris_clasifier")
    assert result.exit_code == 1
    assert "Did you mean 'iris_classifier'?" in result.output


def test_models_show_a_path_manifest_names_its_file(tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    write(folder / "tiny.dry", "not really an archive")
    path = write(folder / "tiny.yml", VALID)
    result = invoke("models", "add", str(path))
    assert result.exit_code == 0, result.output
    result = invoke("models", "show", "tiny", "--json")
    record = json.loads(result.output)
    assert record["weights"]["source"] == f"path:{(folder / 'tiny.dry').resolve()}"
    assert record["weights"]["path"] == str((folder / "tiny.dry").resolve())
