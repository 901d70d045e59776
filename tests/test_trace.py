"""forgeml.trace: leveled spans from real evaluations, the Chrome trace file, OTLP to a
real receiver on 127.0.0.1, the summary CLI, the results database and the report."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from forgeml import TraceError
from forgeml.cli import cli
from forgeml.eval import ResultsDB, build_zoo, evaluate
from forgeml.trace import TraceLevel, Tracer, parse_level, summarize, write_chrome_trace

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("opentelemetry.sdk")

from otlp_receiver import OtlpReceiver

QUICK: dict[str, Any] = {"agent": "pytorch", "threads": 1, "store": False, "track": False}


@pytest.fixture(scope="module")
def zoo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("trace-zoo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORGEML_CACHE", str(folder))
        build_zoo(["digits_cnn"], progress=False)
    return folder


@pytest.fixture
def home(zoo_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FORGEML_CACHE", str(zoo_cache))
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "home"


def spans_of(path: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    document = json.loads(Path(path).read_text())
    spans = [e for e in document["traceEvents"] if e["ph"] == "X"]
    return spans, document


def check_nesting(spans: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Every span's parent exists, is on the same thread and contains it in time."""
    by_id = {s["args"]["id"]: s for s in spans}
    assert len(by_id) == len(spans), "span ids are unique"
    for span in spans:
        parent = span["args"]["parent"]
        if parent == 0:
            continue
        outer = by_id[parent]
        assert outer["tid"] == span["tid"]
        assert span["ts"] >= outer["ts"] - 0.002, (span, outer)
        assert span["ts"] + span["dur"] <= outer["ts"] + outer["dur"] + 0.002, (span, outer)
    return by_id


# ----------------------------------------------------------------------------- the tracer


def test_levels_parse_by_name_number_and_alias() -> None:
    assert parse_level("model") is TraceLevel.MODEL
    assert parse_level("no-trace") is TraceLevel.NO_TRACE
    assert parse_level(4) is TraceLevel.LIBRARY
    assert parse_level("6") is TraceLevel.FULL
    assert parse_level(None) is TraceLevel.NO_TRACE
    assert TraceLevel.APPLICATION < TraceLevel.MODEL < TraceLevel.FRAMEWORK
    with pytest.raises(TraceError, match=r"Unknown trace level 'MODLE'.*Did you mean 'MODEL'"):
        parse_level("MODLE")
    with pytest.raises(TraceError, match="0-6"):
        parse_level(9)


def test_spans_above_the_level_are_no_ops_and_nest_below_it() -> None:
    tracer = Tracer("APPLICATION")
    with tracer.span("outer", TraceLevel.APPLICATION, step=1) as outer:
        with tracer.span("deep", TraceLevel.FRAMEWORK) as deep:
            assert deep is None  # the shared null context
        with tracer.span("inner", TraceLevel.APPLICATION):
            pass
    names = {s[2]: s for s in tracer.spans}
    assert set(names) == {"outer", "inner"}
    assert names["inner"][1] == outer
    assert names["outer"][6] == {"step": 1}


def test_a_full_buffer_drops_and_counts_spans(tmp_path: Path) -> None:
    tracer = Tracer("MODEL", capacity=5)
    for index in range(12):
        with tracer.span("s", TraceLevel.MODEL, index=index):
            pass
    assert len(tracer.spans) == 5
    assert tracer.dropped == 7
    path = write_chrome_trace(tracer, str(tmp_path / "t.json"))
    _, document = spans_of(path)
    assert document["otherData"]["forgeml"]["dropped"] == 7
    assert summarize(path).facts["dropped"] == 7


def test_tracer_options_are_checked() -> None:
    with pytest.raises(TraceError, match=r"capacity.*Got -1"):
        Tracer("MODEL", capacity=-1)


# ----------------------------------------------------------------------------- evaluations


