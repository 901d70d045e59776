"""Evaluation matrices: models x agents x batch sizes x datasets, from one YAML spec.

A spec names what to evaluate; :func:`run_matrix` expands it into entries, skips
the entries the results database already holds, and evaluates the others, one
after another in this process (the default) or each in a worker process of its
own (``jobs=N``: ``python -m forgeml eval ... --json``, N at a time)::

    models: [digits_cnn, "digits_*"]   # names or glob patterns over the manifests
    agents: [pytorch, onnxruntime]     # default: every framework each model exists for
    batch_sizes: [1, 64]
    datasets: [digits]                 # default: each model's own held-out data
    num_warmup: 1
    num_batches: null                  # null: every batch of the dataset
    threads: null                      # the framework's own default
    architecture: cpu

A model with no manifest for a named agent, and an agent whose packages are not
installed, are skipped with a note, not an error.

Resuming: each result the matrix stores records its request under
``provenance["matrix"]``; its key is model (and its manifest's version), framework,
agent, task, dataset, batch size, device, ``num_batches``, ``num_warmup`` and
``threads``. An entry is
skipped when a result with the same key, recorded on this host, is in the
database (``force=True`` runs it again). Results of plain ``forgeml eval`` runs
do not record what was asked (``num_batches`` in particular), so they never count.
"""

from __future__ import annotations

import fnmatch
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgeml._core._errors import EvalError, ForgeMLError, did_you_mean
from forgeml.eval._manifest import Manifest, canonical_framework, find_manifests, load_manifest
from forgeml.eval._runner import EvalResult

#: The keys a matrix spec may have.
SPEC_KEYS = (
    "models",
    "agents",
    "batch_sizes",
    "datasets",
    "num_warmup",
    "num_batches",
    "threads",
    "architecture",
)
#: What ``provenance["matrix"]`` of a stored result holds (see :meth:`MatrixEntry.record`).
RECORD = "matrix"
#: Lines of a failed worker's stderr kept in the failure message.
_STDERR_LINES = 15


