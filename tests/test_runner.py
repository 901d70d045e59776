"""The evaluation runner: forgeml.eval.evaluate, EvalResult, latency statistics, provenance,
saved outputs and the ``forgeml eval`` command.

The model is real and small: a linear classifier on scikit-learn's digits, run by the
``numpy_linear`` agent and scored by the ``npz_classification`` task of
``tests/eval_fixtures.py`` (registered for each test, undone after it).
"""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import eval_fixtures
from forgeml import EvalError
from forgeml.cli import cli
from forgeml.eval import EvalResult, LatencyStats, ResultsDB, evaluate
from forgeml.eval._stats import BUCKETS, LatencyHistogram, LatencyRecorder

MODEL = eval_fixtures.MODEL
TASK = eval_fixtures.TASK
DIGITS_TEST = 450  # samples in the held-out part of digits


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return eval_fixtures.install(tmp_path, monkeypatch)


def ordered(stats: LatencyStats) -> bool:
    values = [stats.min, stats.p50, stats.p90, stats.p95, stats.p99, stats.max]
    return all(a <= b for a, b in itertools.pairwise(values)) and (
        stats.min <= stats.mean <= stats.max
    )


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_counts_scores_and_times(models: Path) -> None:
    result = evaluate(MODEL, agent="numpy_linear", batch_size=2, num_warmup=2)

    assert (result.model, result.framework, result.agent, result.task) == (
        MODEL,
        "numpy",
        "numpy_linear",
        TASK,
    )
    assert (result.dataset, result.batch_size, result.device) == ("digits", 2, "cpu")
    assert result.num_samples == DIGITS_TEST
    assert result.num_batches == DIGITS_TEST // 2
    assert result.num_warmup == 2
    assert result.model_version == "2"
    assert result.metrics["top1"] > 0.9
    assert result.metrics["top5"] >= result.metrics["top1"]
    assert np.asarray(result.metrics["confusion_matrix"]).sum() == DIGITS_TEST

    assert set(result.latency) == {"preprocess", "predict", "postprocess", "total"}
    for stats in result.latency.values():
        assert stats.count == result.num_batches
        assert stats.min > 0
        assert ordered(stats), stats
    total, parts = result.latency["total"], ("preprocess", "predict", "postprocess")
    assert total.mean == pytest.approx(sum(result.latency[p].mean for p in parts), rel=1e-6)
    # Throughput is over the whole loop, which includes the timed phases.
    assert result.throughput == pytest.approx(result.num_samples / result.duration_s)
    busy_s = total.mean * total.count / 1000
    assert result.duration_s >= busy_s
    assert result.throughput <= result.num_samples / busy_s
    assert result.spread is not None


def test_warmup_batches_run_but_are_not_counted(models: Path) -> None:
    result = evaluate(MODEL, agent="numpy_linear", batch_size=50, num_warmup=3, store=False)
    predictor = eval_fixtures.linear_agent.loaded[-1]
    assert result.num_batches == 9  # 450 / 50
    assert predictor.calls == 3 + 9
    assert result.latency["predict"].count == 9
    assert predictor.closed


def test_the_predictor_session_is_held_around_every_predict_call(models: Path) -> None:
    evaluate(MODEL, agent="numpy_linear", batch_size=50, num_warmup=2, store=False)
    predictor = eval_fixtures.linear_agent.loaded[-1]
    assert predictor.sessions == 1
    assert predictor.calls_in_session == predictor.calls == 2 + 9
    assert not predictor.in_session


