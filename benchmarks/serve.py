"""``forgeml serve``: dynamic batching against no batching, and onnxruntime against torch eager.

Headline figures, one JSON line each:

- ``serve_batching``: a closed-loop load generator (``--concurrency`` clients,
  default 32, each sending its next request when its last is answered) against
  ``forgeml serve digits_cnn`` (pytorch agent, torch eager, one torch thread) on
  127.0.0.1, with dynamic batching (``--max-batch-size 32 --max-latency-ms 5``)
  and with ``--no-batching``: the same server and code path, each a process of its
  own, started in turn in the same run. Requests are one 8x8 digit each, in the v1
  JSON form ``{"instances": [...]}`` (``--body npy``: an ``.npy`` body instead).
  ``ratio`` is the throughput (requests/s) with batching ÷ without, target at
  least 3; p50/p99 latencies and the servers' peak RSS (``VmHWM``) are printed too.
  ``breakdown`` says where the time went: CPU µs per request in the server (all
  its threads) and in the load generator, samples and µs per model call (the
  server's own metrics: the call plus the hop to the model thread and back), torch
  eager alone at batch 1 and 32, and ``cpu_per_request_ratio``, the ratio a
  machine whose cores are all busy (the server and the load generator share them)
  can show.
- ``onnx_vs_torch_b1`` and ``onnx_vs_torch_b64``: the time of one ``predict`` of
  the zoo's ``digits_cnn`` through the onnxruntime agent (its ONNX export) against
  the pytorch agent (torch eager), in process, no HTTP, one thread each; ``ratio``
  is torch ÷ onnxruntime (higher: onnxruntime faster), target at least 3 at batch 1
  (batch 64 is reported with no target).

The load generator is a bare asyncio protocol per connection (on uvloop when it
is installed) in this process, separate from the server's: a few µs per request,
so the server sets the pace. Each side runs ``--runs`` times, alternating; ratios
compare the best runs (the least disturbed on a shared machine); medians are
printed too. Run with ``python benchmarks/serve.py [--runs N] [--seconds S]
[--body json|npy] [--only NAME ...]``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
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
from forgeml._core._net import free_port

MODEL = "digits_cnn"
TARGET = 3.0


@dataclass
class Context:
    runs: int
    workdir: Path
    seconds: float
    concurrency: int
    body: str


BENCHMARKS: Benchmarks[Context] = Benchmarks()


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


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process ``pid`` has used, all threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class Connection(asyncio.Protocol):
    """One closed-loop client: sends a request, reads the whole answer, sends the next.

    A bare protocol on one keep-alive connection (no streams, no HTTP library): a few
    µs of CPU per request, so on a 2-core machine the server, not the load generator,
    sets the pace.
    """

    def __init__(self, requests: list[bytes], first: int, step: int, stop: float, out: Any):
        self.requests, self.i, self.step, self.stop = requests, first, step, stop
        self.latencies, self.errors = out
        self.buffer = b""
        self.need = -1
        self.ok = True
        self.start = 0.0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.send()

    def send(self) -> None:
        if time.perf_counter() >= self.stop:
            self.transport.close()
            return
        self.start = time.perf_counter()
        self.transport.write(self.requests[self.i % len(self.requests)])
        self.i += self.step

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.need < 0:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buffer[: end + 2].lower()  # each header line ends with CRLF
                at = head.find(b"content-length:") + 15
                self.need = end + 4 + int(head[at : head.find(b"\r\n", at)])
                self.ok = head.startswith(b"http/1.1 200")
            if len(self.buffer) < self.need:
                return
            self.buffer = self.buffer[self.need :]
            self.need = -1
            self.latencies.append(time.perf_counter() - self.start)
            self.errors[0] += not self.ok
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def load(
    url: str, seconds: float, concurrency: int, requests: list[bytes], pid: int
) -> dict[str, float]:
    """Closed loop: ``concurrency`` clients, each sending its next request when answered
    (0.5 s of warm-up first); throughput, latency percentiles, and the CPU time the
    server and this load generator spent per request."""
    host, _, port = url.removeprefix("http://").partition(":")

    async def phase(duration: float) -> tuple[list[float], int, float]:
        loop = asyncio.get_running_loop()
        latencies: list[float] = []
        errors = [0]
        stop = time.perf_counter() + duration
        begin = time.perf_counter()
        connections = []
        for i in range(concurrency):
            _, protocol = await loop.create_connection(
                lambda i=i: Connection(requests, i, concurrency, stop, (latencies, errors)),
                host,
                int(port),
            )
            connections.append(protocol)
        await asyncio.gather(*(c.done for c in connections))
        return latencies, errors[0], time.perf_counter() - begin

    async def main() -> tuple[list[float], int, float, float, float]:
        await phase(0.5)
        server, client = cpu_seconds(pid), time.process_time()
        latencies, errors, elapsed = await phase(seconds)
        return (
            latencies,
            errors,
            elapsed,
            cpu_seconds(pid) - server,
            time.process_time() - client,
        )

    if available("uvloop"):
        import uvloop

        latencies, errors, elapsed, server_cpu, client_cpu = uvloop.run(main())
    else:
        latencies, errors, elapsed, server_cpu, client_cpu = asyncio.run(main())
    n = len(latencies)
    ordered = np.sort(np.asarray(latencies))
    return {
        "throughput": n / elapsed,
        "p50_ms": float(np.percentile(ordered, 50) * 1000),
        "p99_ms": float(np.percentile(ordered, 99) * 1000),
        "requests": float(n),
        "errors": float(errors),
        "server_cpu_us": server_cpu / n * 1e6,
        "client_cpu_us": client_cpu / n * 1e6,
    }


def batch_metrics(url: str) -> dict[str, float]:
    """The server's model calls so far (``/metrics``): count, samples, seconds."""
    import httpx

    figures = {"calls": 0.0, "samples": 0.0, "seconds": 0.0}
    names = {
        "forgeml_serve_batch_size_count": "calls",
        "forgeml_serve_batch_size_sum": "samples",
        "forgeml_serve_batch_seconds_sum": "seconds",
    }
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in names:
            figures[names[name]] = float(value)
    return figures