# ----------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class MatrixSpec:
    """What to evaluate: models x agents x batch sizes x datasets, and how.

    ``agents=None``: every framework each model has a manifest for (the agent
    named after it). ``datasets=None``: each model's own held-out dataset.
    """

    models: tuple[str, ...]
    agents: tuple[str, ...] | None = None
    batch_sizes: tuple[int, ...] = (64,)
    datasets: tuple[str, ...] | None = None
    num_warmup: int = 1
    num_batches: int | None = None
    threads: int | None = None
    architecture: str = "cpu"
    #: The spec file, when it came from one (relative model and dataset paths start there).
    source: Path | None = None

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, source: str | os.PathLike[str] | None = None
    ) -> MatrixSpec:
        """A spec from a mapping (a parsed YAML file), checked: every problem is an
        :class:`~forgeml.EvalError` that names the file and the key."""
        path = Path(source) if source is not None else None
        where = f"Matrix spec '{path}'" if path is not None else "The matrix spec"
        if not isinstance(data, Mapping):
            raise EvalError(f"{where} must be a mapping of {', '.join(SPEC_KEYS)}.")
        unknown = [str(k) for k in data if k not in SPEC_KEYS and k != "__file__"]
        if unknown:
            raise EvalError(
                f"{where} has an unknown key '{unknown[0]}'. Known: {', '.join(SPEC_KEYS)}."
                + did_you_mean(unknown[0], SPEC_KEYS)
            )
        if not data.get("models"):
            raise EvalError(
                f"{where} names no models. Add 'models: [NAME, ...]' (names or patterns "
                f"such as 'digits_*'; see 'forgeml models ls')."
            )
        batch_sizes = _ints(where, "batch_sizes", data.get("batch_sizes", [64]))
        if not batch_sizes:
            raise EvalError(f"{where}: 'batch_sizes' is empty. Give at least one, e.g. [1, 64].")
        agents = data.get("agents")
        datasets = data.get("datasets")
        return cls(
            models=_strings(where, "models", data["models"]),
            agents=_strings(where, "agents", agents) if agents else None,
            batch_sizes=batch_sizes,
            datasets=_strings(where, "datasets", datasets) if datasets else None,
            num_warmup=_int(where, "num_warmup", data.get("num_warmup", 1), least=0),
            num_batches=_int(where, "num_batches", data.get("num_batches"), optional=True),
            threads=_int(where, "threads", data.get("threads"), optional=True),
            architecture=str(data.get("architecture") or "cpu"),
            source=path,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "agents": list(self.agents) if self.agents is not None else None,
            "batch_sizes": list(self.batch_sizes),
            "datasets": list(self.datasets) if self.datasets is not None else None,
            "num_warmup": self.num_warmup,
            "num_batches": self.num_batches,
            "threads": self.threads,
            "architecture": self.architecture,
        }

    def expand(self) -> tuple[list[MatrixEntry], list[str]]:
        """The entries to evaluate, in spec order, and notes on the combinations skipped
        (a model without a manifest for an agent, an agent that cannot run here)."""
        from forgeml.eval._runner import default_dataset, parse_architecture

        device = parse_architecture(self.architecture)
        manifests = self._manifests()
        notes: list[str] = []
        agents = _Agents()
        entries: list[MatrixEntry] = []
        for name, versions, ref in manifests:
            pairs: list[tuple[str, Manifest]] = []
            if self.agents is None:
                for manifest in versions:
                    agent = agents.named_after(manifest.framework)
                    if agent is None:
                        notes.append(
                            f"{name} ({manifest.framework}): skipped, no agent is named after "
                            f"the {manifest.framework} framework (name one under 'agents')."
                        )
                        continue
                    pairs.append((agent, manifest))
            else:
                for wanted in self.agents:
                    agent, framework = agents.resolve(wanted)
                    chosen = [m for m in versions if m.framework == framework]
                    if not chosen:
                        have = ", ".join(sorted(m.framework for m in versions))
                        notes.append(
                            f"{name} x {agent}: skipped, the model has no {framework} "
                            f"manifest (it exists for {have})."
                        )
                        continue
                    pairs.append((agent, chosen[0]))
            for agent, manifest in pairs:
                reason = agents.unavailable(agent)
                if reason is not None:
                    notes.append(f"{name} x {agent}: skipped, the agent cannot run here: {reason}")
                    continue
                datasets: Sequence[str | None] = self.datasets or (None,)
                for dataset in datasets:
                    if dataset is None:
                        try:
                            dataset_name = default_dataset(manifest)
                        except EvalError as exc:
                            notes.append(f"{name} x {agent}: skipped, {exc}")
                            continue
                    else:
                        dataset_name = dataset
                    for batch_size in self.batch_sizes:
                        entries.append(
                            MatrixEntry(
                                model=manifest.name,
                                model_version=manifest.version,
                                framework=manifest.framework,
                                agent=agent,
                                task=manifest.task,
                                dataset=dataset_name,
                                batch_size=batch_size,
                                device=device,
                                num_warmup=self.num_warmup,
                                num_batches=self.num_batches,
                                threads=self.threads,
                                model_ref=ref if ref is not None else manifest.name,
                                dataset_path=self._dataset_path(dataset),
                                manifest=manifest,
                            )
                        )
        return entries, notes

    def _manifests(self) -> list[tuple[str, list[Manifest], str | None]]:
        """(model name, its manifests, the .yml path to pass on or None) per spec model."""
        every: list[Manifest] | None = None
        chosen: dict[str, tuple[str, list[Manifest], str | None]] = {}
        for pattern in self.models:
            if pattern.endswith((".yml", ".yaml")):
                path = self._relative(pattern)
                manifest = load_manifest(path)
                chosen.setdefault(str(path), (manifest.name, [manifest], str(path)))
                continue
            if every is None:
                every = find_manifests()
            names = sorted({m.name for m in every})
            matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
            if not matched:
                where = f" in matrix spec '{self.source}'" if self.source else ""
                raise EvalError(
                    f"No model matches '{pattern}'{where}. Known: {', '.join(names)}."
                    + did_you_mean(pattern, names)
                )
            for name in matched:
                chosen.setdefault(name, (name, [m for m in every if m.name == name], None))
        return list(chosen.values())

    def _relative(self, text: str) -> Path:
        path = Path(text).expanduser()
        if not path.is_absolute() and self.source is not None:
            path = self.source.parent / path
        return path

    def _dataset_path(self, dataset: str | None) -> str | None:
        """The dataset as a path on disk when it names one (relative to the spec), else None."""
        if dataset is None:
            return None
        path = self._relative(dataset)
        return str(path) if path.exists() else None


