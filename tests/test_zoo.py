"""The built-in zoo and weight resolution: builders agree with their manifests, builds are
cached, verified, reproducible and accurate, ONNX exports match torch, and path, URL and
Repo weights resolve to verified files."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from forgeml import EvalError, load_object
from forgeml.cli import cli
from forgeml.eval import find_manifests, get_manifest, load_bundled, load_manifest
from forgeml.eval._weights import (
    BUILD_RECORD,
    ZooBuild,
    build_zoo,
    resolve_weights,
    zoo_build,
    zoo_folder,
)
from forgeml.eval.zoo import BUILTIN, ZOO, ZooBuilder, get_builder, standardization
from forgeml.objects import Repo

MANIFESTS = "src/forgeml/eval/manifests"
#: The framework module each zoo framework needs (tests of that framework skip without it).
MODULES = {
    "pytorch": "torch",
    "tensorflow": "tensorflow",
    "sklearn": "sklearn",
    "xgboost": "xgboost",
}
#: Accuracy (or R²) floors on the held-out test split.
FLOORS = {
    "digits_cnn": 0.95,
    "digits_mlp": 0.93,
    "digits_keras_cnn": 0.93,
    "digits_logreg": 0.93,
    "digits_forest": 0.9,
    "digits_xgb": 0.9,
    **{f"iris_{s}": 0.9 for s in ("torch", "keras", "sklearn", "xgb")},
    **{f"breast_cancer_{s}": 0.93 for s in ("torch", "keras", "sklearn", "xgb")},
    **{f"diabetes_{s}": 0.3 for s in ("torch", "keras", "sklearn", "xgb")},
}


def builder_or_skip(name: str) -> ZooBuilder:
    pytest.importorskip(MODULES[BUILTIN[name]])
    if BUILTIN[name] == "pytorch":
        pytest.importorskip("onnxruntime")
    return get_builder(name)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="forgeml")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty cache (FORGEML_CACHE) and FORGEML_HOME for one test."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("FORGEML_CACHE", str(folder))
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FORGEML_MODELS", raising=False)
    return folder


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ZooBuild]:
    """The whole zoo, built once per session into a session temp cache."""
    for module in (*MODULES.values(), "onnxruntime"):
        pytest.importorskip(module)
    folder = tmp_path_factory.mktemp("zoo-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORGEML_CACHE", str(folder))
        builds = build_zoo(progress=False)
    return {b.name: b for b in builds}


def reference_inputs(raw: np.ndarray, manifest: Any) -> np.ndarray:
    """What the manifest says a model takes: (x - mean) * scale, per channel, in its layout."""
    spec = manifest.input
    x = np.asarray(raw, dtype=np.float64).reshape(len(raw), *spec.shape)
    mean, scale = np.asarray(spec.mean), np.asarray(spec.scale)
    if spec.layout == "NCHW":
        mean, scale = mean.reshape(-1, 1, 1), scale.reshape(-1, 1, 1)
    return ((x - mean) * scale).astype(spec.dtype)


# ----------------------------------------------------------------------------- builders


def test_the_registry_names_every_builder() -> None:
    assert ZOO.names() == sorted(BUILTIN)
    assert len(BUILTIN) == 18
    with pytest.raises(Exception, match=r"Unknown zoo 'digits_cn'.*Did you mean 'digits_cnn'"):
        ZOO.load("digits_cn")


def test_standardization_is_of_the_train_split() -> None:
    mean, scale = standardization("iris")
    x = load_bundled("iris:train").x
    np.testing.assert_allclose(mean, x.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(scale, 1 / x.std(axis=0), rtol=1e-5)


BUILTIN_MANIFESTS = find_manifests([Path(__file__).resolve().parents[1] / MANIFESTS])


@pytest.mark.parametrize("manifest", BUILTIN_MANIFESTS, ids=lambda m: f"{m.name}-{m.framework}")
def test_manifests_describe_what_the_models_expect(manifest: Any) -> None:
    assert manifest.weights.zoo is not None
    builder = builder_or_skip(manifest.weights.zoo)
    if manifest.framework == "onnxruntime":
        assert builder.framework == "pytorch"
        assert builder.onnx
    else:
        assert builder.framework == manifest.framework
    dataset = manifest.attributes["training_dataset"]
    assert dataset == f"{builder.dataset}:train"
    test = load_bundled(builder.dataset)
    assert manifest.output.type == builder.output_type
    expected_labels = test.target_names or tuple(str(i) for i in range(10))
    if manifest.output.type == "classification":
        assert manifest.output.labels == expected_labels
    else:
        assert manifest.output.labels is None
    assert manifest.task == {
        "digits": "image_classification",
        "diabetes": "tabular_regression",
    }.get(builder.dataset, "tabular_classification")
    # The manifest's preprocessing is exactly what the model is trained on.
    np.testing.assert_allclose(
        reference_inputs(test.x, manifest), builder.inputs(test.x), rtol=1e-6, atol=1e-6
    )


# ----------------------------------------------------------------------------- building


def test_a_zoo_model_is_built_once_then_served_from_the_cache(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("sklearn")
    manifest = get_manifest("digits_logreg")
    assert zoo_build("digits_logreg") is None
    with caplog.at_level(logging.INFO, logger="forgeml.eval.zoo"):
        path = resolve_weights(manifest)
        again = resolve_weights(manifest)
    assert path == again == cache / "zoo" / "digits_logreg" / "digits_logreg.dry"
    trained = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Training")]
    assert trained == ["Training zoo model digits_logreg (sklearn) on digits:train ..."]
    assert any(
        r.getMessage().startswith("Built zoo model digits_logreg in ") for r in caplog.records
    )
    record = json.loads((path.parent / BUILD_RECORD).read_text())
    assert record["files"] == {"digits_logreg.dry": sha256(path.read_bytes())}
    assert record["versions"]["sklearn"]
    assert record["metrics"]["accuracy"] >= 0.93
    build = zoo_build("digits_logreg")
    assert build is not None
    assert build.archive == path
    assert not build.trained
    assert build.onnx is None
    model = load_object(path, allow=["forgeml.eval.zoo.", "sklearn."])
    assert get_builder("digits_logreg").evaluate(model) == build.metrics


def test_a_corrupted_zoo_file_is_refused_until_rebuilt(cache: Path) -> None:
    pytest.importorskip("sklearn")
    manifest = get_manifest("digits_logreg")
    path = resolve_weights(manifest)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(EvalError) as info:
        resolve_weights(manifest)
    text = str(info.value)
    assert f"the zoo file '{path}' fails its sha256 check" in text
    assert "Refusing to load it" in text
    assert "forgeml models build --force digits_logreg" in text
    assert "resolve_weights(manifest, force=True)" in text
    assert resolve_weights(manifest, force=True) == path
    assert resolve_weights(manifest) == path  # verified again


def test_a_manifest_sha256_is_checked_on_zoo_weights_too(cache: Path) -> None:
    pytest.importorskip("sklearn")
    manifest = get_manifest("digits_logreg")
    wrong = manifest.with_weights(replace(manifest.weights, sha256="0" * 64))
    with pytest.raises(EvalError, match=r"does not match the manifest's weights.sha256"):
        resolve_weights(wrong)


def test_zoo_manifest_errors(cache: Path) -> None:
    pytest.importorskip("sklearn")
    manifest = get_manifest("digits_logreg")
    onnx = replace(manifest, framework="onnxruntime")
    with pytest.raises(EvalError, match=r"is a sklearn model without an ONNX export"):
        resolve_weights(onnx)
    torch_named = replace(manifest, framework="pytorch")
    with pytest.raises(EvalError, match=r"is a sklearn model, but the manifest says pytorch"):
        resolve_weights(torch_named)
    assert zoo_build("digits_logreg") is None  # refused before training anything
    unknown = manifest.with_weights(replace(manifest.weights, zoo="digits_lgreg"))
    with pytest.raises(EvalError, match=r"Unknown zoo model 'digits_lgreg'.*'digits_logreg'"):
        resolve_weights(unknown)


def test_torch_models_are_also_exported_to_onnx(cache: Path) -> None:
    builder = builder_or_skip("digits_mlp")
    from forgeml.eval.zoo.onnx_export import run_onnx
    from forgeml.eval.zoo.torch_models import scores

    onnx_path = resolve_weights(get_manifest("digits_mlp", "onnxruntime"))
    archive = resolve_weights(get_manifest("digits_mlp", "pytorch"))
    assert onnx_path == archive.with_suffix(".onnx")
    record = json.loads((archive.parent / BUILD_RECORD).read_text())
    assert set(record["files"]) == {"digits_mlp.dry", "digits_mlp.onnx"}
    assert record["onnx_max_abs_diff"] < 1e-4
    model = load_object(archive)
    x = builder.inputs(load_bundled("digits").x)
    for batch in (x[:1], x[:7], x):  # the batch axis is dynamic
        expected = scores(model, batch)
        actual = run_onnx(onnx_path, batch)
        assert actual.shape == expected.shape == (len(batch), 10)
        assert np.max(np.abs(actual - expected)) < 1e-4
    # A damaged ONNX file is refused like an archive.
    onnx_path.write_bytes(onnx_path.read_bytes()[:-10])
    with pytest.raises(EvalError, match=r"fails its sha256 check"):
        resolve_weights(get_manifest("digits_mlp", "onnxruntime"))


def test_two_processes_build_a_model_once(cache: Path) -> None:
    pytest.importorskip("sklearn")
    code = (
        "import json\n"
        "from forgeml.eval._weights import build_zoo\n"
        "(b,) = build_zoo(['digits_forest'], progress=False)\n"
        "print(json.dumps({'trained': b.trained, 'files': dict(b.files)}))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=100)
        assert proc.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["trained"] for r in results) == [False, True]
    assert results[0]["files"] == results[1]["files"]


def _state(model: Any) -> list[np.ndarray]:
    """The learned numbers of a zoo model, whatever its framework."""
    inner = getattr(model, "model", model)
    if hasattr(inner, "state_dict"):
        return [t.detach().numpy() for t in inner.state_dict().values()]
    if hasattr(inner, "get_weights"):
        return [np.asarray(w) for w in inner.get_weights()]
    if hasattr(inner, "get_booster"):
        return [np.frombuffer(bytes(inner.get_booster().save_raw("json")), dtype=np.uint8)]
    return []


def check_reproducible(names: list[str]) -> None:
    builders = {name: builder_or_skip(name) for name in names}
    first = {b.name: load_object(b.archive) for b in build_zoo(names, progress=False)}
    rebuilt = build_zoo(names, force=True, progress=False)
    assert all(b.trained for b in rebuilt)
    for build in rebuilt:
        builder = builders[build.name]
        model = load_object(build.archive)
        x = builder.inputs(load_bundled(builder.dataset).x)
        np.testing.assert_array_equal(
            builder.scores(first[build.name], x), builder.scores(model, x), err_msg=build.name
        )
        for a, b in zip(_state(first[build.name]), _state(model), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=build.name)


def test_builds_are_reproducible(cache: Path) -> None:
    check_reproducible(["digits_cnn", "digits_forest", "digits_xgb", "diabetes_torch"])


@pytest.mark.slow
def test_keras_builds_are_reproducible(cache: Path) -> None:
    check_reproducible(["digits_keras_cnn", "diabetes_keras"])


# ----------------------------------------------------------------------------- the whole zoo


@pytest.mark.slow
def test_the_whole_zoo_builds(zoo: dict[str, ZooBuild]) -> None:
    assert sorted(zoo) == sorted(BUILTIN)
    for name, build in zoo.items():
        assert build.trained
        assert build.framework == BUILTIN[name]
        expected = {f"{name}.dry"} | ({f"{name}.onnx"} if build.framework == "pytorch" else set())
        assert set(build.files) == expected
        for file, digest in build.files.items():
            assert sha256((build.folder / file).read_bytes()) == digest
        record = json.loads((build.folder / BUILD_RECORD).read_text())
        assert record["seconds"] > 0
        assert record["versions"]["forgeml"]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FLOORS))
def test_zoo_accuracy_on_the_held_out_split(zoo: dict[str, ZooBuild], name: str) -> None:
    build = zoo[name]
    builder = get_builder(name)
    model = load_object(build.archive)
    metrics = builder.evaluate(model)
    assert metrics == build.metrics
    (value,) = metrics.values()
    assert value >= FLOORS[name], f"{name}: {metrics}"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n, f in BUILTIN.items() if f == "pytorch"))
def test_onnx_parity(zoo: dict[str, ZooBuild], name: str) -> None:
    from forgeml.eval.zoo.onnx_export import run_onnx

    build = zoo[name]
    assert build.onnx is not None
    builder = get_builder(name)
    model = load_object(build.archive)
    x = builder.inputs(load_bundled(builder.dataset).x)
    expected = builder.scores(model, x)
    actual = run_onnx(build.onnx, x)
    assert actual.shape == expected.shape
    assert np.max(np.abs(actual - expected)) < 1e-4


# ----------------------------------------------------------------------------- path weights


def path_manifest(folder: Path, weights: str) -> Path:
    return write(
        folder / "m.yml",
        f"""
        name: tiny
        task: tabular_classification
        framework: sklearn
        inputs: {{shape: [4]}}
        output: {{type: classification}}
        weights: {weights}
        """,
    )


def test_path_weights_are_relative_to_the_manifest_and_verified(tmp_path: Path) -> None:
    weights = write(tmp_path / "models" / "w" / "tiny.dry", "weights")
    digest = sha256(weights.read_bytes())
    manifest = load_manifest(path_manifest(tmp_path / "models", "{path: w/tiny.dry}"))
    assert resolve_weights(manifest) == weights
    checked = path_manifest(tmp_path / "models", f"{{path: w/tiny.dry, sha256: {digest}}}")
    assert resolve_weights(load_manifest(checked)) == weights
    absolute = path_manifest(tmp_path / "other", f"{{path: {weights}, sha256: {digest}}}")
    assert resolve_weights(load_manifest(absolute)) == weights

    weights.write_text("changed")
    with pytest.raises(EvalError) as info:
        resolve_weights(load_manifest(checked))
    assert f"Model 'tiny' (sklearn, {checked}): the weights file '{weights}'" in str(info.value)
    assert "does not match the manifest's weights.sha256: its sha256 is " in str(info.value)
    assert f"expected {digest}. Refusing to load it" in str(info.value)

    missing = load_manifest(path_manifest(tmp_path / "models", "{path: w/none.dry}"))
    with pytest.raises(EvalError, match=r"none.dry' does not exist. weights.path is relative"):
        resolve_weights(missing)


# ----------------------------------------------------------------------------- url weights


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on 127.0.0.1; yields (folder, base URL)."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_url_weights_are_downloaded_verified_and_cached(
    cache: Path, tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    root, base = http_root
    (root / "model.dry").write_bytes(b"model bytes")
    digest = sha256(b"model bytes")
    manifest = load_manifest(
        path_manifest(tmp_path / "m", f"{{url: '{base}/model.dry', sha256: {digest}}}")
    )
    path = resolve_weights(manifest)
    assert path.read_bytes() == b"model bytes"
    assert path.is_relative_to(cache)
    (root / "model.dry").unlink()  # served from the cache now
    assert resolve_weights(manifest) == path

    (root / "other.dry").write_bytes(b"tampered")
    wrong = load_manifest(
        path_manifest(tmp_path / "w", f"{{url: '{base}/other.dry', sha256: {digest}}}")
    )
    with pytest.raises(EvalError) as info:
        resolve_weights(wrong)
    assert str(info.value).startswith("Model 'tiny' (sklearn, ")
    assert digest in str(info.value)
    assert sha256(b"tampered") in str(info.value)
    assert not any(p.name == "other.dry" for p in cache.rglob("*"))  # nothing entered the cache


# ----------------------------------------------------------------------------- repo weights


def test_repo_weights_select_exactly_one_object(tmp_path: Path) -> None:
    from repo_objects import Point

    repo = Repo(tmp_path / "models" / "repo", create=True)
    one = repo.add_object(Point(1), tags="best")
    repo.add_object(Point(2))
    repo.add_object(Point(2, y=5))

    def manifest(selector: str) -> Any:
        return load_manifest(
            path_manifest(tmp_path / "models", f"{{repo: repo, selector: {selector}}}")
        )

    path = resolve_weights(manifest("{cls: Point, args: [1]}"))
    assert path == repo.entry(one).file
    assert load_object(path).x == 1
    assert resolve_weights(manifest("{cls: Point, tags: best}")) == path
    assert resolve_weights(manifest("{cls: Point, args: [2], kwargs: {y: 5}}")).is_file()

    with pytest.raises(EvalError) as info:
        resolve_weights(manifest("{cls: Point, args: [2]}"))
    assert "must select exactly one object in repo" in str(info.value)
    assert "it selects 2: " in str(info.value)
    with pytest.raises(EvalError, match=r"it selects 0. Narrow it"):
        resolve_weights(manifest("{cls: Point, args: [3]}"))
    missing = load_manifest(
        path_manifest(tmp_path / "elsewhere", "{repo: nope, selector: {cls: Point}}")
    )
    with pytest.raises(EvalError, match=r"weights.repo: Repo directory .*nope' does not exist"):
        resolve_weights(missing)


def test_repo_weights_outside_the_repos_objects_folder_are_refused(tmp_path: Path) -> None:
    import sqlite3

    from repo_objects import Point

    repo = Repo(tmp_path / "models" / "repo", create=True)
    dry_id = repo.add_object(Point(1))
    victim = tmp_path / "models" / "victim.dry"
    repo.entry(dry_id).file.replace(victim)
    with sqlite3.connect(repo.directory / "index.sqlite") as db:
        db.execute("UPDATE objects SET file = '../../victim.dry' WHERE dry_id = ?", (dry_id,))
    manifest = load_manifest(
        path_manifest(tmp_path / "models", "{repo: repo, selector: {cls: Point}}")
    )
    with pytest.raises(EvalError, match=r"weights.repo: .*outside its objects/ folder"):
        resolve_weights(manifest)


def test_repo_weights_on_s3_are_fetched_into_the_cache(
    s3_env: str, cache: Path, tmp_path: Path
) -> None:
    from repo_objects import Point

    url = f"s3://{s3_env}/models"
    repo = Repo(url, create=True)
    dry_id = repo.add_object(Point(7), tags="best")
    manifest = load_manifest(
        path_manifest(tmp_path, f"{{repo: '{url}', selector: {{cls: Point, tags: best}}}}")
    )
    path = resolve_weights(manifest)
    assert path.is_relative_to(cache)
    loaded = load_object(path)
    assert (loaded.x, loaded.dry_id) == (7, dry_id)


# ----------------------------------------------------------------------------- CLI build


def test_models_build_trains_then_reports_cached(cache: Path) -> None:
    pytest.importorskip("sklearn")
    result = invoke("models", "build", "digits_logreg")
    assert result.exit_code == 0, result.output
    assert "Training zoo model digits_logreg (sklearn) on digits:train ..." in result.output
    line = next(x for x in result.output.splitlines() if x.startswith("digits_logreg "))
    assert "trained in" in line
    assert "test accuracy 0.9" in line
    assert str(zoo_folder("digits_logreg")) in line

    result = invoke("models", "build", "digits_logreg", "--json")
    (record,) = json.loads(result.output)
    assert record["trained"] is False
    assert record["name"] == "digits_logreg"

    result = invoke("models", "ls", "--framework", "sklearn")
    rows = {tuple(x.split()[:2]): x.split()[-1] for x in result.output.splitlines()[1:]}
    assert rows[("digits_logreg", "sklearn")] == "yes"
    assert rows[("digits_forest", "sklearn")] == "no"

    result = invoke("models", "show", "digits_logreg", "--json")
    status = json.loads(result.output)["weights"]
    assert status["built"] is True
    assert status["path"] == str(zoo_folder("digits_logreg") / "digits_logreg.dry")
    assert status["build"]["metrics"]["accuracy"] >= 0.93


def test_models_build_names(cache: Path) -> None:
    result = invoke("models", "build", "digits_lgreg")
    assert result.exit_code == 1
    assert "'digits_lgreg' is neither a zoo model nor a model with zoo weights" in result.output
    assert "Did you mean 'digits_logreg'?" in result.output
    from forgeml.cli.models import _zoo_names

    assert _zoo_names(("iris_classifier", "iris_torch", "digits_cnn")) == [
        "iris_torch",
        "iris_sklearn",
        "iris_keras",
        "iris_xgb",
        "digits_cnn",
    ]
