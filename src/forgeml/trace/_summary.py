"""``forgeml trace summary``: where the time went in a Chrome trace file forgeml wrote.

Three tables: the phases (evaluation, loads, warmup, batches and their
preprocess/predict/postprocess), the layers (calls, total, mean, share of the
predict time), and the operators per layer (calls and total; on GPU traces the
kernels per layer). Operators folded into aggregates beyond the sampled batches
(``otherData.forgeml.aggregates``) are counted with the sampled ones.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forgeml._core._errors import TraceError

#: The application and model spans, in the order the phase table lists them.
PHASE_ORDER = (
    "evaluation",
    "load_dataset",
    "load_model",
    "warmup",
    "batch",
    "preprocess",
    "predict",
    "postprocess",
    "collect_layer_spans",
)


def load_trace(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The trace document in ``path`` (Chrome trace JSON: an object with ``traceEvents``,
    or a bare list of events)."""
    file = Path(path).expanduser()
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TraceError(
            f"No trace file at '{file}'. Traced evaluations write theirs under "
            f"FORGEML_HOME/traces (see 'forgeml results show ID')."
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TraceError(f"'{file}' is not a Chrome trace JSON file: {exc}.") from None
    if isinstance(data, list):
        data = {"traceEvents": data}
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise TraceError(
            f"'{file}' is JSON but not a Chrome trace (no 'traceEvents' list). Give a file "
            f"written by forgeml eval --trace_level, or any Chrome trace event file."
        )
    return data


@dataclass
class Row:
    name: str
    calls: int = 0
    total_us: float = 0.0
    share: float | None = None
    detail: str = ""

    @property
    def mean_us(self) -> float:
        return self.total_us / self.calls if self.calls else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "calls": self.calls,
            "total_ms": self.total_us / 1000,
            "mean_ms": self.mean_us / 1000,
            "share": self.share,
            **({"detail": self.detail} if self.detail else {}),
        }


@dataclass
class TraceSummary:
    """The tables of :func:`summarize`."""

    source: str
    level: str | None
    phases: list[Row] = field(default_factory=list)
    layers: list[Row] = field(default_factory=list)
    #: layer -> its operators (sampled spans and aggregates together)
    ops: dict[str, list[Row]] = field(default_factory=dict)
    #: layer -> kernels launched (GPU traces)
    kernels: dict[str, int] = field(default_factory=dict)
    counters: dict[str, dict[str, float]] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "level": self.level,
            "phases": [r.to_dict() for r in self.phases],
            "layers": [r.to_dict() for r in self.layers],
            "ops": {layer: [r.to_dict() for r in rows] for layer, rows in self.ops.items()},
            "kernels": dict(self.kernels),
            "counters": self.counters,
            **self.facts,
        }

    def renderable(self, top: int = 15) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        def table(title: str, rows: list[Row], share_of: str, extra: str = "") -> Table:
            t = Table(title=title, title_justify="left", box=None, padding=(0, 1))
            t.add_column("name")
            for column in ("calls", "total ms", "mean ms", f"% of {share_of}"):
                t.add_column(column, justify="right")
            if extra:
                t.add_column(extra, justify="right")
            for row in rows:
                cells = [
                    row.name,
                    str(row.calls),
                    f"{row.total_us / 1000:.3f}",
                    f"{row.mean_us / 1000:.4f}",
                    f"{row.share:.1%}" if row.share is not None else "-",
                ]
                if extra:
                    cells.append(row.detail)
                t.add_row(*cells)
            return t

        facts = self.facts
        header = Text.assemble(
            (self.source, "bold"),
            f" · level {self.level or '?'} · {facts.get('spans', 0)} spans",
            f", {facts['dropped']} dropped" if facts.get("dropped") else "",
        )
        parts: list[Any] = [header, Text(""), table("phases", self.phases, "evaluation")]
        if self.layers:
            extra = "kernels" if self.kernels else ""
            rows = self.layers[:top]
            for row in rows:
                row.detail = str(self.kernels.get(row.name, 0)) if extra else ""
            parts += [Text(""), table("layers", rows, "predict", extra)]
        if self.ops:
            ranked = sorted(
                ((layer, row) for layer, rows in self.ops.items() for row in rows),
                key=lambda pair: -pair[1].total_us,
            )[:top]
            flat = [
                Row(f"{layer} / {row.name}", row.calls, row.total_us, row.share)
                for layer, row in ranked
            ]
            parts += [Text(""), table("operators per layer", flat, "layer")]
        if self.counters:
            ct = Table(title="counters", title_justify="left", box=None, padding=(0, 1))
            for column in ("series", "min", "mean", "max"):
                ct.add_column(column, justify="left" if column == "series" else "right")
            for name, values in self.counters.items():
                ct.add_row(
                    name, f"{values['min']:.1f}", f"{values['mean']:.1f}", f"{values['max']:.1f}"
                )
            parts += [Text(""), ct]
        for note in facts.get("notes", []):
            parts.append(Text(f"note: {note}", style="yellow"))
        return Group(*parts)


