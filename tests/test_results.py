"""The results database (forgeml.eval.ResultsDB) and ``forgeml results``.

Results come from real evaluations of the linear digits model of
``tests/eval_fixtures.py``, and, for lining up frameworks, from results built
with other framework names (only the numpy agent runs here).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import eval_fixtures
from forgeml import EvalError
from forgeml.cli import cli
from forgeml.eval import EvalResult, ResultsDB, compare, evaluate, results_path
from forgeml.eval._results import SCHEMA_VERSION

MODEL = eval_fixtures.MODEL


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return eval_fixtures.install(tmp_path, monkeypatch)


@pytest.fixture
def stored(models: Path) -> list[EvalResult]:
    """Three real evaluations (batch 1, 10, 50), stored, oldest first."""
    return [
        evaluate(MODEL, agent="numpy_linear", batch_size=b, num_batches=6, num_warmup=1)
        for b in (1, 10, 50)
    ]


def as_framework(result: EvalResult, framework: str, throughput: float) -> EvalResult:
    """The same evaluation as if run by another framework's agent (new id)."""
    latency = {
        phase: dataclasses.replace(stats, p50=stats.p50 * result.throughput / throughput)
        for phase, stats in result.latency.items()
    }
    data = result.to_dict()
    data.update(
        id=EvalResult.__dataclass_fields__["id"].default_factory(),  # type: ignore[misc]
        framework=framework,
        agent=framework,
        throughput=throughput,
    )
    copy = EvalResult.from_dict(data)
    copy.latency = latency
    return copy


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# ----------------------------------------------------------------------------- database


def test_round_trip_select_and_remove(stored: list[EvalResult]) -> None:
    db = ResultsDB()
    assert db.path == results_path()
    assert len(db) == 3
    assert [r.to_dict() for r in db.select()] == [r.to_dict() for r in stored]
    assert [r.batch_size for r in db.select(newest_first=True, limit=2)] == [50, 10]
    assert [r.id for r in db.select(batch_size=10)] == [stored[1].id]
    assert db.select(model="other") == []
    assert db.get(stored[2].id[:6]).to_dict() == stored[2].to_dict()

    conn = sqlite3.connect(db.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    indexed = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"evaluations_model", "evaluations_created", "evaluations_commit"} <= indexed
    conn.close()

    assert db.remove(stored[0].id[:8]) == stored[0].id
    assert len(db) == 2
    with pytest.raises(EvalError, match="No evaluation with id"):
        db.get(stored[0].id)


def test_lookups_explain_bad_ids_and_filters(tmp_path: Path) -> None:
    db = ResultsDB(tmp_path / "r.db")
    assert db.select() == []
    assert not db.path.exists()  # reading creates nothing
    with pytest.raises(EvalError, match=r"hexadecimal.*at least 4.*Got 'ab'"):
        db.get("ab")
    with pytest.raises(EvalError, match=r"No evaluation with id 'abcd'"):
        db.get("abcd")
    with pytest.raises(EvalError, match=r"Cannot select results by 'modle'.*Did you mean 'model'"):
        db.select(modle="x")


def test_concurrent_writers_lose_nothing(stored: list[EvalResult], tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    template = tmp_path / "template.json"
    template.write_text(stored[0].to_json())
    script = textwrap.dedent(
        f"""
        import json, sys, uuid
        from forgeml.eval import EvalResult, ResultsDB
        data = json.loads(open({str(template)!r}).read())
        db = ResultsDB({str(path)!r})
        for n in range(25):
            data["id"] = uuid.uuid4().hex
            data["batch_size"] = int(sys.argv[1])
            db.add(EvalResult.from_dict(data))
        """
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(w)], stderr=subprocess.PIPE)
        for w in range(4)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err.decode()
    db = ResultsDB(path)
    found = db.select()
    assert len(found) == len({r.id for r in found}) == 100
    assert sorted({r.batch_size for r in found}) == [0, 1, 2, 3]


