"""``forgeml trace``: read the trace files that traced evaluations write."""

from __future__ import annotations

import json

import click


@click.group("trace")
def trace() -> None:
    """Summarise trace files: where the time goes.

    A traced evaluation (forgeml eval --trace_level LEVEL) writes a Chrome
    trace file, by default FORGEML_HOME/traces/<evaluation id>.trace.json, that
    opens in Perfetto (https://ui.perfetto.dev) or chrome://tracing.
    """


@trace.command("summary")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option(
    "--top",
    metavar="N",
    type=click.IntRange(min=1),
    default=15,
    show_default=True,
    help="Rows of the layer and operator tables.",
)
@click.option("--json", "as_json", is_flag=True, help="Print every table as JSON.")
def summary(file: str, top: int, as_json: bool) -> None:
    """Per-phase, per-layer and per-operator time tables of a trace FILE.

    \b
    phases: evaluation, dataset and model load, warmup, batches with their
            preprocess, predict and postprocess (calls, total, mean, share)
    layers: torch modules, Keras layers or ONNX Runtime nodes (FRAMEWORK level)
    operators per layer: calls and time (LIBRARY level; operators beyond the
            sampled batches are counted from the trace's aggregates); kernels
            per layer on GPU traces
    counters: CPU, memory and GPU series (HARDWARE level)

    \b
    Examples:
      forgeml eval --model_name digits_cnn --batch_size 1 --num_batches 50 \\
          --trace_level LIBRARY --trace_file digits.trace.json
      forgeml trace summary digits.trace.json --top 5
    """
    from forgeml.trace import summarize

    result = summarize(file)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    from forgeml.cli._output import print_table

    print_table(result.renderable(top=top))
