"""``forgeml eval``: evaluate a model with an agent on a dataset, and record the result.

Every option is also spelled with underscores (``--model_name``), as
MLModelScope users type them. ``forgeml eval matrix SPEC.yml`` evaluates models x
agents x batch sizes x datasets (see :mod:`forgeml.eval._matrix`): ``eval`` is a
group whose own options run one evaluation when no subcommand is given. ``--cfg FILE``
reads those options from YAML files (merged in order into the context's defaults, so
options given on the command line win).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from forgeml._core._errors import ConfigError, did_you_mean
from forgeml.cli._options import option


@click.group(
    "eval",
    invoke_without_command=True,
    subcommand_metavar="[matrix SPEC.yml [ARGS]...]",
)
@option(
    "cfg",
    metavar="FILE",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    is_eager=True,
    expose_value=False,
    callback=lambda ctx, param, files: _read_config(ctx, files),
    help="Read options from a YAML config file (forgeml.config: !include and import: work); "
    "repeat to merge several, later files winning. Keys are the options' names with "
    "underscores (model_name, batch_size, trace_level, ...), also grouped as trace: {level, "
    "mode, file, endpoint} and scenario: {name, samples_per_query, target_qps, ...}. "
    "Options given on the command line win over the files.",
)
@option(
    "model_name",
    metavar="NAME",
    default=None,
    help="The model: a name, or a manifest .yml. Required (unless a subcommand is given).",
)
@option(
    "agent",
    metavar="AGENT",
    default=None,
    help="The agent (framework) that runs it: pytorch, onnxruntime, tensorflow, sklearn, "
    "xgboost, tensorrt. Default: the model's framework.",
)
@option("task", metavar="TASK", default=None, help="The task. Default: the model's task.")
@option(
    "dataset_name",
    metavar="NAME",
    default=None,
    help="A bundled dataset (digits, iris, ...; 'digits:all' for every part). "
    "Default: the held-out part of the model's training dataset.",
)
@option(
    "dataset_path",
    metavar="PATH",
    default=None,
    type=click.Path(exists=True),
    help="A dataset on disk: a folder of images, a .npz or a .csv file.",
)
@option("batch_size", metavar="N", type=int, default=64, show_default=True, help="Batch size.")
@option(
    "num_warmup",
    metavar="N",
    type=int,
    default=1,
    show_default=True,
    help="Batches run first and not counted.",
)
@option("num_batches", metavar="N", type=int, default=None, help="Evaluate at most N batches.")
@option(
    "architecture",
    metavar="ARCH",
    default="cpu",
    show_default=True,
    help="Where to run: cpu, gpu or cuda:N.",
)
@option("threads", metavar="N", type=int, default=None, help="The framework's thread count.")
@option(
    "save_output",
    metavar="FILE",
    default=None,
    type=click.Path(dir_okay=False),
    help="Write per-sample predictions (ids, prediction, target, top-5) to a .csv, .json or .npz.",
)
@option(
    "no_store",
    is_flag=True,
    help="Do not record the result in the results database.",
)
@option(
    "trace_level",
    metavar="LEVEL",
    default=None,
    help="Trace the evaluation down to LEVEL: NO_TRACE, APPLICATION (loads, warmup, batches), "
    "MODEL (predict calls), FRAMEWORK (layers), LIBRARY (operators), HARDWARE (CPU, memory, "
    "GPU counters) or FULL. Writes a Perfetto/Chrome trace file (see 'forgeml trace summary').",
)
@option(
    "trace_mode",
    type=click.Choice(["single", "leveled"]),
    default="single",
    show_default=True,
    help="leveled: one run per level up to --trace_level, each level's latency from its own "
    "run, with the tracing overhead per level (the reported latencies: the untraced run's).",
)
@option(
    "trace_file",
    metavar="FILE",
    default=None,
    type=click.Path(dir_okay=False),
    help="Where the trace file goes. Default: FORGEML_HOME/traces/<evaluation id>.trace.json.",
)
@option(
    "trace_endpoint",
    metavar="URL",
    default=None,
    help="Also send the trace over OTLP: http://HOST:4318 (HTTP) or grpc://HOST:4317. "
    "Default: OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT when set.",
)
@option(
    "scenario",
    type=click.Choice(["single_stream", "multi_stream", "offline", "server"]),
    default=None,
    is_flag=False,
    flag_value="single_stream",
    help="After the evaluation, a load scenario with MLPerf LoadGen's semantics (--scenario "
    "alone: single_stream): single_stream (one sample at a time; p90 with the early-stopping "
    "estimate), multi_stream (queries of --samples_per_query samples; p99), offline (every "
    "sample, in batches of --batch_size; throughput), server (Poisson arrivals at --target_qps; "
    "VALID when p99 <= --latency_bound_ms). See docs/scenarios.md.",
)
@option(
    "samples_per_query",
    metavar="N",
    type=int,
    default=None,
    help="multi_stream: samples per query (default 8, LoadGen's).",
)
@option(
    "target_qps",
    metavar="QPS",
    type=float,
    default=None,
    help="server: mean arrival rate, queries per second (seeded Poisson schedule).",
)
@option(
    "latency_bound_ms",
    metavar="MS",
    type=float,
    default=None,
    help="server: the bound on the 99th percentile latency of a VALID run.",
)
@option(
    "find_peak",
    is_flag=True,
    help="server: search the highest VALID --target_qps (double while VALID, then bisect).",
)
@option(
    "min_duration",
    metavar="SECONDS",
    type=float,
    default=None,
    help="Scenario minimum duration (default 2 s; LoadGen's 600 s scaled down for a local run).",
)
@option(
    "min_query_count",
    metavar="N",
    type=int,
    default=None,
    help="Scenario minimum number of queries (default: 1024 single_stream, 662 multi_stream, "
    "500 server, 1 offline of 4096 samples; the output states LoadGen's).",
)
@option(
    "max_duration",
    metavar="SECONDS",
    type=float,
    default=None,
    help="Stop a scenario after this long even if the minimums are not met (the run is then "
    "INVALID). Default 60 s.",
)
@option(
    "seed",
    metavar="N",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the scenario's query draws and arrival schedule.",
)
@option(
    "endpoint",
    metavar="URL",
    default=None,
    help="Evaluate the model served at URL (forgeml serve, or a KServe-v2 server: "
    "http://HOST:PORT, or the full .../v2/models/NAME/infer URL) instead of loading it here.",
)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a TTY).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def eval_command(
    ctx: click.Context,
    model_name: str | None,
    agent: str | None,
    task: str | None,
    dataset_name: str | None,
    dataset_path: str | None,
    batch_size: int,
    num_warmup: int,
    num_batches: int | None,
    architecture: str,
    threads: int | None,
    save_output: str | None,
    no_store: bool,
    trace_level: str | None,
    trace_mode: str,
    trace_file: str | None,
    trace_endpoint: str | None,
    scenario: str | None,
    samples_per_query: int | None,
    target_qps: float | None,
    latency_bound_ms: float | None,
    find_peak: bool,
    min_duration: float | None,
    min_query_count: int | None,
    max_duration: float | None,
    seed: int,
    endpoint: str | None,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Evaluate a model: accuracy, latency percentiles (per batch) and throughput.

    The result is printed and stored in the results database
    (FORGEML_HOME/results.db; see 'forgeml results'); with tracking configured
    it is also logged as an MLflow run.

    'forgeml eval matrix SPEC.yml' evaluates models x agents x batch sizes x
    datasets (see 'forgeml eval matrix --help').

    \b
    Examples:
      forgeml eval --model_name digits_cnn --agent pytorch --batch_size 2
      forgeml eval --task image_classification --agent pytorch --model_name digits_cnn \\
          --architecture cpu --num_warmup 2 --dataset_name digits --batch_size 2
      forgeml eval --model-name digits_cnn --agent onnxruntime --dataset-path imgs/ --json
      forgeml eval --model_name digits_cnn --batch_size 1 --scenario single_stream
      forgeml eval --model_name digits_cnn --scenario server --target_qps 500 \\
          --latency_bound_ms 5 --find_peak
      forgeml eval --model_name digits_cnn --endpoint http://127.0.0.1:8000 --scenario
      forgeml eval matrix digits.yml --jobs 2
      forgeml eval --cfg eval.yml --cfg traced.yml --batch_size 8

    \b
    A --cfg file (keys not given fall back to the options' defaults):
      model_name: digits_cnn
      agent: pytorch
      batch_size: 8
      trace: {level: MODEL, file: digits.trace.json}   # or trace_level: MODEL
      scenario: {name: server, target_qps: 200, latency_bound_ms: 5}
    """
    if ctx.invoked_subcommand is not None:
        given = [
            f"--{p.name.replace('_', '-')}"
            for p in ctx.command.params
            if p.name
            and ctx.get_parameter_source(p.name)
            not in (ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP)
        ]
        if given:
            raise click.UsageError(
                f"The options of 'forgeml eval' ({', '.join(given)}) run one evaluation; "
                f"they do not apply to 'forgeml eval {ctx.invoked_subcommand}'. Put them in "
                f"the spec, or after the subcommand.",
                ctx,
            )
        return
    if model_name is None:
        param = next(p for p in ctx.command.params if p.name == "model_name")
        raise click.MissingParameter(ctx=ctx, param=param)
    from forgeml.eval import evaluate

    if dataset_name is not None and dataset_path is not None:
        raise click.UsageError("Give --dataset_name or --dataset_path, not both.")
    dataset: object = Path(dataset_path) if dataset_path is not None else dataset_name
    settings = None
    scenario_options = {
        "--samples_per_query": samples_per_query,
        "--target_qps": target_qps,
        "--latency_bound_ms": latency_bound_ms,
        "--min_duration": min_duration,
        "--min_query_count": min_query_count,
        "--max_duration": max_duration,
    }
    if scenario is not None:
        from forgeml.eval import ScenarioSettings

        settings = ScenarioSettings.create(
            scenario,
            samples_per_query=samples_per_query,
            target_qps=target_qps,
            latency_bound_ms=latency_bound_ms,
            min_duration=min_duration,
            min_query_count=min_query_count,
            max_duration=max_duration,
            batch_size=batch_size,
            seed=seed,
        )
    elif find_peak or any(v is not None for v in scenario_options.values()):
        given = [name for name, value in scenario_options.items() if value is not None]
        raise click.UsageError(
            f"{', '.join(given + (['--find_peak'] if find_peak else []))} set(s) a load "
            f"scenario: add --scenario NAME (single_stream, multi_stream, offline or server)."
        )
    result = evaluate(
        model_name,
        agent=agent,
        task=task,
        dataset=dataset,
        batch_size=batch_size,
        num_warmup=num_warmup,
        num_batches=num_batches,
        architecture=architecture,
        threads=threads,
        save_output=save_output,
        store=not no_store,
        progress=False if as_json else progress,
        trace_level=trace_level,
        trace_mode=trace_mode,
        trace_file=trace_file,
        trace_endpoint=trace_endpoint,
        scenario=settings,
        find_peak=find_peak,
        endpoint=endpoint,
    )
    if as_json:
        click.echo(result.to_json())
        return
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(width=max(console.width, 100), highlight=False)
    console.print(result.renderable())
    if result.output_file:
        console.print(f"predictions written to {result.output_file}")
    if not no_store:
        console.print(f"recorded as {result.id[:12]} (forgeml results show {result.id[:12]})")


