"""Exports (forgeml.export, ``forgeml export``): real zoo models exported to ONNX and
TorchScript, checked against the originals, registered, recorded, and evaluated by name;
exports that fail the parity check write nothing; TensorRT runs only on a GPU."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from forgeml import EvalError, ExportError
from forgeml.cli import cli
from forgeml.eval import ResultsDB, build_zoo, evaluate, get_manifest, load_manifest
from forgeml.eval._results import _SCHEMA, SCHEMA_VERSION
from forgeml.export import (
    EXPORTERS,
    Exporter,
    ExportOptions,
    ExportResult,
    ExportSource,
    check_parity,
    export,
    get_exporter,
    targets,
)
from forgeml.export._exporters import TorchOnnx

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")
pytest.importorskip("xgboost")

#: The zoo models these tests export (built once per module).
ZOO_MODELS = ["digits_cnn", "digits_logreg", "digits_xgb"]
#: Quick and steady on a small shared machine: one thread, few timed runs.
QUICK: dict[str, Any] = {"threads": 1, "runs": 3}


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export-zoo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORGEML_CACHE", str(folder))
        build_zoo(ZOO_MODELS, progress=False)
    return folder


@pytest.fixture
def home(zoo_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The module's zoo cache, and a FORGEML_HOME of the test's own (models, results)."""
    monkeypatch.setenv("FORGEML_CACHE", str(zoo_cache))
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FORGEML_MODELS", raising=False)
    return tmp_path / "home"


def top1(model: str, agent: str) -> float:
    result = evaluate(model, agent=agent, store=False, track=False, threads=1)
    return float(result.metrics["top1"])


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="forgeml")


# ----------------------------------------------------------------------------- the registry


def test_the_registry_has_the_builtin_exporters() -> None:
    assert EXPORTERS.names() == [
        "onnxruntime->tensorrt",
        "pytorch->onnx",
        "pytorch->torchscript",
        "sklearn->onnx",
        "tensorflow->onnx",
        "xgboost->onnx",
    ]
    assert targets() == ["onnx", "tensorrt", "torchscript"]
    for name in EXPORTERS.names():
        exporter = EXPORTERS.load(name)
        assert isinstance(exporter, Exporter)
        assert name == f"{exporter.source}->{exporter.target}"


def test_impossible_exports_say_what_is_possible(home: Path) -> None:
    with pytest.raises(ExportError, match=r"Unknown export target 'onx'.*Did you mean 'onnx'"):
        export("digits_cnn", to="onx")
    with pytest.raises(ExportError, match="No exporter turns sklearn models into torchscript"):
        export("digits_logreg", to="torchscript")
    with pytest.raises(ExportError, match=r"method .* applies to TorchScript"):
        export("digits_cnn", to="onnx", framework="pytorch", method="script")
    with pytest.raises(ExportError, match="opset applies to ONNX"):
        export("digits_cnn", to="torchscript", opset=13)
    with pytest.raises(ExportError, match="does not support INT8"):
        export("digits_cnn", to="onnx", framework="pytorch", int8=True, calibration="digits")
    with pytest.raises(ExportError, match="does not support fp16"):
        export("digits_xgb", to="onnx", fp16=True)
    with pytest.raises(ExportError, match="opsets up to 15"):
        export("digits_xgb", to="onnx", opset=17, **QUICK)
    with pytest.raises(ExportError, match="atol must be a number >= 0"):
        export("digits_logreg", to="onnx", atol=-1.0)
    assert not (home / "models").exists()


# ----------------------------------------------------------------------------- torch