def test_metrics_are_fed_in_chunks_with_the_same_result(models: Path) -> None:
    from forgeml.eval._runner import _ChunkedMetrics

    by_batch = eval_fixtures.ClassificationMetrics(10)
    chunked_into = eval_fixtures.ClassificationMetrics(10)
    calls: list[int] = []

    def update(predictions: Any, outputs: Any, labels: Any) -> None:
        calls.append(len(labels))
        chunked_into.update(predictions, outputs, labels)

    chunked = _ChunkedMetrics(update)
    chunked.max_samples = 25
    rng = np.random.default_rng(0)
    buffer = np.zeros((3, 10))
    for _ in range(20):
        buffer[:] = rng.normal(size=(3, 10))  # an agent that reuses its output buffer
        labels = rng.integers(0, 10, size=3)
        predictions = buffer.argmax(axis=1)
        by_batch.update(predictions, buffer, labels)
        chunked.add(predictions, buffer, labels)
    chunked.flush()
    assert calls == [27, 27, 6]
    assert chunked_into.result() == by_batch.result()
    # Batches that cannot be joined (ragged outputs) are fed one by one.
    calls.clear()
    chunked.add(np.zeros(2, int), np.zeros((2, 10)), np.zeros(2, int))
    chunked.add(np.zeros(1, int), np.zeros((1, 12)), np.zeros(1, int))
    chunked.flush()
    assert calls == [2, 1]


def test_warmup_longer_than_the_dataset_restarts_it(models: Path, tmp_path: Path) -> None:
    small = tmp_path / "small.npz"
    np.savez(small, x=np.zeros((3, 8, 8)), y=np.zeros(3, dtype=np.int64))
    result = evaluate(MODEL, dataset=small, agent="linear", batch_size=2, num_warmup=5)
    assert (result.num_samples, result.num_batches) == (3, 2)
    assert eval_fixtures.linear_agent.loaded[-1].calls == 5 + 2


def test_num_batches_limits_what_is_timed_and_scored(models: Path) -> None:
    result = evaluate(MODEL, agent="numpy_linear", batch_size=4, num_batches=5, store=False)
    assert (result.num_samples, result.num_batches) == (20, 5)
    assert np.asarray(result.metrics["confusion_matrix"]).sum() == 20


def test_agent_defaults_to_the_manifest_framework_when_registered(models: Path) -> None:
    with pytest.raises(EvalError, match=r"no agent is named after that framework.*--agent"):
        evaluate(MODEL, batch_size=64, store=False)


def test_a_manifest_path_or_object_is_a_model(models: Path) -> None:
    from forgeml.eval import load_manifest

    path = models / f"{MODEL}.yml"
    by_path = evaluate(str(path), agent="numpy_linear", batch_size=150, store=False)
    by_object = evaluate(load_manifest(path), agent="numpy_linear", batch_size=150, store=False)
    assert by_path.metrics["top1"] == by_object.metrics["top1"]


