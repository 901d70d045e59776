"""``forgeml serve``: dynamic batching against no batching, and onnxruntime against torch eager.

Headline figures, one JSON line each:

- ``serve_batching``: a closed-loop load generator (``--concurrency`` clients,
  default 32, each sending its next request when the last is answered, on a
  minimal asyncio HTTP/1.1 keep-alive client; one 8x8 digit per JSON request)
  against ``forgeml serve digits_cnn`` (pytorch agent, one torch thread) on
  127.0.0.1, with dynamic batching (``--max-batch-size 32 --max-latency-ms 5``)
  and with ``--no-batching``, each server a process of its own, started in turn
  in the same run. ``ratio`` is the throughput (requests/s) with batching ÷
  without, target at least 3. p50/p99 latencies and the servers' peak RSS
  (``VmHWM``) are printed too. The load generator shares the machine's cores
  with the server, so on a small machine it caps both sides.
- ``onnx_vs_torch_b1`` and ``onnx_vs_torch_b64``: the time of one ``predict`` of
  the zoo's ``digits_cnn`` through the onnxruntime agent (its ONNX export) against
  the pytorch agent (torch eager), in process, no HTTP, one thread each; ``ratio``
  is torch ÷ onnxruntime (higher: onnxruntime faster), target at least 3 at batch 1
  (batch 64 is reported with no target).

Each side runs ``--runs`` times, alternating; ratios compare the best runs (the
least disturbed on a shared machine); medians are printed too.
Run with ``python benchmarks/serve.py [--runs N] [--seconds S] [--only NAME ...]``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from _bench import Benchmarks, Record

MODEL = "digits_cnn"
TARGET = 3.0


@dataclass
class Context:
    runs: int
    workdir: Path
    seconds: float
    concurrency: int


BENCHMARKS: Benchmarks[Context] = Benchmarks()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory (``VmHWM``), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import psutil

    return round(psutil.Process(pid).memory_info().rss / 2**20, 1)


def start_server(*options: str) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    command = [sys.executable, "-m", "forgeml", "serve", MODEL, "--framework", "pytorch"]
    process = subprocess.Popen(
        [*command, "--threads", "1", "--port", str(port), "--log-level", "warning", *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError("the server was not ready in 180 s")


def load(url: str, seconds: float, concurrency: int, bodies: list[bytes]) -> dict[str, float]:
    """Closed loop: ``concurrency`` clients, each sending its next request when answered.

    Each client is a minimal HTTP/1.1 keep-alive connection on asyncio streams (as
    light as wrk's): httpx's AsyncClient costs more CPU per request than the server
    does, and on a 2-core machine it, not the server, would set the pace.
    """
    host, _, port = url.removeprefix("http://").partition(":")
    path = f"/v1/models/{MODEL}:predict"
    latencies: list[float] = []
    errors = 0

    async def client(index: int, stop: float) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, int(port))
        i = index
        try:
            while time.perf_counter() < stop:
                body = bodies[i % len(bodies)]
                i += concurrency
                start = time.perf_counter()
                writer.write(
                    f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                head = await reader.readuntil(b"\r\n\r\n")
                size = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        size = int(line.split(b":", 1)[1])
                await reader.readexactly(size)
                latencies.append(time.perf_counter() - start)
                errors += not head.startswith(b"HTTP/1.1 200")
        finally:
            writer.close()

    async def main() -> float:
        warm = time.perf_counter() + 0.5
        await asyncio.gather(*(client(i, warm) for i in range(concurrency)))
        latencies.clear()
        begin = time.perf_counter()
        await asyncio.gather(*(client(i, begin + seconds) for i in range(concurrency)))
        return time.perf_counter() - begin

    elapsed = asyncio.run(main())
    ordered = np.sort(np.asarray(latencies))
    return {
        "throughput": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ordered, 50) * 1000),
        "p99_ms": float(np.percentile(ordered, 99) * 1000),
        "requests": float(len(latencies)),
        "errors": float(errors),
    }


@BENCHMARKS("serve_batching")
def serve_batching(ctx: Context) -> Record:
    import json

    from forgeml.eval import load_bundled

    images = load_bundled("digits:test").x[:256]
    bodies = [json.dumps({"instances": [image.tolist()]}).encode() for image in images]
    sides = {
        "batching": ("--max-batch-size", "32", "--max-latency-ms", "5"),
        "no_batching": ("--no-batching",),
    }
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    rss: dict[str, float] = {}
    for _ in range(ctx.runs):
        for side, options in sides.items():
            process, url = start_server(*options)
            try:
                runs[side].append(load(url, ctx.seconds, ctx.concurrency, bodies))
                rss[side] = max(rss.get(side, 0.0), peak_rss_mb(process.pid))
            finally:
                process.terminate()
                process.wait(timeout=60)
    best = {side: max(r, key=lambda f: f["throughput"]) for side, r in runs.items()}
    ratio = best["batching"]["throughput"] / best["no_batching"]["throughput"]
    record: Record = {
        "name": "serve_batching",
        "ratio": round(ratio, 2),
        "target": TARGET,
        "within_target": ratio >= TARGET,
        "concurrency": ctx.concurrency,
        "seconds": ctx.seconds,
        "runs": ctx.runs,
        "baseline": "the same server with --no-batching",
    }
    for side in sides:
        record[f"{side}_rps"] = round(best[side]["throughput"], 1)
        record[f"{side}_rps_median"] = round(
            statistics.median(r["throughput"] for r in runs[side]), 1
        )
        record[f"{side}_p50_ms"] = round(best[side]["p50_ms"], 2)
        record[f"{side}_p99_ms"] = round(best[side]["p99_ms"], 2)
        record[f"{side}_errors"] = int(sum(r["errors"] for r in runs[side]))
        record[f"{side}_server_peak_rss_mb"] = rss[side]
    return record


def predict_seconds(predictor: Any, batch: np.ndarray, budget: float = 0.5) -> float:
    """The median seconds of one predict, over as many calls as fit in ``budget`` seconds."""
    for _ in range(5):
        predictor.predict(batch)
    times: list[float] = []
    stop = time.perf_counter() + budget
    while time.perf_counter() < stop or len(times) < 20:
        start = time.perf_counter()
        predictor.predict(batch)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def onnx_vs_torch(ctx: Context, batch_size: int) -> Record:
    from forgeml.eval import get_manifest, load_bundled
    from forgeml.eval.agents import get_agent
    from forgeml.eval.tasks import get_task

    predictors = {}
    batch = None
    for agent in ("pytorch", "onnxruntime"):
        manifest = get_manifest(MODEL, agent)
        task = get_task(manifest.task)
        predictors[agent] = get_agent(agent).load(manifest, threads=1)
        batch = task.preprocess(load_bundled("digits:test").x[:batch_size], manifest)
    assert batch is not None
    figures: dict[str, list[float]] = {agent: [] for agent in predictors}
    try:
        for _ in range(ctx.runs):
            for agent, predictor in predictors.items():
                figures[agent].append(predict_seconds(predictor, batch))
    finally:
        for predictor in predictors.values():
            predictor.close()
    torch_s, onnx_s = min(figures["pytorch"]), min(figures["onnxruntime"])
    ratio = torch_s / onnx_s
    target = TARGET if batch_size == 1 else None
    return {
        "name": f"onnx_vs_torch_b{batch_size}",
        "ratio": round(ratio, 2),
        "target": target,
        "within_target": ratio >= target if target is not None else None,
        "torch_eager_us": round(torch_s * 1e6, 1),
        "onnxruntime_us": round(onnx_s * 1e6, 1),
        "torch_eager_us_median": round(statistics.median(figures["pytorch"]) * 1e6, 1),
        "onnxruntime_us_median": round(statistics.median(figures["onnxruntime"]) * 1e6, 1),
        "batch_size": batch_size,
        "threads": 1,
        "baseline": "the pytorch agent (torch eager) on the same batch",
        "runs": ctx.runs,
    }


@BENCHMARKS("onnx_vs_torch_b1")
def onnx_vs_torch_b1(ctx: Context) -> Record:
    return onnx_vs_torch(ctx, 1)


@BENCHMARKS("onnx_vs_torch_b64")
def onnx_vs_torch_b64(ctx: Context) -> Record:
    return onnx_vs_torch(ctx, 64)


def main(argv: list[str] | None = None) -> int:
    parser = BENCHMARKS.parser(__doc__, runs=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="load per server and run")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop clients")
    args = parser.parse_args(argv)
    selected = BENCHMARKS.selected(parser, args, "concurrency")
    if args.seconds <= 0:
        parser.error(f"--seconds must be positive. Got {args.seconds}.")
    with tempfile.TemporaryDirectory(prefix="forgeml-bench-") as tmp:
        os.environ["FORGEML_HOME"] = str(Path(tmp) / "home")
        return BENCHMARKS.run(
            selected,
            Path(tmp),
            lambda workdir: Context(
                runs=args.runs,
                workdir=workdir,
                seconds=args.seconds,
                concurrency=args.concurrency,
            ),
        )


if __name__ == "__main__":
    sys.exit(main())