def test_library_trace_nests_evaluation_batch_predict_layers_ops_and_reaches_otlp(
    home: Path,
) -> None:
    with OtlpReceiver() as receiver:
        result = evaluate(
            "digits_cnn",
            batch_size=2,
            num_batches=14,
            trace_level="FULL",
            trace_endpoint=receiver.endpoint,
            **QUICK,
        )
    trace = result.trace
    assert trace is not None
    assert trace["level"] == "FULL"
    assert trace["dropped"] == 0
    assert Path(trace["file"]) == home / "traces" / f"{result.id}.trace.json"
    assert trace["otlp"] == receiver.endpoint + "/v1/traces"
    spans, document = spans_of(trace["file"])
    by_id = check_nesting(spans)

    def parent(span: dict[str, Any]) -> dict[str, Any]:
        return by_id[span["args"]["parent"]]

    (root,) = [s for s in spans if s["args"]["parent"] == 0]
    assert root["name"] == "evaluation"
    assert root["cat"] == "application"
    assert {parent(s)["name"] for s in spans if s["name"] in ("load_model", "warmup")} == {
        "evaluation"
    }
    batches = [s for s in spans if s["name"] == "batch"]
    assert len(batches) == 14
    assert all(parent(b) is root for b in batches)
    predicts = [s for s in spans if s["name"] == "predict"]
    assert len(predicts) == 14
    assert all(parent(p)["name"] == "batch" for p in predicts)
    layers = [s for s in spans if s["cat"] == "framework"]
    assert {s["name"] for s in layers} >= {"features", "features.0", "head", "head.3"}
    assert {parent(s)["name"] for s in layers if "." not in s["name"]} == {"predict"}
    assert all(parent(s)["name"] == "features" for s in layers if s["name"] == "features.0")
    assert next(s for s in layers if s["name"] == "features.0")["args"]["type"] == "Conv2d"
    ops = [s for s in spans if s["cat"] == "library"]
    conv = [s for s in ops if s["name"] == "aten::conv2d"]
    # ops kept as spans for the sampled batches only (10 of 14), under their layer
    assert len(conv) == 2 * 10
    assert {parent(s)["name"] for s in conv} == {"features.0", "features.2"}
    assert all("input_shapes" in s["args"] for s in conv)  # FULL records shapes
    forgeml = document["otherData"]["forgeml"]
    assert forgeml["aggregated_batches"] == 4
    aggregated = {(a["layer"], a["name"]): a["count"] for a in forgeml["aggregates"]}
    assert aggregated[("features.0", "aten::conv2d")] == 4
    counters = {e["name"] for e in document["traceEvents"] if e["ph"] == "C"}
    assert {"cpu", "memory"} <= counters  # HARDWARE (included in FULL)

    # The OTLP receiver got the same spans, with parent links and attributes.
    assert len(receiver.spans) == len(spans)
    assert sorted(s["name"] for s in receiver.spans) == sorted(s["name"] for s in spans)
    assert len({s["trace_id"] for s in receiver.spans}) == 1
    otlp = {s["span_id"]: s for s in receiver.spans}
    (otlp_root,) = [s for s in receiver.spans if not s["parent_span_id"]]
    assert otlp_root["name"] == "evaluation"
    assert otlp_root["attributes"]["model"] == "digits_cnn"
    assert otlp_root["resource"]["service.name"] == "forgeml"
    assert {e["name"] for e in otlp_root["events"]} >= {"cpu", "memory", "aggregate"}
    for span in receiver.spans:
        if span["parent_span_id"]:
            outer = otlp[span["parent_span_id"]]
            assert outer["start"] <= span["start"]
            assert span["end"] <= outer["end"] + 2000
    for span in receiver.spans:
        if span["name"] == "predict":
            assert otlp[span["parent_span_id"]]["name"] == "batch"
            assert span["attributes"]["forgeml.level"] == "MODEL"
        if span["name"] == "features.0":
            assert span["attributes"] == {"forgeml.level": "FRAMEWORK", "type": "Conv2d"}
            assert otlp[span["parent_span_id"]]["name"] == "features"
        if span["name"] == "aten::conv2d":
            assert otlp[span["parent_span_id"]]["name"] in ("features.0", "features.2")


