"""Evaluation matrices: forgeml.eval.MatrixSpec/run_matrix and ``forgeml eval matrix``.

In-process runs use the small linear digits model of ``tests/eval_fixtures.py``
(agents ``numpy_linear`` and ``numpy_jitter``, registered for each test). Worker
processes (``--jobs``) cannot see those registrations, so the worker tests run
the real scikit-learn agent on the zoo's ``digits_logreg`` (trained in a second).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import eval_fixtures
from forgeml import EvalError
from forgeml.cli import cli
from forgeml.eval import (
    AGENTS,
    MatrixSpec,
    ResultsDB,
    evaluate,
    load_matrix,
    run_matrix,
)

MODEL = eval_fixtures.MODEL


@dataclass
class MissingAgent(eval_fixtures.LinearAgent):
    """An agent whose framework is not installed here."""

    def unavailable(self) -> str | None:
        return "numpy-extras is not installed. HINT: pip install numpy-extras"


missing_agent = MissingAgent(name="numpy_missing")


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    folder = eval_fixtures.install(tmp_path, monkeypatch)
    AGENTS.register("numpy_missing", f"{__name__}:missing_agent")
    return folder


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


SPEC = f"""\
models: [{MODEL}]
agents: [numpy_linear, numpy_jitter]
batch_sizes: [50, 150]
num_warmup: 1
num_batches: 2
"""


def predictors_loaded() -> int:
    return len(eval_fixtures.linear_agent.loaded) + len(eval_fixtures.jitter_agent.loaded)


# ----------------------------------------------------------------------------- the spec


def test_a_spec_expands_in_order(models: Path, tmp_path: Path) -> None:
    spec = load_matrix(write_spec(tmp_path / "m.yml", SPEC))
    assert (spec.models, spec.agents, spec.batch_sizes) == (
        (MODEL,),
        ("numpy_linear", "numpy_jitter"),
        (50, 150),
    )
    assert (spec.num_warmup, spec.num_batches, spec.threads, spec.architecture) == (
        1,
        2,
        None,
        "cpu",
    )
    entries, notes = spec.expand()
    assert notes == []
    assert [(e.agent, e.batch_size) for e in entries] == [
        ("numpy_linear", 50), ("numpy_linear", 150), ("numpy_jitter", 50), ("numpy_jitter", 150),
    ]  # fmt: skip
    first = entries[0]
    assert (first.model, first.framework, first.task, first.dataset, first.device) == (
        MODEL,
        "numpy",
        eval_fixtures.TASK,
        "digits",  # the model's own held-out data
        "cpu",
    )
    assert (
        first.key
        == f"{MODEL}|v2|numpy|numpy_linear|{eval_fixtures.TASK}|digits|b50|cpu|n2|w1|tdefault"
    )


def test_patterns_default_agents_datasets_and_scalars(models: Path) -> None:
    spec = MatrixSpec.from_dict(
        {"models": ["linear_*"], "batch_sizes": 64, "datasets": "digits:all", "threads": 1}
    )
    entries, notes = spec.expand()
    # Without 'agents': the agent named after each of the model's frameworks ('numpy' is
    # no agent's name), so nothing runs and a note says why.
    assert entries == []
    assert notes == [
        f"{MODEL} (numpy): skipped, no agent is named after the numpy framework (name one "
        f"under 'agents')."
    ]
    spec = MatrixSpec.from_dict(
        {"models": ["linear_*"], "agents": ["linear"], "batch_sizes": 64, "datasets": "digits:all"}
    )
    (entry,) = spec.expand()[0]
    assert (entry.agent, entry.dataset, entry.batch_size) == ("numpy_linear", "digits:all", 64)


def test_missing_manifests_and_agents_that_cannot_run_are_notes(models: Path) -> None:
    spec = MatrixSpec.from_dict(
        {"models": [MODEL], "agents": ["numpy_linear", "sklearn", "numpy_missing"]}
    )
    entries, notes = spec.expand()
    assert [e.agent for e in entries] == ["numpy_linear"]
    assert notes == [
        f"{MODEL} x sklearn: skipped, the model has no sklearn manifest (it exists for numpy).",
        f"{MODEL} x numpy_missing: skipped, the agent cannot run here: numpy-extras is not "
        "installed. HINT: pip install numpy-extras",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [x]\nbatch_size: [1]\n", "has an unknown key 'batch_size'. Known: models, "),
        ("models: [x]\nbatch_size: [1]\n", "Did you mean 'batch_sizes'?"),
        ("agents: [numpy_linear]\n", "names no models"),
        (f"models: [{MODEL}]\nbatch_sizes: [0]\n", "'batch_sizes' must be a positive integer"),
        (f"models: [{MODEL}]\nbatch_sizes: []\n", "'batch_sizes' is empty"),
        (f"models: [{MODEL}]\nnum_warmup: -1\n", "'num_warmup' must be a non-negative integer"),
        (f"models: [{MODEL}]\nnum_batches: two\n", "'num_batches' must be a positive integer"),
        ("models: [linear_digit]\n", "No model matches 'linear_digit' in matrix spec "),
        ("models: [linear_digit]\n", f"Did you mean '{MODEL}'?"),
        ("models: [nothing_*]\n", "No model matches 'nothing_*'"),
        (f"models: [{MODEL}]\nagents: [numpy_lineer]\n", "Unknown agent 'numpy_lineer'."),
    ],
)
def test_spec_errors_say_what_and_where(
    models: Path, tmp_path: Path, text: str, message: str
) -> None:
    path = write_spec(tmp_path / "bad.yml", text)
    with pytest.raises(EvalError, match=None) as caught:
        load_matrix(path).expand()
    assert message in str(caught.value)


# ----------------------------------------------------------------------------- running


def test_run_stores_every_entry_and_resumes(models: Path, tmp_path: Path) -> None:
    path = write_spec(tmp_path / "m.yml", SPEC)
    seen: list[tuple[int, int, str]] = []
    run = run_matrix(path, progress=lambda done, total, o: seen.append((done, total, o.status)))

    assert [o.status for o in run.outcomes] == ["ran"] * 4
    assert seen == [(1, 4, "ran"), (2, 4, "ran"), (3, 4, "ran"), (4, 4, "ran")]
    assert [(r.agent, r.batch_size, r.num_batches) for r in run.results] == [
        ("numpy_linear", 50, 2), ("numpy_linear", 150, 2),
        ("numpy_jitter", 50, 2), ("numpy_jitter", 150, 2),
    ]  # fmt: skip
    stored = ResultsDB().select()
    assert len(stored) == 4
    record = stored[0].provenance["matrix"]
    assert record == {
        "key": run.outcomes[0].entry.key,
        "spec": str(path),
        "dataset": "digits",
        "num_batches": 2,
        "num_warmup": 1,
        "threads": None,
    }
    loaded = predictors_loaded()

    again = run_matrix(path)  # everything is stored: nothing runs
    assert [o.status for o in again.outcomes] == ["stored"] * 4
    assert [o.result.id for o in again.outcomes if o.result] == [r.id for r in run.results]
    assert predictors_loaded() == loaded
    assert len(ResultsDB()) == 4
    assert again.summary_line().startswith(
        "4 entries: 0 ran, 4 already in the database (--force runs them again), 0 failed"
    )

    # A new batch size and another num_batches: only what is new runs.
    write_spec(path, SPEC.replace("[50, 150]", "[50, 150, 10]"))
    grown = run_matrix(path)
    assert [o.status for o in grown.outcomes] == ["stored", "stored", "ran"] * 2
    write_spec(path, SPEC.replace("num_batches: 2", "num_batches: 3"))
    assert [o.status for o in run_matrix(path).outcomes] == ["ran"] * 4

    forced = run_matrix(path, force=True)
    assert [o.status for o in forced.outcomes] == ["ran"] * 4
    assert len(ResultsDB()) == 4 + 2 + 4 + 4


def test_results_of_another_host_or_plain_evals_do_not_count(models: Path, tmp_path: Path) -> None:
    path = write_spec(tmp_path / "m.yml", SPEC)
    evaluate(MODEL, agent="numpy_linear", batch_size=50, num_batches=2)  # no matrix record
    run = run_matrix(path)
    assert run.count("ran") == 4
    entries, _ = load_matrix(path).expand()
    from forgeml.eval._matrix import stored_results

    assert len(stored_results(entries, ResultsDB())) == 4
    assert stored_results(entries, ResultsDB(), host="elsewhere") == {}


def test_a_failing_entry_does_not_stop_the_others(models: Path, tmp_path: Path) -> None:
    path = write_spec(tmp_path / "m.yml", SPEC + "datasets: [digits, nodata]\n")
    run = run_matrix(path)
    statuses = [(o.entry.dataset, o.status) for o in run.outcomes]
    assert statuses == [("digits", "ran"), ("digits", "ran"), ("nodata", "failed"),
                        ("nodata", "failed")] * 2  # fmt: skip
    failed = run.failed[0]
    assert "Unknown dataset 'nodata'" in failed.message
    assert failed.result is None
    assert len(ResultsDB()) == 4
    # Failed entries are not stored, so the next run tries them again.
    assert run_matrix(path).count("failed") == 4


def test_weights_are_prepared_once_and_missing_ones_fail_their_entries(
    models: Path, tmp_path: Path
) -> None:
    broken = eval_fixtures.MANIFEST.replace(f"name: {MODEL}", "name: broken_digits").replace(
        f"path: {MODEL}.npz", "path: missing.npz"
    )
    (models / "broken_digits.yml").write_text(broken, encoding="utf-8")
    path = write_spec(tmp_path / "m.yml", SPEC.replace(f"[{MODEL}]", f"[{MODEL}, broken_*]"))
    said: list[str] = []
    run = run_matrix(path, echo=said.append)
    assert [o.status for o in run.outcomes] == ["ran"] * 4 + ["failed"] * 4
    message = run.failed[0].message
    assert message.startswith("its weights cannot be had: Model 'broken_digits' (numpy, ")
    assert "missing.npz' does not exist" in message
    assert len(said) == 1  # one line for the broken model, however many entries it has
    assert said[0].startswith("weights: Model 'broken_digits' (numpy, ")
    assert said[0].endswith("(its entries fail)")


def test_jobs_must_be_positive(models: Path, tmp_path: Path) -> None:
    with pytest.raises(EvalError, match="'jobs' option of eval matrix must be a positive"):
        run_matrix(write_spec(tmp_path / "m.yml", SPEC), jobs=0)


# ----------------------------------------------------------------------------- the command


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_matrix_prints_progress_and_a_summary(models: Path, tmp_path: Path) -> None:
    path = write_spec(tmp_path / "m.yml", SPEC.replace("numpy_jitter]", "numpy_jitter, sklearn]"))
    done = run_cli("eval", "matrix", str(path))
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert lines[0].startswith(f"[1/4] {MODEL} · numpy_linear · digits · b50: top1 0.")
    assert "samples/s" in lines[0]
    header = next(line for line in lines if line.lstrip().startswith("MODEL"))
    assert header.split() == [
        "MODEL", "AGENT", "DATASET", "BATCH", "STATUS", "P50", "MS", "P99", "MS", "SAMPLES/S",
        "METRIC", "ID",
    ]  # fmt: skip
    assert "4 entries: 4 ran, 0 already in the database, 0 failed; 1 combination(s) skipped" in (
        done.output
    )
    assert f"note: {MODEL} x sklearn: skipped, the model has no sklearn manifest" in done.output

    again = run_cli("eval", "matrix", str(path))
    assert again.exit_code == 0
    assert f"[1/4] {MODEL} · numpy_linear · digits · b50: already in the database (" in (
        again.output
    )
    assert "in database" in again.output

    dry = run_cli("eval", "matrix", str(path), "--dry-run")
    assert f"{MODEL} · numpy_jitter · digits · b150: in database (" in dry.output
    assert "4 entries, 4 stored." in dry.output

    as_json = run_cli("eval", "matrix", str(path), "--force", "--json")
    data = json.loads(as_json.output)
    assert data["counts"] == {"ran": 4, "stored": 0, "failed": 0}
    assert [e["status"] for e in data["entries"]] == ["ran"] * 4
    assert data["entries"][0]["result"]["batch_size"] == 50
    assert len(data["notes"]) == 1


def test_cli_matrix_exits_1_when_an_entry_fails(models: Path, tmp_path: Path) -> None:
    path = write_spec(tmp_path / "m.yml", SPEC + "datasets: [nodata]\n")
    done = run_cli("eval", "matrix", str(path))
    assert done.exit_code == 1
    assert "FAILED" in done.output
    assert "failed: linear_digits · numpy_linear · nodata · b50: Unknown dataset 'nodata'" in (
        done.output
    )


def test_eval_still_runs_one_evaluation_and_checks_its_options(models: Path) -> None:
    missing = run_cli("eval", "--agent", "numpy_linear")
    assert missing.exit_code == 2
    assert "Missing option '--model-name'" in missing.output
    mixed = run_cli("eval", "--batch_size", "2", "matrix", "spec.yml")
    assert mixed.exit_code == 2
    assert "(--batch-size) run one evaluation; they do not apply to 'forgeml eval matrix'" in (
        mixed.output
    )
    helped = run_cli("eval", "--help")
    assert "matrix" in helped.output
    assert "--model-name, --model_name" in helped.output
    matrix_help = run_cli("eval", "matrix", "--help")
    assert "models x agents x batch sizes x datasets" in matrix_help.output


# ----------------------------------------------------------------------------- workers


@pytest.fixture
def sklearn_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for module in ("sklearn", "skops"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"the worker tests run the real sklearn agent ({module} is missing)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FORGEML_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FORGEML_MODELS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.mark.slow
def test_workers_run_entries_in_processes_of_their_own(sklearn_env: Path) -> None:
    path = write_spec(
        sklearn_env / "m.yml",
        "models: [digits_logreg]\nbatch_sizes: [64]\ndatasets: [digits, nodata]\n",
    )
    done = CliRunner().invoke(cli, ["eval", "matrix", str(path), "--jobs", "2"])
    assert done.exit_code == 1, done.output
    assert "zoo: training digits_logreg (for digits_logreg, sklearn) ..." in done.output
    assert "zoo: digits_logreg built in " in done.output
    assert "warning: running 2 evaluations at a time" in done.output
    assert "distorts latency" in done.output
    assert "digits_logreg · sklearn · digits · b64: top1 0.9" in done.output
    assert "failed: digits_logreg · sklearn · nodata · b64: the worker exited with 1: " in (
        done.output
    )
    assert "Unknown dataset 'nodata'" in done.output
    (stored,) = ResultsDB().select()
    assert stored.provenance["matrix"]["key"].startswith("digits_logreg|v1.0|sklearn|sklearn|")
    assert stored.metrics["top1"] > 0.9

    # One worker at a time: no warning; the stored entry is not run again.
    again = run_matrix(path, jobs=1)
    assert [o.status for o in again.outcomes] == ["stored", "failed"]
    assert len(ResultsDB()) == 1