def test_progress_callback_sees_every_batch_at_the_end(models: Path) -> None:
    seen: list[tuple[int, int]] = []
    evaluate(
        MODEL,
        agent="numpy_linear",
        batch_size=1,
        num_warmup=0,
        store=False,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert seen[-1] == (DIGITS_TEST, DIGITS_TEST)
    assert 50 <= len(seen) <= 102  # about a hundred updates, not one per batch
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_jittery_predictor_gets_a_spread_warning(models: Path) -> None:
    result = evaluate(MODEL, agent="numpy_jitter", batch_size=10, num_warmup=0, store=False)
    assert result.spread is not None
    assert result.spread > 0.1
    (warning,) = [w for w in result.warnings if "spread" in w]
    assert "IQR/median" in warning
    assert "above 10%" in warning


def test_dataset_problems_and_missing_labels_are_reported(models: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(0, 16, size=(6, 8, 8))
    x[2, 0, 0] = np.nan
    np.savez(tmp_path / "unlabelled.npz", x=x)
    result = evaluate(
        MODEL, agent="numpy_linear", dataset=tmp_path / "unlabelled.npz", batch_size=4, store=False
    )
    assert result.num_samples == 5
    assert result.problems == ["sample 2: contains NaN"]
    assert result.metrics == {}
    assert any("could not be read" in w for w in result.warnings)
    assert any("no labels" in w for w in result.warnings)


# ----------------------------------------------------------------------------- memory


def test_latency_memory_does_not_grow_with_batches(models: Path) -> None:
    histogram = LatencyHistogram()
    size = histogram.nbytes
    histogram.record(np.arange(1, 100_001))
    assert histogram.nbytes == size == BUCKETS * 8
    recorder = LatencyRecorder(["a", "b"])
    assert recorder.nbytes == 2 * size + 2 * recorder.chunk * 8

    def peak(batches: int) -> int:
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            result = evaluate(
                MODEL,
                agent="numpy_linear",
                dataset=f"synthetic:{batches}",
                batch_size=1,
                num_warmup=0,
                store=False,
            )
            assert result.num_batches == batches
            return tracemalloc.get_traced_memory()[1] - before
        finally:
            tracemalloc.stop()

    peak(1500)  # imports and caches settle
    small, large = peak(1500), peak(15_000)
    assert large - small < 64 * 1024, (small, large)


# ----------------------------------------------------------------------------- provenance


def test_provenance_records_machine_libraries_and_threads(models: Path) -> None:
    import forgeml

    result = evaluate(MODEL, agent="numpy_linear", batch_size=150, threads=2, store=False)
    p = result.provenance
    assert p["cpu"]["model"]
    assert p["cpu"]["logical_cores"] >= 1
    assert "gpu" in p
    assert p["gpu"] is None  # a CPU run names no GPU, whatever the machine has
    assert p["versions"]["numpy"] == np.__version__
    assert p["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert p["forgeml_version"] == forgeml.__version__
    assert p["threads"]["requested"] == 2
    assert p["threads"]["agent"] == "2"
    assert p["agent"]["framework"] == "numpy"
    assert p["device"] == "cpu"
    assert p["git_commit"] is None  # the working directory is no git repository


def test_provenance_records_the_git_commit(models: Path, tmp_path: Path) -> None:
    repo = tmp_path / "project"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    (repo / "a.txt").write_text("a")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    (repo / "notes.txt").write_text("untracked")

    def provenance() -> dict[str, Any]:
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(repo)
            return evaluate(MODEL, agent="numpy_linear", batch_size=150, store=False).provenance

    p = provenance()
    assert p["git_commit"] == git("rev-parse", "HEAD")
    # dirty means changed tracked files, as in tracked runs; untracked ones are counted
    assert (p["git_dirty"], p["git_untracked"]) == (False, 1)
    (repo / "a.txt").write_text("changed")
    p = provenance()
    assert (p["git_dirty"], p["git_untracked"]) == (True, 1)


def test_provenance_names_the_gpu_of_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    from forgeml.eval._provenance import device_gpu

    gpus = [{"index": i, "name": f"GPU {i}", "uuid": f"GPU-{i}a{i}b-0000"} for i in range(4)]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert device_gpu("cpu", gpus) is None
    assert device_gpu("cuda:2", gpus) == gpus[2]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")  # cuda:0 is driver GPU 3
    assert device_gpu("cuda:0", gpus) == gpus[3]
    assert device_gpu("cuda:1", gpus) == gpus[1]
    assert device_gpu("cuda:2", gpus) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-2a2b")  # a UUID prefix
    assert device_gpu("cuda:0", gpus) == gpus[2]


# ----------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("suffix", [".csv", ".json", ".npz"])
def test_save_output_writes_predictions(models: Path, tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"predictions{suffix}"
    result = evaluate(
        MODEL, agent="numpy_linear", batch_size=100, num_batches=2, save_output=out, store=False
    )
    assert result.output_file == str(out)
    if suffix == ".npz":
        with np.load(out) as data:
            ids, predicted, target = data["ids"], data["predicted"], data["target"]
            classes, scores = data["top_classes"], data["top_scores"]
        assert classes.shape == scores.shape == (200, 5)
        assert (classes[:, 0] == predicted).all()
        assert (np.diff(scores, axis=1) <= 0).all()
        assert list(ids[:3]) == ["0", "1", "2"]
        top1 = float((predicted == target).mean())
    elif suffix == ".json":
        records = json.loads(out.read_text())
        assert len(records) == 200
        first = records[0]
        assert set(first) == {"id", "predicted", "predicted_label", "target", "top"}
        assert first["predicted_label"] == str(first["predicted"])
        assert first["top"][0]["class"] == first["predicted"]
        assert len(first["top"]) == 5
        top1 = float(np.mean([r["predicted"] == r["target"] for r in records]))
    else:
        rows = list(csv.DictReader(out.open()))
        assert len(rows) == 200
        assert list(rows[0])[:4] == ["id", "predicted", "predicted_label", "target"]
        assert list(rows[0])[-2:] == ["class_5", "score_5"]
        assert rows[0]["class_1"] == rows[0]["predicted"]
        top1 = float(np.mean([r["predicted"] == r["target"] for r in rows]))
    assert top1 == pytest.approx(result.metrics["top1"])


def test_save_output_suffix_is_checked_before_running(models: Path, tmp_path: Path) -> None:
    with pytest.raises(EvalError, match=r"'save_output' .* \.csv, \.json, \.npz .*Got"):
        evaluate(MODEL, agent="numpy_linear", save_output=tmp_path / "p.txt")
    assert eval_fixtures.linear_agent.loaded == []


# ----------------------------------------------------------------------------- results


def test_result_round_trips_and_is_stored(models: Path) -> None:
    result = evaluate(MODEL, agent="numpy_linear", batch_size=150)
    again = EvalResult.from_json(result.to_json())
    assert again.to_dict() == result.to_dict()
    stored = ResultsDB().get(result.id[:8])
    assert stored.to_dict() == result.to_dict()
    assert (models.parent / "home" / "results.db").is_file()
    text = result.summary()
    assert "latency (ms)" in text
    assert "throughput" in text
    assert f"{DIGITS_TEST} samples in 3 batches" in text


def test_invalid_options_say_what_and_how(models: Path) -> None:
    with pytest.raises(EvalError, match=r"'batch_size' option of eval must be a positive .*-2"):
        evaluate(MODEL, agent="numpy_linear", batch_size=-2)
    with pytest.raises(EvalError, match=r"'num_warmup' .* non-negative integer. Got -1"):
        evaluate(MODEL, agent="numpy_linear", num_warmup=-1)
    with pytest.raises(EvalError, match=r"'architecture' .* cpu, gpu or cuda:N. Got 'tpu'"):
        evaluate(MODEL, agent="numpy_linear", architecture="tpu")
    with pytest.raises(EvalError, match=r"Unknown agent 'numpy_lineer'.*'numpy_linear'"):
        evaluate(MODEL, agent="numpy_lineer")  # the agents' own lookup: an EvalError
    with pytest.raises(EvalError, match=r"Unknown task 'npz_clasification'.*'npz_classific"):
        evaluate(MODEL, agent="numpy_linear", task="npz_clasification")


def test_gpu_architecture_needs_a_gpu(models: Path) -> None:
    from forgeml._core._env import nvidia_gpu_count

    if nvidia_gpu_count():
        pytest.skip("a GPU is visible here; this checks the error without one")
    with pytest.raises(EvalError, match=r"needs an NVIDIA GPU.*--architecture cpu"):
        evaluate(MODEL, agent="numpy_linear", architecture="gpu")


# ----------------------------------------------------------------------------- tracking


def test_tracking_is_skipped_unless_configured(models: Path) -> None:
    result = evaluate(MODEL, agent="numpy_linear", batch_size=150)
    assert result.tracking_run_id is None
    assert not (models.parent / "home" / "mlruns.db").exists()


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    pytest.importorskip("mlflow")
    pytest.importorskip("forgeml.track")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.mark.slow
def test_tracking_logs_a_run_to_a_real_mlflow_store(
    models: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    result = evaluate(MODEL, agent="numpy_linear", batch_size=150)
    assert result.tracking_run_id
    assert result.warnings == [] or all("spread" in w for w in result.warnings)
    assert ResultsDB().get(result.id).tracking_run_id == result.tracking_run_id
    client = mlflow.MlflowClient(mlflow_uri)
    run = client.get_run(result.tracking_run_id)
    assert run.data.params["model"] == MODEL
    assert run.data.params["batch_size"] == "150"
    assert run.data.metrics["top1"] == pytest.approx(result.metrics["top1"])
    assert run.data.metrics["latency_predict_p50_ms"] > 0
    assert run.data.metrics["throughput"] == pytest.approx(result.throughput)
    assert run.data.tags["forgeml.eval_id"] == result.id
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "forgeml-eval"
    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="evaluation.json", tracking_uri=mlflow_uri
    )
    assert json.loads(Path(local).read_text())["id"] == result.id

    no_track = evaluate(MODEL, agent="numpy_linear", batch_size=150, track=False)
    assert no_track.tracking_run_id is None


def test_a_tracking_failure_is_a_warning(
    models: Path, mlflow_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "bogus://nowhere")
    result = evaluate(MODEL, agent="numpy_linear", batch_size=150)
    assert result.tracking_run_id is None
    (warning,) = [w for w in result.warnings if "MLflow" in w]
    assert "bogus://nowhere" in warning
    assert ResultsDB().get(result.id).warnings == result.warnings


@pytest.mark.slow
def test_tracking_logs_into_the_active_run(models: Path, mlflow_uri: str) -> None:
    import mlflow

    from forgeml import track

    with track.start_run("sweep", uri=mlflow_uri, log_output=False, log_system=False) as run:
        first = evaluate(MODEL, agent="numpy_linear", batch_size=150, store=False)
        second = evaluate(MODEL, agent="numpy_linear", batch_size=50, store=False)
    assert first.tracking_run_id == second.tracking_run_id == run.run_id
    metrics = mlflow.MlflowClient(mlflow_uri).get_run(str(run.run_id)).data.metrics
    assert metrics[f"eval.{MODEL}.numpy_linear.b150.top1"] == pytest.approx(first.metrics["top1"])
    assert f"eval.{MODEL}.numpy_linear.b50.throughput" in metrics


# ----------------------------------------------------------------------------- CLI


def run_cli(args: list[str]) -> Any:
    return CliRunner().invoke(cli, args, catch_exceptions=False)


ACCEPTANCE = [
    "eval",
    "--task",
    TASK,
    "--agent",
    "numpy_linear",
    "--model_name",
    MODEL,
    "--architecture",
    "cpu",
    "--num_warmup",
    "2",
    "--dataset_name",
    "digits",
    "--batch_size",
    "2",
]


def test_cli_eval_with_underscore_options(models: Path) -> None:
    result = run_cli(ACCEPTANCE)
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"{MODEL} · numpy_linear" in out
    assert f"{DIGITS_TEST} samples in {DIGITS_TEST // 2} batches (2 warmup batches" in out
    for phase in ("preprocess", "predict", "postprocess", "total"):
        assert phase in out
    assert "p99" in out
    assert "top1" in out
    assert "samples/s" in out
    assert "recorded as" in out
    assert len(ResultsDB()) == 1


def test_cli_eval_with_dashed_options_and_json(models: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "out.csv"
    result = run_cli(
        [
            "eval",
            "--model-name",
            MODEL,
            "--agent",
            "numpy_linear",
            "--dataset-name",
            "digits",
            "--batch-size",
            "10",
            "--num-warmup",
            "1",
            "--num-batches",
            "7",
            "--threads",
            "1",
            "--save-output",
            str(out_file),
            "--json",
        ]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["num_samples"], data["num_batches"], data["batch_size"]) == (70, 7, 10)
    assert data["latency_ms"]["predict"]["count"] == 7
    assert data["metrics"]["top1"] > 0.8
    assert data["provenance"]["threads"]["requested"] == 1
    assert data["output_file"] == str(out_file)
    assert len(out_file.read_text().splitlines()) == 71
    assert ResultsDB().get(data["id"]).num_samples == 70


def test_cli_eval_dataset_path_and_no_store(models: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(0).uniform(0, 16, size=(9, 8, 8))
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(9) % 10)
    result = run_cli(
        ["eval", "--model_name", MODEL, "--agent", "linear", "--dataset_path",
         str(tmp_path / "d.npz"), "--batch_size", "4", "--no_store", "--json"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["num_samples"] == 9
    assert len(ResultsDB()) == 0
    both = run_cli(
        ["eval", "--model_name", MODEL, "--dataset_name", "digits", "--dataset_path",
         str(tmp_path / "d.npz")]
    )  # fmt: skip
    assert both.exit_code == 2
    assert "not both" in both.output


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--agent", "numpy_lineer", "Unknown agent 'numpy_lineer'. Known: "),
        ("--model_name", "linear_digit", "Unknown model 'linear_digit'. Known: "),
        ("--task", "npz_clasification", "Unknown task 'npz_clasification'. Known: "),
        ("--dataset_name", "digts", "Unknown dataset 'digts'. Bundled: "),
    ],
)
def test_cli_unknown_names_are_errors_with_suggestions(
    models: Path, option: str, value: str, message: str
) -> None:
    args = {"--agent": "numpy_linear", "--model_name": MODEL, "--batch_size": "150"}
    args[option] = value
    result = run_cli(["eval", *(item for pair in args.items() for item in pair)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: ")
    assert message in result.output
    assert "Did you mean '" in result.output
    assert "Traceback" not in result.output


def test_cli_bad_values_are_errors(models: Path) -> None:
    result = run_cli(["eval", "--model_name", MODEL, "--agent", "linear", "--batch_size", "-2"])
    assert result.exit_code == 1
    assert "Error: The 'batch_size' option of eval must be a positive integer. Got -2." in (
        result.output
    )


def test_cli_help_lists_both_spellings() -> None:
    result = run_cli(["eval", "--help"])
    assert result.exit_code == 0
    assert "--model-name, --model_name" in result.output
    assert "--batch-size, --batch_size" in result.output


# ----------------------------------------------------------------------------- integration


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder for the zoo's trained models, shared by this module's tests."""
    import importlib.util

    needed = (
        "torch",
        "forgeml.eval.agents.pytorch",
        "forgeml.eval.tasks.image_classification",
        "forgeml.eval.zoo",
        "forgeml.eval._weights",
    )
    for module in needed:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the real pytorch agent, task and zoo are needed ({module} is missing)")
    return tmp_path_factory.mktemp("zoo-cache")


@pytest.fixture
def real_env(zoo_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FORGEML_CACHE", str(zoo_cache))
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("FORGEML_MODELS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


#: The issue's acceptance line (as MLModelScope users type it).
REAL_ACCEPTANCE = [
    "eval", "--task", "image_classification", "--agent", "pytorch", "--model_name",
    "digits_cnn", "--architecture", "cpu", "--num_warmup", "2", "--dataset_name", "digits",
    "--batch_size", "2",
]  # fmt: skip


@pytest.mark.slow
def test_acceptance_line_with_the_real_pytorch_agent(real_env: Path) -> None:
    result = run_cli(REAL_ACCEPTANCE)
    assert result.exit_code == 0, result.output
    assert "digits_cnn · pytorch (torch " in result.output
    assert "450 samples in 225 batches (2 warmup batches not counted)" in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("top1 ")]
    assert float(line.split()[1]) >= 0.95
    (stored,) = ResultsDB().select()
    assert stored.metrics["top1"] >= 0.95
    assert stored.provenance["versions"]["torch"]
    assert stored.provenance["agent"]["framework"] == "torch"
    for stats in stored.latency.values():
        assert ordered(stats)


@pytest.mark.slow
def test_real_model_saves_top5_and_compares_across_frameworks(real_env: Path) -> None:
    out = real_env / "predictions.json"
    torch_result = evaluate(
        "digits_cnn", agent="pytorch", batch_size=32, save_output=out, threads=1
    )
    assert torch_result.metrics["top1"] >= 0.95
    records = json.loads(out.read_text())
    assert len(records) == DIGITS_TEST
    assert records[0]["top"][0]["label"] == records[0]["predicted_label"]
    onnx_result = evaluate("digits_cnn", agent="onnxruntime", batch_size=32)
    assert onnx_result.metrics["top1"] == pytest.approx(torch_result.metrics["top1"], abs=0.01)
    listing = run_cli(["results", "compare", "--model", "digits_cnn", "--json"])
    rows = json.loads(listing.output)
    assert [r["framework"] for r in rows] == ["pytorch", "onnxruntime"]
    assert rows[0]["throughput_ratio"] == 1.0
    assert rows[1]["throughput_ratio"] > 0
