"""The cost of forgeml.eval's harness: evaluate() against a hand-written loop, in the same run.

Headline figures, one JSON line each:

- ``eval_throughput_b1`` and ``eval_throughput_b64``: samples per second of
  ``forgeml.eval.evaluate`` on the zoo's ``digits_cnn`` (pytorch agent, CPU) at
  batch size 1 and 64, against a hand-written loop that calls the same
  ``torch.nn.Module`` on the same batches (the task's preprocessing, the model
  under one ``torch.inference_mode`` around the loop, argmax, counting correct
  answers). ``ratio`` is ours ÷ hand-written, target at least 0.98. Ours is the
  result's own ``throughput`` (its timed loop: reading batches, per-phase timing,
  the agent's numpy/torch conversions and the task's full metrics included);
  warmup batches run in both and are not timed. ``harness_ratio`` compares with
  a hand-written loop that calls the agent's ``predictor.predict`` instead of the
  module, so it shows the runner's own cost apart from the agent's.
- ``eval_harness_rss``: the peak RSS an evaluation adds beyond what the process
  held before it (model, dataset and framework already loaded once), at 1,000 and
  at 10,000 batches of one sample; ``ratio`` is the first ÷ the second (1.0: no
  growth with the number of batches), target at least 0.95. Peaks are read from
  ``VmHWM`` after resetting it (``/proc/self/clear_refs``), so they are true peaks.

Ours and the baselines run alternately, ``--runs`` times each; ``ratio`` compares
the best run of each (the runs least disturbed by other work on a shared machine),
and the medians are printed too. Both sides use ``--threads`` torch threads
(default 1, which keeps the figures steady on small shared machines).
Run with ``python benchmarks/eval_overhead.py [--runs N] [--threads N] [--only NAME ...]``.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from _bench import Benchmarks, Record

MODEL = "digits_cnn"
AGENT = "pytorch"
WARMUP = 2
TARGET = 0.98
#: The digits data (1797 images) repeated, so a run at batch 1 times thousands of batches.
REPEAT = 2


@dataclass
class Context:
    runs: int
    workdir: Path
    threads: int


BENCHMARKS: Benchmarks[Context] = Benchmarks()
benchmark = BENCHMARKS


def dataset(repeat: int = REPEAT) -> tuple[np.ndarray, np.ndarray]:
    """Every digits image (``digits:all``), ``repeat`` times: an ``(x, y)`` pair."""
    from forgeml.eval import load_bundled

    data = load_bundled("digits:all")
    return np.concatenate([data.x] * repeat), np.concatenate([data.y] * repeat)


class Setup:
    """The model, task and batches both sides use."""

    def __init__(self, batch_size: int, data: tuple[np.ndarray, np.ndarray], threads: int) -> None:
        from forgeml.eval import AGENTS, TASKS, get_manifest

        self.batch_size = batch_size
        self.data = data
        self.threads = threads
        self.agent = AGENTS.load(AGENT)
        self.manifest = get_manifest(MODEL, self.agent.framework)
        self.task = TASKS.load(self.manifest.task)
        loaded = self.task.load_dataset(data, self.manifest)
        self.batches = list(loaded.iter_batches(batch_size))
        self.samples = sum(len(b.ids) for b in self.batches)
        self.predictor = self.agent.load(self.manifest, device="cpu", threads=threads)
        self.module = self.predictor.model  # the torch.nn.Module the agent runs

    def hand_written(self) -> float:
        """Samples per second of a plain loop over the same batches and module."""
        import torch

        module, task, manifest = self.module, self.task, self.manifest
        with torch.inference_mode():
            for batch in self.batches[:WARMUP]:
                module(torch.from_numpy(task.preprocess(batch.raw, manifest)))
            correct = 0
            start = time.perf_counter()
            for batch in self.batches:
                scores = module(torch.from_numpy(task.preprocess(batch.raw, manifest))).numpy()
                correct += int((scores.argmax(axis=1) == batch.labels).sum())
            elapsed = time.perf_counter() - start
        assert correct > 0.9 * self.samples, correct
        return self.samples / elapsed

    def agent_loop(self) -> float:
        """The same loop calling the agent's predictor (its conversions included)."""
        predict, task, manifest = self.predictor.predict, self.task, self.manifest
        for batch in self.batches[:WARMUP]:
            predict(task.preprocess(batch.raw, manifest))
        correct = 0
        start = time.perf_counter()
        for batch in self.batches:
            scores = predict(task.preprocess(batch.raw, manifest))
            correct += int((scores.argmax(axis=1) == batch.labels).sum())
        elapsed = time.perf_counter() - start
        assert correct > 0.9 * self.samples, correct
        return self.samples / elapsed

    def ours(self) -> float:
        from forgeml.eval import evaluate

        result = evaluate(
            MODEL,
            agent=AGENT,
            dataset=self.data,
            batch_size=self.batch_size,
            num_warmup=WARMUP,
            threads=self.threads,
            store=False,
            track=False,
        )
        assert result.num_samples == self.samples, (result.num_samples, self.samples)
        assert result.metrics["top1"] > 0.9, result.metrics
        return result.throughput


