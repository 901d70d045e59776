"""Load scenarios (LoadGen semantics): statistics, the four scenarios, the peak search,
the CLI, and a served model measured through ``--endpoint``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from forgeml import EvalError
from forgeml.cli import cli
from forgeml.eval import (
    ScenarioResult,
    ScenarioSettings,
    build_zoo,
    early_stopping_estimate,
    evaluate,
    find_peak,
    run_scenario,
)
from forgeml.eval._scenarios import early_stopping_index, poisson_schedule

# ----------------------------------------------------------------------------- statistics


@pytest.mark.parametrize(("n", "percentile"), [(64, 90.0), (1024, 90.0), (662, 99.0), (5000, 99.0)])
def test_early_stopping_rank_is_the_binomial_upper_bound(n: int, percentile: float) -> None:
    from scipy.stats import binom

    k = early_stopping_index(n, percentile, 0.99)
    assert k is not None
    p = percentile / 100
    # The least rank k whose order statistic bounds the percentile with 99% confidence.
    assert binom.cdf(k - 1, n, p) >= 0.99
    assert binom.cdf(k - 2, n, p) < 0.99


def test_early_stopping_needs_enough_queries() -> None:
    assert early_stopping_index(100, 99.0, 0.99) is None  # 100 queries cannot bound a p99
    latencies = np.arange(1, 1025, dtype=np.int64) * 1_000_000  # 1..1024 ms
    estimate = early_stopping_estimate(latencies, 90.0)
    assert estimate is not None
    assert 921 < estimate < 960  # above the observed p90 (~922 ms), as a bound should be


def test_poisson_schedule_is_seeded_and_has_the_rate() -> None:
    a, b = poisson_schedule(200.0, 20_000, seed=3), poisson_schedule(200.0, 20_000, seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, poisson_schedule(200.0, 20_000, seed=4))
    rate = len(a) / (a[-1] / 1e9)
    assert rate == pytest.approx(200.0, rel=0.05)
    gaps = np.diff(a) / 1e9
    assert np.std(gaps) == pytest.approx(np.mean(gaps), rel=0.1)  # exponential: std == mean


# ----------------------------------------------------------------------------- scenarios


class SleepyModel:
    """A model whose call takes a fixed time per call plus per sample (busy-waits)."""

    def __init__(self, per_call_s: float, per_sample_s: float = 0.0) -> None:
        self.per_call_s = per_call_s
        self.per_sample_s = per_sample_s
        self.batches: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(len(batch))
        end = time.perf_counter() + self.per_call_s + self.per_sample_s * len(batch)
        while time.perf_counter() < end:
            pass
        return batch.sum(axis=1, keepdims=True)


SAMPLES = np.random.default_rng(0).random((100, 4)).astype(np.float32)


def test_single_stream_reports_p90_and_the_early_stopping_estimate() -> None:
    model = SleepyModel(0.0002)
    settings = ScenarioSettings.create("single_stream", min_duration=0.2, min_query_count=300)
    result = run_scenario(model, SAMPLES, settings)
    assert result.valid, result.reasons
    assert result.queries >= 300
    assert result.duration_s >= 0.2
    assert set(model.batches) == {1}  # one sample per query
    assert result.percentile == 90.0
    assert result.percentile_ms >= 0.2
    assert result.early_stopping_ms is not None
    assert result.early_stopping_ms >= result.percentile_ms
    text = "\n".join(result.lines())
    assert "scenario single_stream: VALID" in text
    assert "LoadGen: 600 s and 1024 queries" in text


def test_multi_stream_queries_have_n_samples_and_p99() -> None:
    model = SleepyModel(0.0001)
    settings = ScenarioSettings.create(
        "multi_stream", samples_per_query=4, min_duration=0.1, min_query_count=500
    )
    result = run_scenario(model, SAMPLES, settings)
    assert set(model.batches) == {4}
    assert result.samples == 4 * result.queries
    assert result.percentile == 99.0
    assert result.valid, result.reasons


def test_offline_runs_every_sample_in_batches_for_throughput() -> None:
    model = SleepyModel(0.0005, 0.00001)
    settings = ScenarioSettings.create("offline", batch_size=16, min_duration=0.1)
    result = run_scenario(model, SAMPLES, settings)
    assert set(model.batches) == {16}
    assert result.queries == 1
    assert result.samples >= 4096  # the scaled-down minimum sample count
    assert result.headline[0] == "samples/s"
    assert result.throughput == pytest.approx(result.samples / result.duration_s)
    assert result.valid, result.reasons


def test_server_is_valid_under_its_bound_and_invalid_over_it() -> None:
    model = SleepyModel(0.0003)
    relaxed = ScenarioSettings.create(
        "server", target_qps=400, latency_bound_ms=500, min_duration=0.5, min_query_count=200
    )
    result = run_scenario(model, SAMPLES, relaxed)
    assert result.valid, result.reasons
    assert result.queries >= 200  # the minimum count, and arrivals up to the minimum duration
    assert result.target_qps == 400
    assert result.duration_s >= 0.5  # the schedule reaches the minimum duration
    strict = ScenarioSettings.create(
        "server", target_qps=400, latency_bound_ms=0.01, min_duration=0.5, min_query_count=200
    )
    result = run_scenario(model, SAMPLES, strict)
    assert not result.valid
    assert any("over the bound 0.01 ms" in reason for reason in result.reasons)
    assert "scenario server: INVALID" in result.lines()[0]


def test_server_batches_what_has_arrived_when_behind() -> None:
    model = SleepyModel(0.002)  # 2 ms a call: 2,000 queries/s arrive faster than one at a time
    settings = ScenarioSettings.create(
        "server",
        target_qps=2000,
        latency_bound_ms=1000,
        batch_size=8,
        min_duration=0.3,
        min_query_count=200,
    )
    result = run_scenario(model, SAMPLES, settings)
    assert max(model.batches) == 8  # behind schedule: what has arrived, up to the batch size
    assert sum(model.batches) == result.queries  # every query answered exactly once
    assert len(model.batches) < result.queries  # fewer calls than queries: batched


def test_a_run_cut_short_is_invalid_with_the_reason() -> None:
    settings = ScenarioSettings.create(
        "single_stream", min_duration=0.1, min_query_count=10_000_000, max_duration=0.3
    )
    result = run_scenario(SleepyModel(0.0), SAMPLES, settings)
    assert not result.valid
    assert any("fewer than the minimum 10000000" in reason for reason in result.reasons)


def test_find_peak_brackets_the_highest_valid_rate() -> None:
    model = SleepyModel(0.005)  # 5 ms a call, one at a time: at most 200 queries/s
    settings = ScenarioSettings.create(
        "server", target_qps=50, latency_bound_ms=250, min_duration=0.5, min_query_count=50
    )
    result = find_peak(model, SAMPLES, settings, tolerance=0.25)
    tried = result.peak_search
    assert len(tried) >= 3
    assert tried[0]["target_qps"] == 50
    invalid = [t["target_qps"] for t in tried if not t["valid"]]
    assert invalid  # above capacity the queue grows without bound: INVALID
    assert result.valid
    assert result.target_qps is not None
    assert result.target_qps < min(invalid)
    assert max(t["target_qps"] for t in tried if t["valid"]) == result.target_qps


def test_find_peak_says_when_no_rate_was_invalid() -> None:
    settings = ScenarioSettings.create(
        "server", target_qps=5, latency_bound_ms=1000, min_duration=0.2, min_query_count=5
    )
    result = find_peak(SleepyModel(0.0), SAMPLES, settings, max_runs=3)
    assert [t["target_qps"] for t in result.peak_search] == [5, 10, 20]
    assert result.valid
    assert any("the peak is higher" in note for note in result.notes)


@pytest.mark.parametrize(
    ("scenario", "options", "message"),
    [
        ("server", {}, "--target_qps"),
        ("single_stream", {"min_duration": 5.0, "max_duration": 1.0}, "below its min_duration"),
        ("single_stream", {"target_qps": 5.0}, "server scenario only"),
        ("offline", {"samples_per_query": 4}, "multi_stream scenario only"),
        ("singel_stream", {}, "Did you mean 'single_stream'"),
        ("single_stream", {"min_duration": -1.0}, "non-negative number. Got -1.0"),
    ],
)
def test_bad_settings_say_what_to_pass(
    scenario: str, options: dict[str, float], message: str
) -> None:
    with pytest.raises(EvalError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ScenarioSettings.create(scenario, **options)  # type: ignore[arg-type]


def test_result_round_trips_through_json() -> None:
    settings = ScenarioSettings.create("single_stream", min_duration=0.05, min_query_count=500)
    result = run_scenario(SleepyModel(0.0), SAMPLES, settings)
    again = ScenarioResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result


# ----------------------------------------------------------------------------- zoo models


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("scenario-zoo")
    home = tmp_path_factory.mktemp("scenario-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FORGEML_CACHE", str(folder))
        patch.setenv("FORGEML_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        build_zoo(["digits_cnn", "digits_logreg"], progress=False)
        yield folder


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "agent", "scenario", "options"),
    [
        ("digits_cnn", "pytorch", "single_stream", {}),
        ("digits_cnn", "pytorch", "multi_stream", {}),
        ("digits_logreg", "sklearn", "offline", {}),
        ("digits_logreg", "sklearn", "server", {"target_qps": 300, "latency_bound_ms": 100}),
    ],
)
def test_each_scenario_runs_on_zoo_models(
    zoo: Path, model: str, agent: str, scenario: str, options: dict[str, float]
) -> None:
    settings = ScenarioSettings.create(scenario, min_duration=0.3, batch_size=16, **options)
    result = evaluate(
        model, agent=agent, batch_size=16, store=True, track=False, threads=1, scenario=settings
    )
    assert result.metrics["top1"] > 0.9
    report = result.scenario
    assert report is not None
    assert report.scenario == scenario
    assert report.valid, report.reasons
    assert report.latency.count == report.queries
    stored = json.loads(result.to_json())["scenario"]
    assert stored["status"] == "VALID"


@pytest.mark.slow
def test_cli_scenario_flag_alone_is_single_stream(zoo: Path) -> None:
    runner = CliRunner()
    args = ["eval", "--model_name", "digits_logreg", "--batch_size", "1", "--scenario"]
    args += ["--min_duration", "0.2", "--no-store", "--json"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    scenario = json.loads(result.output)["scenario"]
    assert scenario["scenario"] == "single_stream"
    assert scenario["status"] == "VALID"
    assert scenario["percentile"] == 90.0
    text = runner.invoke(cli, args[:-1])
    assert "scenario single_stream: VALID" in text.output
    assert "early-stopping p90 estimate" in text.output


def test_cli_scenario_options_need_a_scenario() -> None:
    result = CliRunner().invoke(cli, ["eval", "--model_name", "x", "--target_qps", "5"])
    assert result.exit_code == 2
    assert "--target_qps set(s) a load scenario: add --scenario NAME" in result.output


@pytest.mark.slow
def test_endpoint_measures_a_served_model(zoo: Path) -> None:
    from forgeml.serve import BackgroundServer

    local = evaluate("digits_logreg", batch_size=8, store=False, track=False)
    with BackgroundServer("digits_logreg") as server:
        remote = evaluate(
            "digits_logreg",
            batch_size=8,
            store=False,
            track=False,
            endpoint=server.url,
            scenario=ScenarioSettings.create("single_stream", min_duration=0.2, min_query_count=50),
        )
    assert remote.metrics["top1"] == pytest.approx(local.metrics["top1"])
    assert remote.provenance["versions"] is not None
    assert remote.scenario is not None
    assert remote.scenario.valid, remote.scenario.reasons
    assert remote.provenance["agent"]["endpoint"].endswith("/v2/models/digits_logreg/infer")


def test_endpoint_that_is_down_says_so(zoo: Path) -> None:
    with pytest.raises(EvalError, match="did not answer"):
        evaluate("digits_logreg", store=False, track=False, endpoint="http://127.0.0.1:9")