@eval_command.command(
    "matrix", short_help="Evaluate models x agents x batch sizes x datasets from a YAML spec."
)
@click.argument("spec", metavar="SPEC.yml", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--jobs",
    "-j",
    metavar="N",
    type=click.IntRange(min=1),
    default=None,
    help="Run each entry in a worker process of its own, N at a time (default: one after "
    "another in this process). More than 1 on shared cores distorts latencies.",
)
@click.option("--force", is_flag=True, help="Run entries the results database already holds.")
@click.option("--dry-run", is_flag=True, help="List the entries and whether they are stored.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
def matrix(spec: str, jobs: int | None, force: bool, dry_run: bool, as_json: bool) -> None:
    """Evaluate models x agents x batch sizes x datasets from a YAML spec.

    \b
    SPEC.yml:
      models: [digits_cnn, "digits_*"]   # names or patterns (forgeml models ls)
      agents: [pytorch, onnxruntime]     # default: every framework a model has
      batch_sizes: [1, 64]
      datasets: [digits]                 # default: each model's held-out data
      num_warmup: 1
      num_batches: null                  # null: all of the dataset
      threads: null
      architecture: cpu

    A model without a manifest for an agent, or an agent that cannot run here
    (package missing), is skipped with a note. Results go to the results
    database; an entry it already holds (same model and version, framework, agent,
    task, dataset, batch size, device, num_batches, num_warmup and threads, recorded
    on this host by an earlier matrix) is not run again unless --force is given,
    so an interrupted matrix resumes where it stopped. A failed entry does not
    stop the others; the exit status is 1 when any failed. A summary table
    ends the run.

    \b
    Examples:
      forgeml eval matrix digits.yml
      forgeml eval matrix digits.yml --jobs 2 --force
      forgeml eval matrix digits.yml --dry-run
    """
    import json

    from forgeml.eval import MatrixOutcome, ResultsDB, load_matrix, run_matrix
    from forgeml.eval._matrix import FAILED, stored_results

    the_spec = load_matrix(spec)
    if dry_run:
        entries, notes = the_spec.expand()
        found = stored_results(entries, ResultsDB())
        if as_json:
            records = [{**e.to_dict(), "stored": e.key in found} for e in entries]
            click.echo(json.dumps({"entries": records, "notes": notes}, indent=2))
            return
        for entry in entries:
            stored = found.get(entry.key)
            state = f"in database ({stored.id[:12]})" if stored is not None else "to run"
            click.echo(f"{entry.label}: {state}")
        for note in notes:
            click.echo(f"note: {note}")
        click.echo(f"{len(entries)} entries, {sum(e.key in found for e in entries)} stored.")
        return
    if jobs is not None and jobs > 1:
        click.echo(
            f"warning: running {jobs} evaluations at a time: on shared cores they compete for "
            f"the CPU, which distorts latency and throughput (slower, noisier). For timings to "
            f"compare, run without --jobs or with --jobs 1; or set 'threads' in the spec so "
            f"the jobs split the cores.",
            err=True,
        )

    def progress(done: int, total: int, outcome: MatrixOutcome) -> None:
        if as_json:
            return
        width = len(str(total))
        click.echo(f"[{done:>{width}}/{total}] {outcome.entry.label}: {_outcome_text(outcome)}")

    def echo(text: str) -> None:
        click.echo(text, err=as_json)

    run = run_matrix(the_spec, jobs=jobs, force=force, progress=progress, echo=echo)
    if as_json:
        click.echo(json.dumps(run.to_dict(), indent=2))
    else:
        from forgeml.cli._output import print_table

        click.echo("")
        print_table(run.renderable())
        if run.results:
            click.echo(
                "Compare them: forgeml results compare --by framework; "
                "report: forgeml report -o report.html"
            )
    if run.count(FAILED):
        raise SystemExit(1)


def _outcome_text(outcome: Any) -> str:
    from forgeml.eval._matrix import FAILED, STORED
    from forgeml.eval._results import main_metric

    if outcome.status == FAILED:
        return f"FAILED ({outcome.seconds:.1f} s): {outcome.message.splitlines()[0]}"
    result = outcome.result
    predict = result.latency.get("predict")
    metric = main_metric(result)
    figures = [
        f"{metric[0]} {metric[1]:.4f}" if metric else None,
        f"p50 {predict.p50:.3f} ms" if predict is not None else None,
        f"{result.throughput:,.0f} samples/s",
    ]
    text = ", ".join(f for f in figures if f)
    if outcome.status == STORED:
        return f"already in the database ({result.id[:12]}): {text}"
    return f"{text} ({outcome.seconds:.1f} s)"


#: The groups of a --cfg file: group -> {key in the group: the option it sets}.
_GROUPS: dict[str, dict[str, str]] = {
    "trace": {
        "level": "trace_level",
        "mode": "trace_mode",
        "file": "trace_file",
        "endpoint": "trace_endpoint",
    },
    "scenario": {
        "name": "scenario",
        **{
            key: key
            for key in (
                "samples_per_query",
                "target_qps",
                "latency_bound_ms",
                "find_peak",
                "min_duration",
                "min_query_count",
                "max_duration",
                "seed",
            )
        },
    },
}


def _read_config(ctx: click.Context, files: tuple[str, ...]) -> None:
    """``--cfg`` (eager): merge the files in order into the context's defaults, so options
    given on the command line win over them and the files win over the options' defaults."""
    if not files:
        return
    from forgeml.config import load

    options = {
        p.name: p
        for p in ctx.command.params
        if isinstance(p, click.Option) and p.name and p.expose_value
    }
    keys = {("json" if name == "as_json" else name): name for name in options}
    values: dict[str, Any] = {}
    for file in files:
        for name, (where, value) in _file_options(file, load(file), keys).items():
            if value is None:  # null: back to the option's default
                values.pop(name, None)
            else:
                values[name] = _convert(ctx, options[name], file, where, value)
    ctx.default_map = {**(ctx.default_map or {}), **values}


def _file_options(
    file: str, data: Mapping[str, Any], keys: Mapping[str, str]
) -> dict[str, tuple[str, Any]]:
    """The options one --cfg file sets: option name -> (key as written, value)."""
    found: dict[str, tuple[str, Any]] = {}

    def put(name: str, where: str, value: Any) -> None:
        if name in found:
            raise ConfigError(
                f"{file}{_line(file, where)}: '{where}' and '{found[name][0]}' both set "
                f"--{name}. Keep one of them."
            )
        found[name] = (where, value)

    for key, value in data.items():
        if key == "__file__":
            continue
        norm = str(key).replace("-", "_")
        group = _GROUPS.get(norm)
        if group is not None and (isinstance(value, Mapping) or norm not in keys):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"{file}{_line(file, str(key))}: '{key}' must be a mapping of "
                    f"{', '.join(group)}. Got {value!r}. Example: {key}: {{{next(iter(group))}: "
                    f"...}}, or use the flat keys ({', '.join(sorted(set(group.values())))})."
                )
            for sub, sub_value in value.items():
                sub_norm = str(sub).replace("-", "_")
                where = f"{key}.{sub}"
                if sub_norm not in group:
                    raise ConfigError(
                        f"{file}{_line(file, str(sub), after=str(key))}: unknown key '{where}' "
                        f"for 'forgeml eval'. Known in '{key}': {', '.join(group)}."
                        f"{did_you_mean(sub_norm, group)}"
                    )
                put(group[sub_norm], where, sub_value)
        elif norm in keys:
            put(keys[norm], str(key), value)
        else:
            known = sorted({*keys, *_GROUPS})
            raise ConfigError(
                f"{file}{_line(file, str(key))}: unknown key '{key}' for 'forgeml eval'. "
                f"Known: {', '.join(known)}.{did_you_mean(norm, known)}"
            )
    return found


