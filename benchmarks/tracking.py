"""Logging metrics: ``forgeml.track`` against MLflow's own ``mlflow.log_metric``, in the same run.

Headline figures, one JSON line each:

- ``track_log_metrics``: the time to record 10,000 metric values (``--values``) in
  one run of the embedded store (SQLite): ``track.log_metrics({"loss": v}, step=i)`` per value,
  plus ending the run (the final flush: everything is written when it returns),
  against ``mlflow.log_metric("loss", v, step=i)`` per value on a store of the
  same kind. ``ratio`` is MLflow ÷ forgeml, target at least 10. ``ours_caller_ms``
  is the time spent inside the logging calls alone (what a training loop waits).
- ``track_log_metrics_server`` (with ``--server``): the same against a real
  ``mlflow server`` on 127.0.0.1 (``tests/mlflow_server.py``) with
  ``--server-values`` values (default 2,000): each ``mlflow.log_metric`` is an
  HTTP round trip.

Both sides log to a fresh run, with the run started and ended outside the
timing of the baseline and the run's end (its flush) inside ours. Output capture
and system information are off, so only metric logging is measured. Times are
medians over ``--runs`` alternating runs (default 1: the baseline alone takes
30 s to several minutes, one SQLite commit per value).

Run with ``python benchmarks/tracking.py [--runs N] [--values N] [--server]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

Record = dict[str, Any]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def ours(uri: str, experiment: str, values: int) -> tuple[float, float]:
    """forgeml.track: (seconds in the logging calls, seconds including the final flush)."""
    from forgeml import track

    run = track.start_run(experiment, uri=uri, log_output=False, log_system=False)
    start = time.perf_counter()
    for step in range(values):
        track.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
    calls = time.perf_counter() - start
    run.end()
    total = time.perf_counter() - start
    assert len(track.get_metrics(run.run_id, uri=uri)["loss"]) == values
    return calls, total


def baseline(uri: str, experiment: str, values: int) -> float:
    """mlflow.log_metric per value, in one run: seconds."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    # MLflow prints "View run ... at: URL" on stdout: keep stdout for the JSON lines.
    with contextlib.redirect_stdout(sys.stderr), mlflow.start_run() as run:
        start = time.perf_counter()
        for step in range(values):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        elapsed = time.perf_counter() - start
    history = mlflow.MlflowClient(uri).get_metric_history(run.info.run_id, "loss")
    assert len(history) == values
    return elapsed


def measure(name: str, uri: str, values: int, runs: int, target: float | None) -> Record:
    samples: dict[str, list[float]] = {"ours": [], "calls": [], "base": []}
    ours(uri, f"{name}-warmup", 10)  # open the store and import everything once
    baseline(uri, f"{name}-warmup-mlflow", 10)
    for i in range(runs):
        calls, total = ours(uri, f"{name}-forgeml", values)
        samples["calls"].append(calls)
        samples["ours"].append(total)
        samples["base"].append(baseline(uri, f"{name}-mlflow", values))
        print(f"  run {i + 1}/{runs} done", file=sys.stderr, flush=True)
    median = {k: statistics.median(v) for k, v in samples.items()}
    ratio = median["base"] / median["ours"]
    record: Record = {
        "name": name,
        "ratio": round(ratio, 1),
        "target": target,
        "baseline": "mlflow.log_metric per value",
        "values": values,
        "ours_ms": ms(median["ours"]),
        "ours_caller_ms": ms(median["calls"]),
        "ours_us_per_value": round(median["ours"] / values * 1e6, 2),
        "baseline_ms": ms(median["base"]),
        "baseline_us_per_value": round(median["base"] / values * 1e6, 1),
        "caller_ratio": round(median["base"] / median["calls"], 1),
        "runs": runs,
        "store": uri.split(":", 1)[0],
    }
    if target is not None:
        record["within_target"] = ratio >= target
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", type=int, default=1, help="timed runs per figure (the baseline takes minutes)"
    )
    parser.add_argument("--values", type=int, default=10_000, help="metric values per run")
    parser.add_argument(
        "--server", action="store_true", help="also measure against a real mlflow server"
    )
    parser.add_argument(
        "--server-values", type=int, default=2_000, help="metric values per run on the server"
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.values < 1 or args.server_values < 1:
        parser.error("--runs, --values and --server-values must be positive integers.")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    failed = False
    with tempfile.TemporaryDirectory(prefix="forgeml-bench-") as tmp:
        os.chdir(tmp)  # MLflow's fluent API may create ./mlruns
        os.environ["FORGEML_HOME"] = str(Path(tmp) / "home")
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME"):
            os.environ.pop(name, None)
        from forgeml import track

        jobs: list[tuple[str, Any]] = [
            (
                "track_log_metrics",
                lambda: measure(
                    "track_log_metrics", track.embedded_uri(), args.values, args.runs, 10
                ),
            )
        ]
        if args.server:
            jobs.append(("track_log_metrics_server", lambda: server_figure(Path(tmp), args)))
        for name, job in jobs:
            try:
                record = job()
            except Exception as exc:
                record = {"name": name, "ratio": 0.0, "error": f"{type(exc).__name__}: {exc}"}
                failed = True
            print(json.dumps(record), flush=True)
    return 1 if failed else 0


def server_figure(tmp: Path, args: argparse.Namespace) -> Record:
    from mlflow_server import start_mlflow

    with start_mlflow(tmp / "server") as server:
        return measure("track_log_metrics_server", server.uri, args.server_values, args.runs, 10)


if __name__ == "__main__":
    sys.exit(main())