def test_model_level_has_predict_spans_but_no_layers_and_no_trace_writes_nothing(
    home: Path,
) -> None:
    result = evaluate("digits_cnn", batch_size=8, num_batches=5, trace_level="MODEL", **QUICK)
    assert result.trace is not None
    spans, _ = spans_of(result.trace["file"])
    names = {s["name"] for s in spans}
    assert {"evaluation", "batch", "predict", "preprocess", "postprocess"} <= names
    assert not [s for s in spans if s["cat"] in ("framework", "library")]
    application = evaluate(
        "digits_cnn", batch_size=8, num_batches=5, trace_level="APPLICATION", **QUICK
    )
    assert application.trace is not None
    names = {s["name"] for s in spans_of(application.trace["file"])[0]}
    assert "batch" in names
    assert "predict" not in names

    untraced = evaluate("digits_cnn", batch_size=8, num_batches=5, trace_level="NO_TRACE", **QUICK)
    assert untraced.trace is None
    assert sorted(p.name for p in (home / "traces").iterdir()) == sorted(
        [f"{result.id}.trace.json", f"{application.id}.trace.json"]
    )


def test_onnxruntime_nodes_become_spans_under_predict(home: Path, tmp_path: Path) -> None:
    from forgeml.frameworks._trace_onnxruntime import PROFILED_RUNS

    file = tmp_path / "ort.trace.json"
    calls = PROFILED_RUNS + 4
    result = evaluate(
        "digits_cnn",
        batch_size=2,
        num_batches=calls,
        num_warmup=3,
        trace_level="FRAMEWORK",
        trace_file=file,
        **{**QUICK, "agent": "onnxruntime"},
    )
    assert result.trace is not None
    assert result.trace["file"] == str(file)
    # the profile is capped, and the profiled session's warmup runs are not taken for
    # predict calls (else a "profiled N runs for M predict calls" note)
    assert result.trace["notes"] == [
        f"ONNX Runtime profiled the first {PROFILED_RUNS} of {calls} predict calls: node spans "
        f"for those only (later calls ran unprofiled on the same session, which keeps the "
        f"trace bounded)."
    ]
    spans, _ = spans_of(str(file))
    by_id = check_nesting(spans)
    (warm,) = [s for s in spans if s["name"] == "warmup_traced_session"]
    assert by_id[warm["args"]["parent"]]["name"] == "evaluation"
    predicts = sorted((s for s in spans if s["name"] == "predict"), key=lambda s: s["ts"])
    assert len(predicts) == calls
    assert warm["ts"] + warm["dur"] <= predicts[0]["ts"]  # warmed before the timed loop
    nodes = [s for s in spans if s["cat"] == "framework"]
    assert {by_id[s["args"]["parent"]]["name"] for s in nodes} == {"predict"}
    profiled = {s["args"]["id"] for s in predicts[:PROFILED_RUNS]}
    assert {s["args"]["parent"] for s in nodes} == profiled
    per_predict = len(nodes) / PROFILED_RUNS
    assert per_predict == int(per_predict)
    assert per_predict >= 3
    kinds = {s["args"]["type"] for s in nodes}
    assert "Gemm" in kinds or "FusedGemm" in kinds
    assert any("Conv" in kind for kind in kinds)