def test_a_newer_schema_is_refused(stored: list[EvalResult]) -> None:
    db = ResultsDB()
    conn = sqlite3.connect(db.path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    newer = rf"schema version {SCHEMA_VERSION + 1}, written by a newer forgeml"
    with pytest.raises(EvalError, match=newer):
        db.select()
    with pytest.raises(EvalError, match="Upgrade forgeml"):
        db.add(stored[0])
    result = run_cli("results", "ls")
    assert result.exit_code == 1
    assert result.output.startswith("Error: The results database")


def test_a_damaged_file_is_an_error(models: Path) -> None:
    results_path().parent.mkdir(parents=True)
    results_path().write_bytes(b"not a database" * 100)
    result = run_cli("results", "ls")
    assert result.exit_code == 1
    assert "cannot be used" in result.output
    assert "move it away" in result.output


# ----------------------------------------------------------------------------- compare


def test_compare_batch_sizes_gives_ratios_against_the_first(stored: list[EvalResult]) -> None:
    comparison = compare(stored)
    assert comparison.by == "batch_size"
    assert comparison.group_by == ("model", "framework", "agent", "dataset", "device")
    (group,) = comparison.groups
    assert [r["batch_size"] for r in group] == [1, 10, 50]
    assert group[0]["throughput_ratio"] == 1.0
    assert group[0]["speedup"] == 1.0
    assert group[2]["throughput_ratio"] == pytest.approx(
        stored[2].throughput / stored[0].throughput
    )
    assert {r["baseline"] for r in group} == {stored[0].id}
    rebased = compare(stored, baseline=stored[1].id[:8]).groups[0]
    assert rebased[1]["throughput_ratio"] == 1.0
    with pytest.raises(EvalError, match="not among the results compared"):
        compare(stored, baseline="ffffffff")


def test_compare_frameworks_groups_by_model_dataset_and_batch_size(
    stored: list[EvalResult],
) -> None:
    base = stored[0]
    onnx = as_framework(base, "onnxruntime", base.throughput * 4)
    comparison = compare([base, onnx], by="framework")
    assert comparison.group_by == ("model", "dataset", "batch_size", "device")
    (group,) = comparison.groups
    assert [r["framework"] for r in group] == ["numpy", "onnxruntime"]
    assert group[1]["throughput_ratio"] == pytest.approx(4.0)
    assert group[1]["speedup"] == pytest.approx(4.0)
    assert (group[1]["main_metric"], group[1]["main_metric_delta"]) == ("top1", 0.0)
    # Another dataset is another group, with its own baseline.
    other = as_framework(base, "pytorch", base.throughput / 2)
    other.dataset = "digits:all"
    assert len(compare([base, onnx, other], by="framework").groups) == 2
    # So is another batch size: frameworks are compared at equal batch sizes.
    assert len(compare([base, onnx, stored[1]], by="framework").groups) == 2
    with pytest.raises(EvalError, match=r"compare by one of .*Got 'frame'"):
        compare([base], by="frame")


# ----------------------------------------------------------------------------- CLI


def test_cli_ls_show(stored: list[EvalResult]) -> None:
    result = run_cli("results", "ls")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["ID", "CREATED", "MODEL"]
    assert [line.split()[0] for line in lines[1:]] == [r.id[:12] for r in stored]
    assert "top1=" in lines[1]

    rows = json.loads(run_cli("results", "ls", "--batch_size", "10", "--json").output)
    assert [r["id"] for r in rows] == [stored[1].id]
    assert rows[0]["predict_p50_ms"] == stored[1].latency["predict"].p50
    assert rows[0]["metric_top1"] == stored[1].metrics["top1"]
    newest = json.loads(run_cli("results", "ls", "-n", "2", "--json").output)
    assert [r["batch_size"] for r in newest] == [10, 50]
    table = list(csv.DictReader(io.StringIO(run_cli("results", "ls", "--csv").output)))
    assert [r["batch_size"] for r in table] == ["1", "10", "50"]

    shown = run_cli("results", "show", stored[1].id[:8])
    assert shown.exit_code == 0, shown.output
    assert "batch 10" in shown.output
    assert "cpu:" in shown.output
    assert "versions:" in shown.output
    assert json.loads(run_cli("results", "show", stored[1].id, "--json").output) == (
        stored[1].to_dict()
    )
    missing = run_cli("results", "show", "abcdef12")
    assert missing.exit_code == 1
    assert "Error: No evaluation with id 'abcdef12'" in missing.output


def test_cli_ls_empty(models: Path) -> None:
    result = run_cli("results", "ls")
    assert result.exit_code == 0
    assert "No evaluations in" in result.output


def test_cli_compare(stored: list[EvalResult]) -> None:
    onnx = as_framework(stored[0], "onnxruntime", stored[0].throughput * 3)
    ResultsDB().add(onnx)

    by_batch = run_cli("results", "compare", "--model", MODEL, "--agent", "numpy_linear")
    assert by_batch.exit_code == 0, by_batch.output
    assert "THROUGHPUT x" in by_batch.output
    assert "batch_size varies within a group" in by_batch.output
    rows = json.loads(
        run_cli("results", "compare", "--model", MODEL, "--by", "framework", "--json").output
    )
    assert [(r["framework"], r["batch_size"]) for r in rows] == [
        ("numpy", 1),
        ("onnxruntime", 1),
        ("numpy", 10),
        ("numpy", 50),
    ]
    assert [r["throughput_ratio"] for r in rows] == [1.0, pytest.approx(3.0), 1.0, 1.0]

    by_ids = run_cli(
        "results", "compare", stored[0].id[:8], onnx.id[:8], "--baseline", onnx.id[:8], "--csv"
    )
    table = list(csv.DictReader(io.StringIO(by_ids.output)))
    assert [r["framework"] for r in table] == ["numpy", "onnxruntime"]
    assert float(table[1]["throughput_ratio"]) == 1.0
    assert float(table[0]["throughput_ratio"]) == pytest.approx(1 / 3)

    both = run_cli("results", "compare", stored[0].id[:8], "--model", MODEL)
    assert both.exit_code == 2
    assert "not both" in both.output


def test_cli_compare_takes_the_newest_per_configuration(stored: list[EvalResult]) -> None:
    again = evaluate(MODEL, agent="numpy_linear", batch_size=10, num_batches=6)
    rows = json.loads(run_cli("results", "compare", "--json").output)
    assert [r["id"] for r in rows] == [stored[0].id, again.id, stored[2].id]
    rows = json.loads(run_cli("results", "compare", "--all", "--json").output)
    assert len(rows) == 4


def test_cli_export(stored: list[EvalResult], tmp_path: Path) -> None:
    out = tmp_path / "export.csv"
    result = run_cli("results", "export", "--csv", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "exported 3 evaluation(s)" in result.output
    rows = list(csv.DictReader(out.open()))
    assert [r["id"] for r in rows] == [r.id for r in stored]
    assert {"throughput", "predict_p99_ms", "metric_top1", "git_commit", "cpu"} <= set(rows[0])

    whole = json.loads(run_cli("results", "export", "--json", "--batch-size", "50").output)
    assert whole == [stored[2].to_dict()]
    assert run_cli("results", "export", "--json", "--csv").exit_code == 2


def test_cli_rm(stored: list[EvalResult]) -> None:
    result = run_cli("results", "rm", stored[0].id[:8], stored[1].id[:8])
    assert result.exit_code == 0
    assert "removed 2 evaluation(s)" in result.output
    assert [r.id for r in ResultsDB().select()] == [stored[2].id]
    assert run_cli("results", "rm", "abcdef99").exit_code == 1