def _strings(where: str, key: str, value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) and i for i in items):
        raise EvalError(f"{where}: '{key}' must be a list of names. Got {value!r}.")
    return tuple(dict.fromkeys(items))


def _int(where: str, key: str, value: Any, *, least: int = 1, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        kind = "a non-negative integer" if least == 0 else "a positive integer"
        none = " (or null)" if optional else ""
        raise EvalError(f"{where}: '{key}' must be {kind}{none}. Got {value!r}.")
    return value


def _ints(where: str, key: str, value: Any) -> tuple[int, ...]:
    items = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(items, list | tuple):
        raise EvalError(f"{where}: '{key}' must be a list of positive integers. Got {value!r}.")
    return tuple(dict.fromkeys(_int(where, key, i) for i in items))


def load_matrix(path: str | os.PathLike[str]) -> MatrixSpec:
    """Read a matrix spec from a YAML file (``!include`` and ``import:`` work as in configs)."""
    from forgeml.config import load

    return MatrixSpec.from_dict(load(path), source=path)


class _Agents:
    """Agent names, frameworks and availability, looked up once per name."""

    def __init__(self) -> None:
        from forgeml.eval._registries import AGENTS

        self.registry = AGENTS
        self._unavailable: dict[str, str | None] = {}

    def named_after(self, framework: str) -> str | None:
        return framework if framework in self.registry else None

    def resolve(self, name: str) -> tuple[str, str]:
        """(canonical agent name, the manifest framework it runs)."""
        from forgeml._core._errors import RegistryError

        try:
            canonical = self.registry.canonical(name)
        except RegistryError as exc:
            raise EvalError(str(exc)) from None
        try:
            framework = str(self.registry.load(canonical).framework)
        except RegistryError:
            framework = canonical  # its module cannot be imported: unavailable() says why
        return canonical, canonical_framework(framework)

    def unavailable(self, name: str) -> str | None:
        from forgeml._core._errors import RegistryError

        if name not in self._unavailable:
            try:
                reason = self.registry.load(name).unavailable()
            except RegistryError as exc:
                reason = str(exc)
            self._unavailable[name] = reason
        return self._unavailable[name]


# ----------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class MatrixEntry:
    """One evaluation of a matrix: a model on an agent, a dataset and a batch size."""

    model: str
    framework: str
    agent: str
    task: str
    dataset: str
    batch_size: int
    device: str = "cpu"
    num_warmup: int = 1
    num_batches: int | None = None
    threads: int | None = None
    #: What is passed to evaluate: the model's name, or its manifest's path.
    model_ref: str = ""
    #: The manifest's version of the model.
    model_version: str = "1"
    #: The dataset's path when it is one on disk (else the dataset is a bundled name).
    dataset_path: str | None = None
    #: The model's manifest, when the entry came from a spec.
    manifest: Manifest | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        """What identifies the entry in the results database (see the module's docs)."""
        return "|".join(
            [
                self.model,
                f"v{self.model_version}",
                self.framework,
                self.agent,
                self.task,
                self.dataset,
                f"b{self.batch_size}",
                self.device,
                f"n{self.num_batches if self.num_batches is not None else 'all'}",
                f"w{self.num_warmup}",
                f"t{self.threads if self.threads is not None else 'default'}",
            ]
        )

    @property
    def label(self) -> str:
        return f"{self.model} · {self.agent} · {Path(self.dataset).name} · b{self.batch_size}"

    def record(self, spec: MatrixSpec | None = None) -> dict[str, Any]:
        """What a stored result keeps under ``provenance["matrix"]``."""
        return {
            "key": self.key,
            "spec": str(spec.source) if spec is not None and spec.source is not None else None,
            "dataset": self.dataset,
            "num_batches": self.num_batches,
            "num_warmup": self.num_warmup,
            "threads": self.threads,
        }

    def evaluate_kwargs(self) -> dict[str, Any]:
        """The arguments of :func:`forgeml.eval.evaluate` for this entry (nothing stored)."""
        return {
            "agent": self.agent,
            "dataset": Path(self.dataset_path) if self.dataset_path else self.dataset,
            "batch_size": self.batch_size,
            "num_warmup": self.num_warmup,
            "num_batches": self.num_batches,
            "architecture": self.device,
            "threads": self.threads,
            "store": False,
            "progress": False,
        }

    def command(self) -> list[str]:
        """The worker's command line: ``python -m forgeml eval ... --no-store --json``."""
        args = [
            sys.executable, "-m", "forgeml", "eval",
            "--model-name", self.model_ref or self.model,
            "--agent", self.agent,
            "--batch-size", str(self.batch_size),
            "--num-warmup", str(self.num_warmup),
            "--architecture", self.device,
        ]  # fmt: skip
        if self.dataset_path:
            args += ["--dataset-path", self.dataset_path]
        else:
            args += ["--dataset-name", self.dataset]
        if self.num_batches is not None:
            args += ["--num-batches", str(self.num_batches)]
        if self.threads is not None:
            args += ["--threads", str(self.threads)]
        return [*args, "--no-store", "--no-progress", "--json"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "model": self.model,
            "model_version": self.model_version,
            "framework": self.framework,
            "agent": self.agent,
            "task": self.task,
            "dataset": self.dataset,
            "batch_size": self.batch_size,
            "device": self.device,
            "num_warmup": self.num_warmup,
            "num_batches": self.num_batches,
            "threads": self.threads,
        }


#: ``status`` of an outcome: evaluated now, found in the database, or failed.
RAN, STORED, FAILED = "ran", "stored", "failed"


@dataclass
class MatrixOutcome:
    """What became of one entry: ``ran`` (evaluated and stored now), ``stored`` (already
    in the database: not run) or ``failed`` (``message`` says why)."""

    entry: MatrixEntry
    status: str
    result: EvalResult | None = None
    message: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        result = self.result
        return {
            **self.entry.to_dict(),
            "status": self.status,
            "message": self.message,
            "seconds": round(self.seconds, 3),
            "id": result.id if result is not None else None,
            "result": result.to_dict() if result is not None else None,
        }


@dataclass
class MatrixRun:
    """The outcome of :func:`run_matrix`: one :class:`MatrixOutcome` per entry, in spec
    order, and the notes on combinations skipped."""

    spec: MatrixSpec
    outcomes: list[MatrixOutcome]
    notes: list[str] = field(default_factory=list)
    jobs: int | None = None
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[MatrixOutcome]:
        return [o for o in self.outcomes if o.status == FAILED]

    @property
    def results(self) -> list[EvalResult]:
        """The results of every entry that has one (run now or found stored), in spec order."""
        return [o.result for o in self.outcomes if o.result is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec.to_dict(),
            "source": str(self.spec.source) if self.spec.source is not None else None,
            "jobs": self.jobs,
            "seconds": round(self.seconds, 3),
            "counts": {s: self.count(s) for s in (RAN, STORED, FAILED)},
            "notes": list(self.notes),
            "entries": [o.to_dict() for o in self.outcomes],
        }

    def summary_line(self) -> str:
        parts = [f"{len(self.outcomes)} entries: {self.count(RAN)} ran"]
        stored = self.count(STORED)
        parts.append(
            f"{stored} already in the database" + (" (--force runs them again)" if stored else "")
        )
        parts.append(f"{self.count(FAILED)} failed")
        skipped = f"; {len(self.notes)} combination(s) skipped" if self.notes else ""
        return ", ".join(parts) + skipped + f" ({self.seconds:.1f} s)."

    def renderable(self) -> Any:
        """A rich table: one row per entry with its headline figures, then the notes."""
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        from forgeml.eval._results import main_metric

        table = Table(
            "MODEL", "AGENT", "DATASET", "BATCH", "STATUS", "P50 MS", "P99 MS", "SAMPLES/S",
            "METRIC", "ID", box=None,
        )  # fmt: skip
        for o in self.outcomes:
            r = o.result
            predict = r.latency.get("predict") if r is not None else None
            metric = main_metric(r) if r is not None else None
            status = {
                RAN: f"ran {o.seconds:.1f}s",
                STORED: "in database",
                FAILED: "FAILED",
            }[o.status]
            table.add_row(
                o.entry.model,
                o.entry.agent,
                Path(o.entry.dataset).name,
                str(o.entry.batch_size),
                Text(status, style="red" if o.status == FAILED else ""),
                f"{predict.p50:.3f}" if predict is not None else "-",
                f"{predict.p99:.3f}" if predict is not None else "-",
                f"{r.throughput:,.1f}" if r is not None else "-",
                f"{metric[0]}={metric[1]:.4f}" if metric is not None else "-",
                r.id[:12] if r is not None else "-",
            )
        parts: list[Any] = [table, Text(""), Text(self.summary_line())]
        for note in self.notes:
            parts.append(Text(f"note: {note}"))
        for o in self.failed:
            parts.append(Text(f"failed: {o.entry.label}: {o.message}", style="red"))
        return Group(*parts)


# ----------------------------------------------------------------------------- running

#: ``progress(done, total, outcome)`` after each entry.
MatrixProgress = Callable[[int, int, MatrixOutcome], None]


def stored_results(
    entries: Iterable[MatrixEntry], db: Any, *, host: str | None = None
) -> dict[str, EvalResult]:
    """key -> the newest stored result, recorded on ``host`` (default: this one), of each
    entry that the database already holds."""
    host = socket.gethostname() if host is None else host
    wanted = {e.key for e in entries}
    found: dict[str, EvalResult] = {}
    for model in sorted({k.split("|", 1)[0] for k in wanted}):
        for result in db.select(model=model):  # oldest first: newer ones replace older
            record = result.provenance.get(RECORD)
            if not isinstance(record, Mapping) or result.provenance.get("host") != host:
                continue
            key = record.get("key")
            if key in wanted:
                found[str(key)] = result
    return found


def run_matrix(
    spec: MatrixSpec | str | os.PathLike[str],
    *,
    jobs: int | None = None,
    force: bool = False,
    db: Any = None,
    track: bool | str = True,
    progress: MatrixProgress | None = None,
    echo: Callable[[str], None] | None = None,
) -> MatrixRun:
    """Evaluate every entry of ``spec`` (a :class:`MatrixSpec` or a YAML file) that the
    results database does not hold yet, store each result, and return what became of each.

    Args:
        spec: the matrix, or the path of its YAML file (see :func:`load_matrix`).
        jobs: ``None`` (default): one entry after another, in this process. ``N``: each
            entry in a worker process of its own (``python -m forgeml eval ... --json``),
            N at a time. More than one at a time on shared cores distorts the latencies.
        force: run entries even when the database holds them.
        db: the :class:`~forgeml.eval.ResultsDB` (default: ``$FORGEML_HOME/results.db``).
        track: as for :func:`~forgeml.eval.evaluate` (MLflow, when configured).
        progress: called as ``progress(done, total, outcome)`` after each entry.
        echo: called with a line of text about the weights prepared (zoo models trained).

    Before any entry runs, the weights of the entries to run are resolved once each, in
    this process (:func:`prepare_weights`): zoo models are trained, downloads fetched and
    checksums checked outside the timed runs, and workers never race to build the same
    model. A failing entry does not stop the others: its outcome is ``failed`` with the
    error.
    """
    from forgeml.eval._results import ResultsDB

    if not isinstance(spec, MatrixSpec):
        spec = load_matrix(spec)
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise EvalError(
            f"The 'jobs' option of eval matrix must be a positive integer. Got {jobs!r}."
        )
    database = db if db is not None else ResultsDB()
    start = time.perf_counter()
    entries, notes = spec.expand()
    found = {} if force else stored_results(entries, database)
    outcomes: dict[int, MatrixOutcome] = {}
    total = len(entries)

    def finish(index: int, outcome: MatrixOutcome) -> None:
        if outcome.status == RAN and outcome.result is not None:
            outcome.result.provenance[RECORD] = outcome.entry.record(spec)
            database.add(outcome.result)
        outcomes[index] = outcome
        if progress is not None:
            progress(len(outcomes), total, outcome)

    todo: list[tuple[int, MatrixEntry]] = []
    for index, entry in enumerate(entries):
        if entry.key in found:
            finish(index, MatrixOutcome(entry, STORED, found[entry.key]))
        else:
            todo.append((index, entry))
    unusable = prepare_weights([e for _, e in todo], echo=echo)
    for index, entry in list(todo):
        if entry.manifest is not None and entry.manifest.key in unusable:
            message = f"its weights cannot be had: {unusable[entry.manifest.key]}"
            finish(index, MatrixOutcome(entry, FAILED, message=message))
            todo.remove((index, entry))
    if jobs is None:
        for index, entry in todo:
            finish(index, _run_here(entry, track))
    else:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures: dict[Future[MatrixOutcome], int] = {
                pool.submit(_run_worker, entry): index for index, entry in todo
            }
            for future in as_completed(futures):
                finish(futures[future], future.result())
    return MatrixRun(
        spec=spec,
        outcomes=[outcomes[i] for i in range(total)],
        notes=notes,
        jobs=jobs,
        seconds=time.perf_counter() - start,
    )


def prepare_weights(
    entries: Iterable[MatrixEntry], *, echo: Callable[[str], None] | None = None
) -> dict[tuple[str, str], str]:
    """Resolve the weights of each entry's manifest once (training zoo models not built yet);
    returns manifest key -> why its weights cannot be had, for those that failed."""
    from forgeml.eval._weights import resolve_weights, zoo_build

    say = echo or (lambda text: None)
    failed: dict[tuple[str, str], str] = {}
    done: set[tuple[str, str]] = set()
    for entry in entries:
        manifest = entry.manifest
        if manifest is None or manifest.key in done:
            continue
        done.add(manifest.key)
        zoo = manifest.weights.zoo if manifest.weights.source == "zoo" else None
        try:
            building = zoo is not None and zoo_build(zoo) is None
        except EvalError:
            building = False  # an unknown zoo name: resolve_weights says so below
        start = time.perf_counter()
        if building:
            say(f"zoo: training {zoo} (for {manifest.name}, {manifest.framework}) ...")
        try:
            resolve_weights(manifest)
        except ForgeMLError as exc:
            failed[manifest.key] = str(exc)
        except Exception as exc:  # a framework's own error while training
            failed[manifest.key] = f"{type(exc).__name__}: {exc}"
        else:
            if building and zoo is not None:
                build = zoo_build(zoo)
                scores = ", ".join(
                    f"{k} {v:g}" for k, v in (build.metrics if build else {}).items()
                )
                say(f"zoo: {zoo} built in {time.perf_counter() - start:.1f} s (test {scores})")
        if manifest.key in failed:
            say(f"weights: {failed[manifest.key]} (its entries fail)")
    return failed


def _run_here(entry: MatrixEntry, track: bool | str) -> MatrixOutcome:
    from forgeml.eval._runner import evaluate

    start = time.perf_counter()
    try:
        model = entry.manifest or entry.model_ref or entry.model
        result = evaluate(model, track=track, **entry.evaluate_kwargs())
    except ForgeMLError as exc:
        return MatrixOutcome(entry, FAILED, message=str(exc), seconds=time.perf_counter() - start)
    except Exception as exc:  # a framework's own error: the other entries still run
        return MatrixOutcome(
            entry,
            FAILED,
            message=f"{type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - start,
        )
    return MatrixOutcome(entry, RAN, result, seconds=time.perf_counter() - start)


def _run_worker(entry: MatrixEntry) -> MatrixOutcome:
    """Evaluate ``entry`` in a process of its own; its JSON result comes back on stdout."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            entry.command(),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            text=True,
            check=False,
        )
    except OSError as exc:
        return MatrixOutcome(
            entry,
            FAILED,
            message=f"cannot start a worker: {exc}",
            seconds=time.perf_counter() - start,
        )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("Error: ")]
        message = errors[-1].removeprefix("Error: ") if errors else "\n".join(
            lines[-_STDERR_LINES:]
        )  # fmt: skip
        return MatrixOutcome(
            entry,
            FAILED,
            message=f"the worker exited with {done.returncode}: {message or '(no output)'}",
            seconds=seconds,
        )
    try:
        result = EvalResult.from_dict(_json_object(done.stdout))
    except (ValueError, KeyError, TypeError) as exc:
        return MatrixOutcome(
            entry,
            FAILED,
            message=f"the worker's output is not an evaluation result ({exc}): "
            f"{done.stdout[-300:]!r}",
            seconds=seconds,
        )
    return MatrixOutcome(entry, RAN, result, seconds=seconds)


def _json_object(text: str) -> dict[str, Any]:
    """The JSON object ``forgeml eval --json`` printed, even when a library printed first."""
    try:
        data = json.loads(text)
    except ValueError:
        lines = text.splitlines()
        first = next((i for i, line in enumerate(lines) if line == "{"), None)
        if first is None:
            raise
        data = json.loads("\n".join(lines[first:]))
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data