@pytest.mark.slow
def test_keras_layers_become_spans(home: Path, zoo_cache: Path) -> None:
    pytest.importorskip("tensorflow")
    build_zoo(["digits_keras_cnn"], progress=False)
    result = evaluate(
        "digits_keras_cnn",
        batch_size=4,
        num_batches=3,
        trace_level="FRAMEWORK",
        **{**QUICK, "agent": "tensorflow"},
    )
    assert result.trace is not None
    spans, _ = spans_of(result.trace["file"])
    by_id = check_nesting(spans)
    layers = [s for s in spans if s["cat"] == "framework"]
    # Keras numbers layer names per process (conv2d_4): check the layer types
    kinds = [s["args"]["type"] for s in layers]
    assert kinds[:6] == ["Conv2D", "Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    assert len(layers) == 6 * 3  # six layers, three batches
    assert {by_id[s["args"]["parent"]]["name"] for s in layers} == {"predict"}
    assert result.metrics["top1"] > 0.5  # the eager traced path predicts the same model


def test_leveled_mode_reports_each_level_from_its_own_run_and_is_stored(home: Path) -> None:
    result = evaluate(
        "digits_cnn",
        batch_size=16,
        num_batches=4,
        trace_level="FRAMEWORK",
        trace_mode="leveled",
        agent="pytorch",
        threads=1,
        track=False,
    )
    trace = result.trace
    assert trace is not None
    assert trace["mode"] == "leveled"
    assert trace["level"] == "FRAMEWORK"
    levels = trace["levels"]
    assert [row["level"] for row in levels] == ["NO_TRACE", "APPLICATION", "MODEL", "FRAMEWORK"]
    assert levels[0]["evaluation_id"] == result.id
    assert levels[0]["throughput_ratio"] == 1.0
    assert levels[0]["file"] is None
    assert len({row["evaluation_id"] for row in levels}) == 4  # four runs
    assert all(row["throughput"] > 0 for row in levels)
    assert trace["file"] == levels[-1]["file"]
    assert Path(trace["file"]).is_file()
    assert "tracing overhead per level" in result.summary()
    db = ResultsDB()
    assert len(db) == 1  # stored once, as the untraced run
    stored = db.get(result.id)
    assert stored.trace is not None
    assert stored.trace["levels"][3]["level"] == "FRAMEWORK"
    assert db.trace_file(result.id[:8]) == trace["file"]

    from forgeml.eval._report import render_report

    html = render_report([stored])
    assert Path(trace["file"]).as_uri() in html
    assert "framework leveled" in html


def test_leveled_mode_runs_the_scenario_and_outputs_once_and_sends_one_otlp_trace(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forgeml.eval import ScenarioSettings, _runner

    runs: list[dict[str, Any]] = []
    original = _runner.evaluate

    def recorded(**kwargs: Any) -> Any:  # the real evaluate, with its options noted
        runs.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(_runner, "evaluate", recorded)
    output = tmp_path / "predictions.csv"
    file = tmp_path / "deepest.trace.json"
    with OtlpReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        result = evaluate(
            "digits_cnn",
            batch_size=16,
            num_batches=2,
            num_warmup=1,
            trace_level="MODEL",
            trace_mode="leveled",
            trace_file=file,
            scenario=ScenarioSettings.create("single_stream", min_duration=0, min_query_count=8),
            save_output=output,
            **QUICK,
        )
    assert [str(run["trace_level"]) for run in runs] == [
        str(level) for level in (TraceLevel.NO_TRACE, TraceLevel.APPLICATION, TraceLevel.MODEL)
    ]
    headline, *traced = runs
    assert headline["scenario"] is not None
    assert headline["save_output"] == output
    assert headline["trace_file"] is None
    for run in traced:
        assert (run["scenario"], run["find_peak"], run["save_output"]) == (None, False, None)
    assert [run["trace_file"] for run in traced] == [None, file]
    assert result.scenario is not None
    assert result.scenario.queries >= 8
    assert result.output_file == str(output)
    assert output.is_file()
    trace = result.trace
    assert trace is not None
    assert trace["file"] == str(file)
    assert trace["otlp"] == receiver.endpoint + "/v1/traces"
    # one trace reached the collector: the deepest level's
    assert len({s["trace_id"] for s in receiver.spans}) == 1
    (root,) = [s for s in receiver.spans if not s["parent_span_id"]]
    assert root["attributes"]["evaluation_id"] == trace["levels"][-1]["evaluation_id"]
    assert len(receiver.spans) == len(spans_of(str(file))[0])


def test_an_unwritable_trace_file_is_refused_before_the_run(home: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    batches: list[int] = []
    for mode in ("single", "leveled"):
        with pytest.raises(TraceError, match=r"cannot be written: folder .*blocker"):
            evaluate(
                "digits_cnn",
                trace_level="MODEL",
                trace_mode=mode,
                trace_file=blocker / "eval.trace.json",
                progress=lambda done, total: batches.append(done),
                agent="pytorch",
                threads=1,
                track=False,
            )
    with pytest.raises(TraceError, match="is a folder"):
        evaluate("digits_cnn", trace_level="MODEL", trace_file=tmp_path, **QUICK)
    assert batches == []  # nothing ran
    assert len(ResultsDB()) == 0


def test_a_trace_file_that_fails_at_export_is_a_warning_and_the_result_is_stored(
    home: Path, tmp_path: Path
) -> None:
    import shutil

    folder = tmp_path / "traces"

    def break_the_folder(done: int, total: int) -> None:
        if folder.is_dir():  # passed the early check; gone by the export
            shutil.rmtree(folder)
            folder.write_text("now a file")

    result = evaluate(
        "digits_cnn",
        batch_size=16,
        num_batches=3,
        trace_level="MODEL",
        trace_file=folder / "eval.trace.json",
        progress=break_the_folder,
        agent="pytorch",
        threads=1,
        track=False,
    )
    assert result.num_batches == 3
    assert result.trace is not None
    assert result.trace["file"] is None
    assert result.trace["spans"] > 0
    (warning,) = [w for w in result.warnings if "trace file could not be written" in w]
    assert str(folder / "eval.trace.json") in warning
    stored = ResultsDB().get(result.id)
    assert warning in stored.warnings
    assert stored.throughput == result.throughput


def test_the_results_database_gains_the_trace_file_column(home: Path, tmp_path: Path) -> None:
    from forgeml.eval._results import _EXPORTS, _SCHEMA

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(_SCHEMA + _EXPORTS)
        conn.execute("PRAGMA user_version = 2")
    conn.close()
    db = ResultsDB(path)
    result = evaluate("digits_cnn", batch_size=64, num_batches=1, **QUICK)
    db.add(result)
    assert db.trace_file(result.id) is None
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(evaluations)")]
        assert int(conn.execute("PRAGMA user_version").fetchone()[0]) == 3
    conn.close()
    assert "trace_file" in columns


def test_summary_cli_tables_and_json(home: Path, tmp_path: Path) -> None:
    file = tmp_path / "digits.trace.json"
    runner = CliRunner()
    run = runner.invoke(
        cli,
        [
            "eval", "--model_name", "digits_cnn", "--agent", "pytorch", "--batch_size", "1",
            "--num_batches", "12", "--threads", "1", "--trace_level", "LIBRARY",
            "--trace_file", str(file), "--no-store",
        ],
    )  # fmt: skip
    assert run.exit_code == 0, run.output
    assert f"trace (LIBRARY, single): {file}" in " ".join(run.output.split())
    shown = runner.invoke(cli, ["trace", "summary", str(file), "--top", "4"])
    assert shown.exit_code == 0, shown.output
    for heading in ("phases", "layers", "operators per layer", "evaluation", "predict"):
        assert heading in shown.output
    assert "features.0 / aten::conv2d" in shown.output
    as_json = runner.invoke(cli, ["trace", "summary", str(file), "--json"])
    data = json.loads(as_json.output)
    assert data["level"] == "LIBRARY"
    phases = {row["name"]: row for row in data["phases"]}
    assert phases["batch"]["calls"] == 12
    assert phases["predict"]["calls"] == 12
    assert phases["evaluation"]["share"] == 1.0
    layers = {row["name"]: row for row in data["layers"]}
    assert layers["features.0"]["calls"] == 12
    conv = {row["name"]: row for row in data["ops"]["features.0"]}["aten::conv2d"]
    assert conv["calls"] == 12  # 10 sampled spans + 2 aggregated
    missing = runner.invoke(cli, ["trace", "summary", str(tmp_path / "none.json")])
    assert missing.exit_code == 1
    assert "No trace file" in missing.output
    bad = runner.invoke(cli, ["eval", "--model_name", "digits_cnn", "--trace_level", "deep"])
    assert bad.exit_code == 1
    assert "Unknown trace level 'deep'" in bad.output


def test_a_bad_otlp_endpoint_is_refused_before_the_run(home: Path) -> None:
    with pytest.raises(TraceError, match="OTLP endpoint is a URL"):
        evaluate("digits_cnn", trace_level="MODEL", trace_endpoint="localhost:4318", **QUICK)


@pytest.mark.slow
def test_a_thousand_batches_at_library_level_stay_small(home: Path, tmp_path: Path) -> None:
    file = tmp_path / "long.trace.json"
    result = evaluate(
        "digits_cnn",
        dataset="digits:all",
        batch_size=1,
        num_batches=1000,
        trace_level="LIBRARY",
        trace_file=file,
        **QUICK,
    )
    assert result.num_batches == 1000
    assert result.trace is not None
    assert result.trace["dropped"] == 0
    assert result.trace["aggregated_batches"] == 990
    size = file.stat().st_size
    assert size < 100 * 2**20, size
    summary = summarize(file)
    predict = next(row for row in summary.phases if row.name == "predict")
    assert predict.calls == 1000
    conv = {row.name: row for row in summary.ops["features.0"]}["aten::conv2d"]
    assert conv.calls == 1000
