"""``forgeml serve``: serve a model over HTTP with dynamic batching (FastAPI + uvicorn).

Every option is also spelled with underscores (``--max_batch_size``), and every
option not given comes from its environment variable ``FORGEML_SERVE_<OPTION>``
(``FORGEML_SERVE_MAX_BATCH_SIZE=8``, ``FORGEML_SERVE_EXTERNAL=false``), else its
default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from forgeml.cli._options import option

F = TypeVar("F", bound=Callable[..., Any])


def _option(name: str, *more: str, **kwargs: Any) -> Callable[[F], F]:
    """An option with both spellings, its help naming its ``FORGEML_SERVE_*`` variable."""
    return option(name, *more, env=f"FORGEML_SERVE_{name.upper()}", **kwargs)


@click.command("serve")
@click.argument("model")
@_option("framework", metavar="NAME", default=None, help="Pick MODEL's manifest of this framework.")
@_option(
    "agent", metavar="NAME", default=None, help="The agent that runs it (default: framework's)."
)
@_option("host", metavar="HOST", default=None, help="Address to bind. [default: 127.0.0.1]")
@_option("port", metavar="PORT", type=int, default=None, help="Port to bind. [default: 8000]")
@_option(
    "workers",
    metavar="N",
    type=int,
    default=None,
    help="uvicorn worker processes, each loading the model. [default: 1]",
)
@_option(
    "max_batch_size",
    metavar="N",
    type=int,
    default=None,
    help="The most samples per model call. [default: 32]",
)
@_option(
    "max_latency_ms",
    metavar="MS",
    type=float,
    default=None,
    help="How long a batch waits for more requests. [default: 5]",
)
@_option(
    "max_queue",
    metavar="N",
    type=int,
    default=None,
    help="Requests that may wait for the model; more get 429. A request of more than "
    "--max-batch-size samples counts once per that many. [default: 4096]",
)
@_option(
    "max_request_mb",
    metavar="MB",
    type=float,
    default=None,
    help="The largest request body in MiB; larger get 413. [default: 16]",
)
@click.option(
    "--batching/--no-batching",
    "batching",
    default=None,
    help="Dynamic batching, or every request alone. [default: on] [env: FORGEML_SERVE_BATCHING]",
)
@click.option(
    "--external/--embedded",
    "external",
    default=None,
    help="Run the model on --backend-url, or load it in this process. [default: embedded; "
    "external when a backend URL is given] [env: FORGEML_SERVE_EXTERNAL]",
)
@_option(
    "backend_url",
    metavar="URL",
    default=None,
    help="A forgeml or KServe-v2 server that runs the model.",
)
@_option(
    "backend_model",
    metavar="NAME",
    default=None,
    help="The model's name on the backend. [default: MODEL's name]",
)
@_option(
    "backend_start_timeout",
    metavar="SECONDS",
    type=float,
    default=None,
    help="How long to wait for the backend to be ready before the model counts as failed "
    "(/readyz says why); 0 waits forever. [default: 300]",
)
@_option("device", metavar="DEVICE", default=None, help="cpu or cuda:N. [default: cpu]")
@_option("threads", metavar="N", type=int, default=None, help="The framework's thread count.")
@_option(
    "log_level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default=None,
    help="uvicorn's log level. [default: info]",
)
@click.option("--check", is_flag=True, help="Check the model and settings, print them, and exit.")
@click.option(
    "--json", "as_json", is_flag=True, help="With --check: print the report as JSON (only then)."
)
def serve(model: str, check: bool, as_json: bool, **options: Any) -> None:
    """Serve MODEL (a model name or a manifest .yml) over HTTP until SIGTERM/Ctrl-C.

    \b
    Routes (NAME: the model's name):
      POST /v1/models/NAME:predict  {"instances": [...]} -> {"predictions": [...]};
                                    also .npy / safetensors bodies, multipart images
      POST /v2/models/NAME/infer    KServe v2 tensors in and out
      GET  /v1/models  /healthz  /readyz  /metrics (Prometheus)  /docs  /openapi.json

    Concurrent requests are batched: a model call gets up to --max-batch-size
    samples, waiting at most --max-latency-ms for them; a request with more
    samples runs in several calls. Bad input gets a 4xx JSON error that says
    what was expected. SIGTERM stops accepting, answers what is queued, exits 0.

    \b
    Examples:
      forgeml serve digits_cnn --port 8000
      forgeml serve digits_cnn --agent onnxruntime --max-batch-size 64
      forgeml serve /app/model/digits_cnn.yml --host 0.0.0.0 --workers 2
      forgeml serve digits_cnn --backend-url http://gpu-box:8000   # proxy
      curl -d '{"instances": [[[0, 5, 16, ...], ...]]}' localhost:8000/v1/models/digits_cnn:predict
    """
    from forgeml.serve import ServeSettings
    from forgeml.serve._server import serve as run

    if as_json and not check:
        raise click.UsageError(
            "--json formats the report of --check; a running server has nothing to print as "
            "JSON. Add --check, or drop --json."
        )
    settings = ServeSettings.resolve(model, **options)
    if check:
        import json

        from forgeml.serve._app import ServerState

        state = ServerState(settings)
        if as_json:
            data = {
                "settings": json.loads(settings.to_json()),
                "model": state.model.describe(),
                "backend": state.backend.where,
            }
            click.echo(json.dumps(data, indent=2))
        else:
            m = state.model
            click.echo(
                f"Model {m.name} ({m.manifest.task}, agent {m.agent}, backend "
                f"{state.backend.where}) on http://{settings.host}:{settings.port}: batches of "
                f"up to {settings.effective_batch_size}, waiting at most "
                f"{settings.max_latency_ms:g} ms; {settings.workers} worker(s)."
            )
        return
    run(settings)
