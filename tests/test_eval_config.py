"""``forgeml eval --cfg FILE``: options from YAML config files, merged in order, with the
options given on the command line winning; ``trace:`` and ``scenario:`` groups.

Real runs: the zoo's ``digits_logreg`` (scikit-learn, trained in about a second on the
bundled digits, cached under FORGEML_CACHE for the module).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from forgeml.cli import cli

MODEL = "digits_logreg"


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder for the zoo's trained models, shared by this module's tests."""
    pytest.importorskip("sklearn")
    return tmp_path_factory.mktemp("zoo-cache")


@pytest.fixture
def env(zoo_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FORGEML_CACHE", str(zoo_cache))
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FORGEML_MODELS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    return tmp_path


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["eval", *args], catch_exceptions=False)


def run_json(*args: str) -> dict[str, Any]:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_model_name_from_the_config_alone(env: Path) -> None:
    cfg = write(env / "eval.yml", f"model_name: {MODEL}\nbatch_size: 32\nnum_batches: 2\n")
    data = run_json("--cfg", cfg, "--no_store")
    assert data["model"] == MODEL
    assert data["batch_size"] == 32
    assert data["num_samples"] == 64
    assert data["metrics"]["top1"] > 0.8


def test_trace_group_writes_a_trace_and_the_command_line_wins(env: Path) -> None:
    cfg = write(
        env / "traced.yml",
        f"model_name: {MODEL}\nbatch_size: 16\nnum_batches: 3\n"
        "trace:\n  level: MODEL\n  file: cfg.trace.json\n",
    )
    result = run("--cfg", cfg, "--no_store")
    assert result.exit_code == 0, result.output
    assert "trace (MODEL, single): cfg.trace.json" in result.output
    events = json.loads((env / "cfg.trace.json").read_text())
    names = {e.get("name") for e in events.get("traceEvents", events)}
    assert "predict" in names

    (env / "cfg.trace.json").unlink()
    data = run_json("--cfg", cfg, "--no_store", "--trace_level", "NO_TRACE", "--batch_size", "8")
    assert not (env / "cfg.trace.json").exists()
    assert not data.get("trace")
    assert data["batch_size"] == 8  # the command line wins over the file
    assert data["num_samples"] == 24  # num_batches still from the file


def test_flat_trace_keys_are_accepted(env: Path) -> None:
    cfg = write(
        env / "flat.yml",
        f"model_name: {MODEL}\nnum_batches: 2\ntrace_level: APPLICATION\n"
        "trace_file: flat.trace.json\n",
    )
    data = run_json("--cfg", cfg, "--no_store")
    assert data["trace"]["level"] == "APPLICATION"
    assert (env / "flat.trace.json").is_file()


def test_scenario_group_runs_the_scenario(env: Path) -> None:
    cfg = write(
        env / "scenario.yml",
        f"model_name: {MODEL}\nbatch_size: 1\nnum_batches: 2\n"
        "scenario:\n  name: single_stream\n  min_duration: 0.05\n  min_query_count: 20\n"
        "  max_duration: 5\n  seed: 3\n",
    )
    data = run_json("--cfg", cfg, "--no_store")
    scenario = data["scenario"]
    assert scenario["scenario"] == "single_stream"
    assert scenario["queries"] >= 20
    assert scenario["status"] == "VALID"
    assert scenario["settings"]["min_query_count"] == 20
    assert scenario["settings"]["seed"] == 3


def test_files_merge_in_order_and_null_restores_the_default(env: Path) -> None:
    base = write(
        env / "base.yml",
        f"model_name: {MODEL}\nbatch_size: 4\nnum_batches: 5\nnum_warmup: 2\n"
        "trace: {level: MODEL, file: base.trace.json}\n",
    )
    more = write(env / "more.yml", "batch_size: 10\ntrace:\n  level: null\n")
    data = run_json("--cfg", base, "--cfg", more, "--no_store")
    assert data["batch_size"] == 10  # the later file wins
    assert data["num_samples"] == 50  # num_batches from the first
    assert data["num_warmup"] == 2
    assert not data.get("trace")  # null: back to the default (no trace)
    assert not (env / "base.trace.json").exists()


def test_import_and_include_work(env: Path) -> None:
    write(env / "common.yml", f"model_name: {MODEL}\nnum_batches: 1\n")
    cfg = write(env / "main.yml", "import:\n  defaults: !include common.yml\nbatch_size: 7\n")
    data = run_json("--cfg", cfg, "--no_store")
    assert (data["model"], data["batch_size"], data["num_samples"]) == (MODEL, 7, 7)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "model_nmae: x\n",
            ["bad.yml, line 1: unknown key 'model_nmae'", "Known: agent,", "'model_name'?"],
        ),
        (
            "batch_size: 2\ntrace:\n  levle: MODEL\n",
            ["bad.yml, line 3: unknown key 'trace.levle'", "level, mode, file, endpoint",
             "'level'?"],
        ),
        (
            "batch_size: abc\n",
            ["bad.yml, line 1: invalid value for 'batch_size' (the --batch_size option)",
             "'abc' is not a valid integer"],
        ),
        ("num_warmup: 1.5\n", ["bad.yml, line 1:", "'num_warmup'", "1.5 is not a valid integer"]),
        ("target_qps: [1, 2]\n", ["'target_qps'", "not a single value"]),
        (
            "trace:\n  mode: sometimes\n",
            ["bad.yml, line 2: invalid value for 'trace.mode' (the --trace_mode option)",
             "'sometimes' is not one of 'single', 'leveled'"],
        ),
        ("trace: MODEL\n", ["'trace' must be a mapping of level, mode, file, endpoint"]),
        ("trace_level: MODEL\ntrace: {level: FULL}\n", ["both set --trace_level"]),
    ],
)  # fmt: skip
def test_invalid_config_names_file_and_key(env: Path, text: str, expected: list[str]) -> None:
    cfg = write(env / "bad.yml", text)
    result = run("--cfg", cfg, "--model_name", MODEL)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ")
    for part in expected:
        assert part in result.output


def test_a_missing_config_file_is_a_usage_error(env: Path) -> None:
    result = run("--cfg", "nope.yml")
    assert result.exit_code == 2
    assert "nope.yml" in result.output


def test_model_name_is_still_required(env: Path) -> None:
    cfg = write(env / "partial.yml", "batch_size: 4\n")
    result = run("--cfg", cfg)
    assert result.exit_code == 2
    assert "--model-name" in result.output


def test_cfg_does_not_combine_with_a_subcommand(env: Path) -> None:
    cfg = write(env / "eval.yml", f"model_name: {MODEL}\n")
    spec = write(env / "spec.yml", f"models: [{MODEL}]\n")
    result = run("--cfg", cfg, "matrix", spec, "--dry-run")
    assert result.exit_code == 2
    assert "(--cfg)" in result.output
    assert "do not apply to 'forgeml eval matrix'" in result.output