def _convert(ctx: click.Context, param: click.Option, file: str, where: str, value: Any) -> Any:
    """``value`` checked and converted as the option's own type does on the command line."""
    spelled = f"--{param.name}"
    try:
        if isinstance(value, Mapping | list | tuple):
            raise click.BadParameter(f"{value!r} is not a single value.")
        if isinstance(param.type, click.types.IntParamType) and (
            isinstance(value, bool) or (isinstance(value, float) and not value.is_integer())
        ):
            raise click.BadParameter(f"{value!r} is not a valid integer.")
        if isinstance(param.type, click.types.FloatParamType) and isinstance(value, bool):
            raise click.BadParameter(f"{value!r} is not a valid float.")
        return param.type.convert(value, param, ctx)
    except click.BadParameter as exc:
        raise ConfigError(
            f"{file}{_line(file, where.rpartition('.')[2], after=where.rpartition('.')[0])}: "
            f"invalid value for '{where}' (the {spelled} option): {exc.message} "
            f"Fix it in the file, or give {spelled} on the command line."
        ) from None


def _line(file: str, key: str, *, after: str = "") -> str:
    """``", line N"`` where ``key:`` first appears in ``file`` (after the line of ``after``,
    when given); ``""`` when it is not written there (an ``!include`` brought it)."""
    try:
        lines = Path(file).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return ""
    start = 0
    if after:
        start = next(
            (i for i, text in enumerate(lines) if re.match(rf"\s*{re.escape(after)}\s*:", text)),
            0,
        )
    pattern = re.compile(rf"(^|[\s{{,]){re.escape(key)}\s*:")
    for number in range(start, len(lines)):
        if pattern.search(lines[number]):
            return f", line {number + 1}"
    return ""