def request_bytes(body_kind: str) -> list[bytes]:
    """Whole HTTP requests, one 8x8 digit each: v1 JSON ``{"instances": [...]}`` or .npy."""
    import io
    import json

    from forgeml.eval import load_bundled

    images = load_bundled("digits:test").x[:256]
    path = f"/v1/models/{MODEL}:predict"
    requests = []
    for image in images:
        if body_kind == "json":
            body = json.dumps({"instances": [image.tolist()]}).encode()
            media = "application/json"
        else:
            buffer = io.BytesIO()
            np.save(buffer, image[None].astype(np.float32), allow_pickle=False)
            body, media = buffer.getvalue(), "application/x-npy"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {media}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    return requests


@BENCHMARKS("serve_batching")
def serve_batching(ctx: Context) -> Record:
    requests = request_bytes(ctx.body)
    sides = {
        "batching": ("--max-batch-size", "32", "--max-latency-ms", "5"),
        "no_batching": ("--no-batching",),
    }
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    rss: dict[str, float] = {}
    load_average = os.getloadavg()[0]
    for _ in range(ctx.runs):
        for side, options in sides.items():
            process, url = start_server(*options)
            try:
                before = batch_metrics(url)
                figures = load(url, ctx.seconds, ctx.concurrency, requests, process.pid)
                after = batch_metrics(url)
                calls = after["calls"] - before["calls"]
                figures["mean_batch"] = (after["samples"] - before["samples"]) / max(calls, 1)
                figures["batch_us"] = (after["seconds"] - before["seconds"]) / max(calls, 1) * 1e6
                runs[side].append(figures)
                rss[side] = max(rss.get(side, 0.0), peak_rss_mb(process.pid))
            finally:
                process.terminate()
                process.wait(timeout=60)
    best = {side: max(r, key=lambda f: f["throughput"]) for side, r in runs.items()}
    ratio = best["batching"]["throughput"] / best["no_batching"]["throughput"]

    def cpu(side: str) -> float:
        figures = best[side]
        return figures["server_cpu_us"] + figures["client_cpu_us"]

    record: Record = {
        "name": "serve_batching",
        "ratio": round(ratio, 2),
        "target": TARGET,
        "within_target": ratio >= TARGET,
        "ratio_of_medians": round(
            statistics.median(r["throughput"] for r in runs["batching"])
            / statistics.median(r["throughput"] for r in runs["no_batching"]),
            2,
        ),
        "concurrency": ctx.concurrency,
        "seconds": ctx.seconds,
        "runs": ctx.runs,
        "body": "v1 JSON" if ctx.body == "json" else ".npy",
        "baseline": "the same server with --no-batching",
    }
    for side in sides:
        figures = best[side]
        record[f"{side}_rps"] = round(figures["throughput"], 1)
        record[f"{side}_rps_median"] = round(
            statistics.median(r["throughput"] for r in runs[side]), 1
        )
        record[f"{side}_p50_ms"] = round(figures["p50_ms"], 2)
        record[f"{side}_p99_ms"] = round(figures["p99_ms"], 2)
        record[f"{side}_errors"] = int(sum(r["errors"] for r in runs[side]))
        record[f"{side}_server_peak_rss_mb"] = rss[side]
    # Where the time goes (best runs): CPU per request in the server (all its threads)
    # and in the load generator, and the model calls as the server's metrics saw them
    # (samples per call; µs per call, including the hop to the model thread and back).
    breakdown: Record = {}
    for side in sides:
        figures = best[side]
        breakdown[f"{side}_server_cpu_us_per_request"] = round(figures["server_cpu_us"], 1)
        breakdown[f"{side}_client_cpu_us_per_request"] = round(figures["client_cpu_us"], 1)
        breakdown[f"{side}_mean_batch"] = round(figures["mean_batch"], 1)
        breakdown[f"{side}_model_call_us"] = round(figures["batch_us"], 1)
    # With every core busy, throughput ~ 1 / (CPU per request): the ratio this machine can
    # show when the server and load generator share its cores.
    breakdown["cpu_per_request_ratio"] = round(cpu("no_batching") / cpu("batching"), 2)
    breakdown["torch_eager_us_b1"], breakdown["torch_eager_us_b32"] = torch_model_us((1, 32))
    breakdown["cores"] = os.cpu_count()
    breakdown["load_average"] = round(load_average, 1)
    breakdown["server_stack"] = server_stack()
    record["breakdown"] = breakdown
    return record


def server_stack() -> str:
    """What the server uses here: event loop, HTTP parser, JSON library."""
    from forgeml.serve._server import stack

    return "+".join(stack().values())


def torch_model_us(sizes: tuple[int, ...]) -> tuple[float, ...]:
    """Median µs of one torch-eager predict of the digits CNN (one thread) per batch size."""
    from forgeml.eval import get_manifest, load_bundled
    from forgeml.eval.agents import get_agent
    from forgeml.eval.tasks import get_task

    manifest = get_manifest(MODEL, "pytorch")
    task = get_task(manifest.task)
    predictor = get_agent("pytorch").load(manifest, threads=1)
    images = load_bundled("digits:test").x
    try:
        return tuple(
            round(predict_seconds(predictor, task.preprocess(images[:n], manifest), 0.3) * 1e6, 1)
            for n in sizes
        )
    finally:
        predictor.close()


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
    parser.add_argument(
        "--body",
        choices=("json", "npy"),
        default="json",
        help="request body of serve_batching: v1 JSON (default) or .npy",
    )
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
                body=args.body,
            ),
        )


if __name__ == "__main__":
    sys.exit(main())