def test_torch_to_onnx_is_checked_registered_recorded_and_evaluates_like_the_source(
    home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "digits_cnn.onnx"
    result = export("digits_cnn", to="onnx", framework="pytorch", output=out, **QUICK)

    assert result.path == out
    assert out.is_file()
    assert (result.source_framework, result.target, result.framework) == (
        "pytorch",
        "onnx",
        "onnxruntime",
    )
    assert result.parity.passed
    assert result.parity.max_abs < 1e-4
    assert result.parity.samples == 64
    assert result.parity.top1_agreement == 1.0
    assert (result.parity.atol, result.parity.rtol) == (1e-4, 1e-3)
    assert result.info["opset"] == 17
    assert result.latency is not None
    assert result.latency.runs == 3
    assert result.latency.source_ms > 0
    assert result.latency.exported_ms > 0
    assert result.dataset == "digits"

    # registered next to the source: the same model, for onnxruntime, pinned by sha256
    assert result.manifest_path == home / "models" / "digits_cnn.onnxruntime.yml"
    registered = load_manifest(result.manifest_path)
    assert registered.framework == "onnxruntime"
    assert registered.weights.path == str(out)
    assert registered.weights.sha256 == result.sha256
    assert registered.attributes["exported_from"]["framework"] == "pytorch"
    assert get_manifest("digits_cnn", "onnxruntime").weights.sha256 == result.sha256

    # described next to the export, and recorded in the results database
    record = json.loads(Path(f"{out}.json").read_text(encoding="utf-8"))
    assert record == result.to_dict()
    assert ExportResult.from_dict(record).parity == result.parity
    [stored] = ResultsDB().exports(model="digits_cnn")
    assert stored["id"] == result.id
    assert stored["sha256"] == result.sha256
    assert ResultsDB().exports(target="torchscript") == []

    # the export runs by name, as accurately as the original
    assert abs(top1("digits_cnn", "onnxruntime") - top1("digits_cnn", "pytorch")) <= 0.01


def test_torch_to_torchscript_trace_and_script(home: Path) -> None:
    traced = export("digits_cnn", to="torchscript", **QUICK)
    assert traced.path == home / "exports" / "digits_cnn.torchscript.pt"
    assert traced.parity.passed
    assert traced.parity.max_abs < 1e-4
    assert traced.options["method"] == "trace"
    scripted = export(
        "digits_cnn", to="torchscript", method="script", name="digits_cnn_script", **QUICK
    )
    assert scripted.parity.passed
    assert scripted.options["method"] == "script"
    assert scripted.manifest_path == home / "models" / "digits_cnn_script.torchscript.yml"

    source = top1("digits_cnn", "pytorch")
    assert abs(top1("digits_cnn", "torchscript") - source) <= 0.01
    assert abs(top1("digits_cnn_script", "torchscript") - source) <= 0.01
    assert {r["options"]["method"] for r in ResultsDB().exports(target="torchscript")} == {
        "trace",
        "script",
    }


def test_torchscript_loads_only_from_a_trusted_pinned_manifest(home: Path, tmp_path: Path) -> None:
    from forgeml.eval.agents import get_agent

    result = export("digits_cnn", to="torchscript", register=False, store=False, runs=0)
    assert result.manifest_path is None
    assert not (home / "models").exists()
    text = f"""\
name: ts
task: image_classification
framework: torchscript
inputs: [{{name: image, shape: [1, 8, 8], layout: NCHW}}]
output: {{type: classification}}
weights: {{path: {result.path}, format: torchscript}}
"""
    untrusted = tmp_path / "ts.torchscript.yml"
    untrusted.write_text(text, encoding="utf-8")
    agent = get_agent("torchscript")
    with pytest.raises(EvalError, match=r"runs its code.*'trust: true'.*sha256"):
        agent.load(load_manifest(untrusted))
    pinned = text.replace("format: torchscript", f"format: torchscript, sha256: {result.sha256}")
    untrusted.write_text(pinned, encoding="utf-8")
    with pytest.raises(EvalError, match=r"Add 'trust: true' under attributes if"):
        agent.load(load_manifest(untrusted))
    untrusted.write_text(pinned + "attributes: {trust: true}\n", encoding="utf-8")
    predictor = agent.load(load_manifest(untrusted))
    assert predictor.predict(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 10)
    predictor.close()


# ----------------------------------------------------------------------------- others


@pytest.mark.parametrize(
    ("model", "source", "opset"), [("digits_logreg", "sklearn", 17), ("digits_xgb", "xgboost", 15)]
)
def test_sklearn_and_xgboost_to_onnx(home: Path, model: str, source: str, opset: int) -> None:
    result = export(model, to="onnx", **QUICK)
    assert result.source_framework == source
    assert result.parity.passed
    assert result.parity.max_abs < 1e-5
    assert result.info["opset"] == opset
    assert abs(top1(model, "onnxruntime") - top1(model, source)) <= 0.01


def test_keras_to_onnx(home: Path) -> None:
    pytest.importorskip("tensorflow", reason="Keras -> ONNX goes through TensorFlow")
    reason = get_exporter("tensorflow", "onnx").unavailable(ExportOptions())
    if reason is not None:
        pytest.skip(f"Keras -> ONNX cannot run here: {reason}")
    build_zoo(["digits_keras_cnn"], progress=False)
    result = export("digits_keras_cnn", to="onnx", **QUICK)
    assert result.source_framework == "tensorflow"
    assert result.parity.passed
    assert result.parity.max_abs < 1e-5
    assert (
        abs(top1("digits_keras_cnn", "onnxruntime") - top1("digits_keras_cnn", "tensorflow"))
        <= 0.01
    )


# ----------------------------------------------------------------------------- failures


def assert_nothing_written(home: Path, out: Path) -> None:
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temp files left either
    assert not (home / "models").exists()
    assert ResultsDB().exports() == []


def test_fp16_with_no_tolerance_fails_with_the_numbers_and_writes_nothing(
    home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out" / "half.onnx"
    out.parent.mkdir()
    with pytest.raises(ExportError) as info:
        export("digits_cnn", to="onnx", framework="pytorch", fp16=True, atol=0, rtol=0,
               output=out, **QUICK)  # fmt: skip
    message = str(info.value)
    assert "does not match the original on 64 validation samples" in message
    assert "allowed: |diff| <= 0 + 0 x |original|" in message
    assert "max abs diff" in message
    assert f"Nothing was written to {out}" in message
    assert_nothing_written(home, out)
    # fp16's own tolerance (1e-2 + 1e-2 x |original|) passes
    half = export("digits_cnn", to="onnx", framework="pytorch", fp16=True, output=out, **QUICK)
    assert half.parity.passed
    assert 0 < half.parity.max_abs < 0.05
    assert (half.parity.atol, half.parity.rtol) == (1e-2, 1e-2)
    assert load_manifest(half.manifest_path).attributes["precision"] == "fp16"


class TamperedOnnx(TorchOnnx):
    """Exports like pytorch->onnx, then changes a weight of the file it wrote."""

    target = "tampered"

    def export(self, source: ExportSource, path: Path, options: ExportOptions) -> dict[str, Any]:
        import onnx
        from onnx import numpy_helper

        info = super().export(source, path, options)
        model = onnx.load(str(path))
        weight = model.graph.initializer[0]
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
        onnx.save(model, str(path))
        return info


tampered = TamperedOnnx()


@pytest.fixture
def tampering(monkeypatch: pytest.MonkeyPatch) -> None:
    """A third-party exporter, registered for the test only."""
    monkeypatch.setattr(EXPORTERS, "_entries", dict(EXPORTERS._entries))
    monkeypatch.setattr(EXPORTERS, "_loaded", dict(EXPORTERS._loaded))
    EXPORTERS.register("pytorch->tampered", "test_export:tampered")


def test_a_tampered_export_fails_the_check_and_writes_nothing(
    home: Path, tmp_path: Path, tampering: None
) -> None:
    assert "tampered" in targets()
    out = tmp_path / "out" / "bad.onnx"
    out.parent.mkdir()
    with pytest.raises(ExportError, match=r"does not match the original.*max abs diff \d"):
        export("digits_cnn", to="tampered", framework="pytorch", output=out, **QUICK)
    assert_nothing_written(home, out)


def test_check_parity_rules() -> None:
    expected = np.array([[1.0, 2.0], [3.0, 0.0]])
    close = check_parity(expected, expected + 1e-5, atol=1e-4, rtol=0)
    assert close.passed
    assert close.top1_agreement == 1.0
    assert close.elements == 4
    far = check_parity(expected, expected + np.array([[0, 0], [0, 0.5]]), atol=0.1, rtol=0.1)
    assert not far.passed
    assert far.mismatched == 1
    assert far.max_abs == 0.5
    assert far.max_rel == 0.0  # the only difference is where the original is 0
    assert check_parity(np.arange(3.0), np.arange(3.0)[:, None], atol=0, rtol=0).passed
    shapes = check_parity(np.zeros((2, 3)), np.zeros((2, 4)), atol=1, rtol=1)
    assert not shapes.passed
    assert "shape [2, 3], the export [2, 4]" in shapes.describe()
    nan = check_parity(np.array([np.nan, 1.0]), np.array([np.nan, np.nan]), atol=1, rtol=1)
    assert nan.mismatched == 1
    assert nan.max_abs == float("inf")


# ----------------------------------------------------------------------------- database


def test_a_version_1_results_database_gains_the_exports_table(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # what forgeml wrote before exports were recorded
        conn.executescript(_SCHEMA)
        conn.execute("PRAGMA user_version = 1")
    db = ResultsDB(path)
    assert db.exports() == []
    assert len(db) == 0
    record = {"id": "ab12", "created": "2026-01-01T00:00:00", "model": "m",
              "source_framework": "pytorch", "target": "onnx", "path": "/m.onnx",
              "sha256": "00", "parity": {"max_abs": 0.5}}  # fmt: skip
    assert db.add_export(record) == "ab12"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert conn.execute("SELECT max_abs_diff FROM exports").fetchone() == (0.5,)
    assert db.exports(model="m") == [record]
    with pytest.raises(EvalError, match="An export record needs sha256"):
        db.add_export({**record, "sha256": ""})
    with pytest.raises(EvalError, match="Cannot select exports by 'modle'"):
        db.exports(modle="m")


# ----------------------------------------------------------------------------- CLI


def test_cli_with_underscores_and_dashes(home: Path, tmp_path: Path) -> None:
    first = tmp_path / "a.onnx"
    result = invoke(
        "export", "digits_logreg", "--to", "onnx", "-o", str(first), "--batch_size", "16",
        "--static_batch", "--threads", "1", "--runs", "2", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["options"]["dynamic_batch"] is False
    assert record["options"]["batch_size"] == 16
    assert record["parity"]["passed"] is True
    assert record["parity"]["samples"] == 16
    assert load_manifest(record["manifest_path"]).attributes["static_batch"] is True

    second = tmp_path / "b.pt"
    result = invoke(
        "export", "digits_cnn", "--to", "torchscript", "--output", str(second),
        "--batch-size", "8", "--max-batch", "8", "--no-register", "--no-store", "--runs", "0",
        "--threads", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "digits_cnn: pytorch -> torchscript (fp32, trace)" in result.output
    assert "parity   max abs diff" in result.output
    assert "model " not in result.output
    assert second.is_file()
    assert len(ResultsDB().exports()) == 1

    third = tmp_path / "c.onnx"
    result = invoke(
        "export", "digits_cnn", "--to", "onnx", "--framework", "pytorch", "-o", str(third),
        "--fp16", "--atol", "0", "--rtol", "0", "--threads", "1",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "Error: The onnx export of model 'digits_cnn'" in result.output
    assert "max abs diff" in result.output
    assert not third.exists()


def test_cli_picks_the_source_that_exports_to_the_target(home: Path) -> None:
    # digits_cnn has pytorch and onnxruntime manifests; only pytorch exports to torchscript
    result = invoke("export", "digits_cnn", "--to", "torchscript", "--runs", "0", "--no-store")
    assert result.exit_code == 0, result.output
    assert "pytorch -> torchscript" in result.output


# ----------------------------------------------------------------------------- TensorRT


def tensorrt_unavailable() -> str | None:
    return get_exporter("onnxruntime", "tensorrt").unavailable(ExportOptions())


def test_tensorrt_without_a_gpu_says_why(home: Path, tmp_path: Path) -> None:
    reason = tensorrt_unavailable()
    if reason is None:
        pytest.skip("TensorRT can run here (tested by test_tensorrt_export_on_a_gpu)")
    out = tmp_path / "cnn.engine"
    with pytest.raises(ExportError, match=r"from onnxruntime to tensorrt here: .*(GPU|install)"):
        export("digits_cnn", to="tensorrt", output=out)
    with pytest.raises(ExportError, match="INT8 export needs calibration data"):
        export("digits_cnn", to="trt", int8=True, output=out)
    assert not out.exists()


@pytest.mark.gpu
@pytest.mark.skipif(
    tensorrt_unavailable() is not None,
    reason=f"TensorRT cannot run here: {tensorrt_unavailable()}",
)
def test_tensorrt_export_on_a_gpu(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "digits_cnn.engine"
    first = export("digits_cnn", to="tensorrt", output=out, fp16=True, runs=5)
    assert first.parity.passed
    assert first.device == "cuda:0"
    assert first.info["cache"] == "miss"
    assert first.info["gpu"]
    again = export("digits_cnn", to="tensorrt", output=tmp_path / "again.engine", fp16=True)
    assert again.info["cache"] == "hit"
    assert again.info["cache_key"] == first.info["cache_key"]
    assert again.sha256 == first.sha256
    assert abs(top1("digits_cnn", "tensorrt") - top1("digits_cnn", "onnxruntime")) <= 0.01
    with pytest.raises(ExportError, match="TensorRT engine's file name ends in"):
        export("digits_cnn", to="tensorrt", output=tmp_path / "x.onnx")


# ----------------------------------------------------------------------------- the whole zoo


def zoo_exports() -> list[tuple[str, str, str, str]]:
    """(model, source framework, target, zoo entry) for every zoo manifest and every
    exporter from its framework that can run here (TensorRT needs a GPU: its own test)."""
    from forgeml.eval import find_manifests

    sources = {name.split("->")[0] for name in EXPORTERS.names()}
    pairs = []
    for manifest in find_manifests():
        if not manifest.weights.zoo or manifest.framework not in sources:
            continue
        for name in EXPORTERS.names():
            source, target = name.split("->")
            if source == manifest.framework and target != "tensorrt":
                pairs.append((manifest.name, source, target, manifest.weights.zoo))
    return sorted(pairs)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_zoo_model_exports_to_every_format_that_applies(home: Path) -> None:
    pairs = zoo_exports()
    frameworks = {source for _, source, _, _ in pairs}
    assert {"pytorch", "sklearn", "xgboost"} <= frameworks
    if importlib.util.find_spec("tensorflow") is None:
        pairs = [p for p in pairs if p[1] != "tensorflow"]
    build_zoo(sorted({entry for _, _, _, entry in pairs}), progress=False)
    failed = []
    for model, source, target, _ in pairs:
        result = export(model, to=target, framework=source, register=False, **QUICK)
        if not result.parity.passed:
            failed.append(f"{model} {source}->{target}: {result.parity}")
    assert not failed
    recorded = {(e["model"], e["source_framework"], e["target"]) for e in ResultsDB().exports()}
    assert recorded == {(model, source, target) for model, source, target, _ in pairs}