def summarize(trace: str | os.PathLike[str] | dict[str, Any]) -> TraceSummary:
    """The phase, layer and operator tables of a trace file (or a loaded trace document)."""
    source = "(trace)" if isinstance(trace, dict) else str(trace)
    document = trace if isinstance(trace, dict) else load_trace(trace)
    events = [e for e in document["traceEvents"] if isinstance(e, dict)]
    other = (document.get("otherData") or {}).get("forgeml") or {}
    spans = [e for e in events if e.get("ph") == "X"]
    by_id: dict[Any, dict[str, Any]] = {}
    for event in spans:
        sid = (event.get("args") or {}).get("id")
        if sid is not None:
            by_id[sid] = event

    def category(event: dict[str, Any]) -> str:
        return str(event.get("cat") or "")

    def layer_of(event: dict[str, Any]) -> str | None:
        seen = 0
        parent = (event.get("args") or {}).get("parent")
        while parent and seen < 1000:
            owner = by_id.get(parent)
            if owner is None:
                return None
            if category(owner) == "framework":
                return str(owner["name"])
            parent = (owner.get("args") or {}).get("parent")
            seen += 1
        return None

    totals: dict[tuple[str, str], Row] = {}
    for event in spans:
        cat = category(event)
        name = str(event.get("name"))
        key = (cat, name)
        row = totals.get(key)
        if row is None:
            row = totals[key] = Row(name)
        row.calls += 1
        row.total_us += float(event.get("dur") or 0.0)

    evaluation = totals.get(("application", "evaluation"))
    predict = totals.get(("model", "predict"))
    phases = [
        totals[(cat, name)]
        for name in PHASE_ORDER
        for cat in ("application", "model")
        if (cat, name) in totals
    ]
    phases += [
        row
        for (cat, name), row in totals.items()
        if cat in ("application", "model") and name not in PHASE_ORDER
    ]
    for row in phases:
        row.share = (
            row.total_us / evaluation.total_us if evaluation and evaluation.total_us else None
        )
    layers = sorted(
        (row for (cat, _), row in totals.items() if cat == "framework"),
        key=lambda r: -r.total_us,
    )
    for row in layers:
        row.share = row.total_us / predict.total_us if predict and predict.total_us else None

    ops: dict[str, dict[str, Row]] = {}
    kernels: dict[str, int] = {}
    for event in spans:
        if category(event) != "library":
            continue
        args = event.get("args") or {}
        if args.get("kind") == "kernel":
            layer = layer_of(event)
            if layer is not None:
                kernels[layer] = kernels.get(layer, 0) + 1
            continue
        owner = by_id.get(args.get("parent"))
        if owner is None or category(owner) != "framework":
            continue  # nested operators are counted in their top-level one
        layer = str(owner["name"])
        row = ops.setdefault(layer, {}).setdefault(str(event["name"]), Row(str(event["name"])))
        row.calls += 1
        row.total_us += float(event.get("dur") or 0.0)
    for entry in other.get("aggregates") or []:
        layer, name = str(entry.get("layer")), str(entry.get("name"))
        if entry.get("kind") == "kernel":
            kernels[layer] = kernels.get(layer, 0) + int(entry.get("count", 0))
            continue
        row = ops.setdefault(layer, {}).setdefault(name, Row(name))
        row.calls += int(entry.get("count", 0))
        row.total_us += float(entry.get("total_us", 0.0))
    layer_totals = {row.name: row.total_us for row in layers}
    op_rows: dict[str, list[Row]] = {}
    for layer, rows in ops.items():
        ranked = sorted(rows.values(), key=lambda r: -r.total_us)
        for row in ranked:
            total = layer_totals.get(layer)
            row.share = row.total_us / total if total else None
        op_rows[layer] = ranked

    counters: dict[str, dict[str, float]] = {}
    series: dict[str, list[float]] = {}
    for event in events:
        if event.get("ph") != "C":
            continue
        for key, value in (event.get("args") or {}).items():
            if isinstance(value, int | float):
                series.setdefault(f"{event.get('name')}.{key}", []).append(float(value))
    for name, values in series.items():
        counters[name] = {
            "min": min(values),
            "mean": sum(values) / len(values),
            "max": max(values),
            "samples": float(len(values)),
        }
    facts = {
        "spans": len(spans),
        "dropped": int(other.get("dropped", 0) or 0),
        "aggregated_batches": int(other.get("aggregated_batches", 0) or 0),
        "notes": list(other.get("notes") or []),
        "meta": dict(other.get("meta") or {}),
    }
    return TraceSummary(
        source=source,
        level=other.get("level"),
        phases=phases,
        layers=layers,
        ops=op_rows,
        kernels=kernels,
        counters=counters,
        facts=facts,
    )