def throughput_record(name: str, ctx: Context, batch_size: int) -> Record:
    setup = Setup(batch_size, dataset(), ctx.threads)
    runs: dict[str, list[float]] = {"ours": [], "hand": [], "agent": []}
    sides = {"ours": setup.ours, "hand": setup.hand_written, "agent": setup.agent_loop}
    for side in sides.values():  # the first round loads and warms everything; not counted
        side()
    for _ in range(ctx.runs):
        for side, run in sides.items():
            gc.collect()
            runs[side].append(run())
    best = {side: max(values) for side, values in runs.items()}
    median = {side: statistics.median(values) for side, values in runs.items()}
    ratio = best["ours"] / best["hand"]
    return {
        "name": name,
        "ratio": round(ratio, 4),
        "target": TARGET,
        "within_target": ratio >= TARGET,
        "ours_samples_per_s": round(best["ours"], 1),
        "baseline_samples_per_s": round(best["hand"], 1),
        "baseline": "hand-written loop: task.preprocess, module(x) in inference_mode, argmax",
        "median_ratio": round(median["ours"] / median["hand"], 4),
        "harness_ratio": round(best["ours"] / best["agent"], 4),
        "agent_loop_samples_per_s": round(best["agent"], 1),
        "batch_size": batch_size,
        "batches": len(setup.batches),
        "samples": setup.samples,
        "ours_runs": [round(v, 1) for v in runs["ours"]],
        "baseline_runs": [round(v, 1) for v in runs["hand"]],
        "threads": ctx.threads,
        "runs": ctx.runs,
    }


@benchmark("eval_throughput_b1")
def throughput_b1(ctx: Context) -> Record:
    return throughput_record("eval_throughput_b1", ctx, 1)


@benchmark("eval_throughput_b64")
def throughput_b64(ctx: Context) -> Record:
    return throughput_record("eval_throughput_b64", ctx, 64)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_added(run: Callable[[], Any]) -> float:
    """MB of peak RSS ``run`` adds to what the process holds before it."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kb("VmRSS")
    run()
    return (_status_kb("VmHWM") - before) / 1024


@benchmark("eval_harness_rss")
def harness_rss(ctx: Context) -> Record:
    from forgeml.eval import evaluate

    if not Path("/proc/self/clear_refs").exists():
        raise RuntimeError("needs Linux /proc/self/clear_refs to reset the peak RSS")
    small, large = 1_000, 10_000
    data = dataset(repeat=6)  # 10,782 images: every run reads from the same arrays
    assert len(data[0]) >= large

    def run(batches: int) -> Callable[[], Any]:
        def go() -> Any:
            result = evaluate(
                MODEL,
                agent=AGENT,
                dataset=data,
                batch_size=1,
                num_batches=batches,
                num_warmup=WARMUP,
                threads=ctx.threads,
                store=False,
                track=False,
            )
            assert result.num_batches == batches
            return result

        return go

    run(small)()  # framework, model and caches loaded once before measuring
    figures: dict[int, list[float]] = {small: [], large: []}
    for _ in range(max(1, min(ctx.runs, 3))):
        for batches in (small, large):
            figures[batches].append(peak_rss_added(run(batches)))
    small_mb, large_mb = min(figures[small]), min(figures[large])
    growth = large_mb - small_mb
    ratio = (small_mb + 1.0) / (large_mb + 1.0)  # +1 MB: no division by a zero peak
    return {
        "name": "eval_harness_rss",
        "ratio": round(ratio, 4),
        "target": 0.95,
        "within_target": ratio >= 0.95,
        "peak_added_mb_1000_batches": round(small_mb, 2),
        "peak_added_mb_10000_batches": round(large_mb, 2),
        "growth_mb": round(growth, 2),
        "baseline": "the same evaluation with 10x fewer batches",
        "runs": len(figures[small]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = BENCHMARKS.parser(__doc__)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, both sides")
    args = parser.parse_args(argv)
    selected = BENCHMARKS.selected(parser, args, "threads")

    with tempfile.TemporaryDirectory(prefix="forgeml-bench-") as tmp:
        os.environ["FORGEML_HOME"] = str(Path(tmp) / "home")  # results.db of this run only
        return BENCHMARKS.run(
            selected,
            Path(tmp),
            lambda workdir: Context(runs=args.runs, workdir=workdir, threads=args.threads),
        )


if __name__ == "__main__":
    sys.exit(main())
