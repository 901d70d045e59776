"""An HTML report of stored evaluations: plots and comparison tables in one self-contained file.

:func:`render_report` turns :class:`~forgeml.eval.EvalResult` objects into one
HTML page that needs nothing else: the CSS is inline, the plots are inline SVG
drawn with matplotlib (no pyplot, no global backend change; text as paths, so
they look the same in every browser), and there is no JavaScript and no link to
fetch. The page holds:

- **accuracy vs latency**: the main metric (top1, R², ...) against the p50
  latency per batch, one panel per batch size, one point per model and agent;
- **throughput vs batch size**: samples per second, one line per model and agent;
- **latency distributions**: per model and agent and batch size, a box drawn from
  the percentiles each evaluation stored (the results database keeps statistics,
  not the individual timings): p25 to p75 with the median, markers at p90, p95
  and p99, a whisker from min to max;
- the comparison tables of :func:`forgeml.eval.compare` (across frameworks, across
  batch sizes), every evaluation with its figures, warnings, and provenance
  (machines, library versions, git commits).

Every mark of a plot is an SVG group whose id contains ``-marks-`` (tests look for them).
"""

from __future__ import annotations

import html
import io
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from forgeml._core._errors import EvalError
from forgeml._version import __version__
from forgeml.eval._results import compare, main_metric
from forgeml.eval._runner import PHASES, EvalResult

#: Colours for models (matplotlib's tab10) and markers for agents, in order of appearance.
COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h", "<", ">")
#: Width of the plots, in inches (the page scales them down to fit).
PLOT_WIDTH = 9.0
_METRIC_LABELS = {
    "top1": "top-1 accuracy",
    "accuracy": "accuracy",
    "r2": "R²",
    "f1": "F1",
    "mae": "mean absolute error",
    "rmse": "root mean squared error",
}


# ----------------------------------------------------------------------------- series


@dataclass(frozen=True)
class _Series:
    """Results of one model on one agent (and dataset and device): a point, line or row."""

    model: str
    agent: str
    dataset: str
    device: str
    label: str
    color: str
    marker: str


class _Styles:
    """One colour per model and one marker per agent, the same in every plot."""

    def __init__(self, results: Sequence[EvalResult]) -> None:
        models = list(dict.fromkeys(r.model for r in results))
        agents = list(dict.fromkeys(r.agent for r in results))
        self.color = {m: COLORS[i % len(COLORS)] for i, m in enumerate(models)}
        self.marker = {a: MARKERS[i % len(MARKERS)] for i, a in enumerate(agents)}
        self.many_datasets = len({r.dataset for r in results}) > 1
        self.many_devices = len({r.device for r in results}) > 1
        self._series: dict[tuple[str, str, str, str], _Series] = {}
        for r in results:
            self.series(r)

    def series(self, result: EvalResult) -> _Series:
        key = (result.model, result.agent, result.dataset, result.device)
        if key not in self._series:
            parts = [result.model, result.agent]
            if self.many_datasets:
                parts.append(Path(result.dataset).name)
            if self.many_devices:
                parts.append(result.device)
            self._series[key] = _Series(
                *key,
                label=" · ".join(parts),
                color=self.color[result.model],
                marker=self.marker[result.agent],
            )
        return self._series[key]

    def all(self) -> list[_Series]:
        return list(self._series.values())


def _latency(result: EvalResult, phase: str) -> Any:
    stats = result.latency.get(phase)
    return stats if stats is not None and stats.count > 0 and stats.p50 > 0 else None


# ----------------------------------------------------------------------------- plots


@dataclass
class _Plot:
    name: str
    title: str
    svg: str
    caption: str


def _matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise EvalError(
            "The report draws its plots with matplotlib, which is not installed. "
            "HINT: pip install 'forgeml[eval]'"
        ) from None
    return matplotlib, Figure


_CLIP_ID = re.compile(r"(?<=[\"#])p[0-9a-f]{10}(?=[\")])")


def _svg(fig: Any, name: str) -> str:
    """The figure as inline SVG: no XML header, ids prefixed with ``name`` (unique in the page)."""
    matplotlib, _ = _matplotlib()
    buffer = io.StringIO()
    settings = {"svg.fonttype": "path", "svg.hashsalt": f"forgeml-report-{name}"}
    with matplotlib.rc_context(settings):
        fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    # Matplotlib's clip-path ids hash an object's memory address: number them in
    # order of appearance instead, so the same results give the same page.
    clip_ids: dict[str, str] = {}
    text = _CLIP_ID.sub(lambda m: clip_ids.setdefault(m.group(0), f"clip{len(clip_ids)}"), text)
    text = re.sub(r'\bid="([^"]+)"', lambda m: f'id="{name}-{m.group(1)}"', text)
    text = re.sub(r'href="#([^"]+)"', lambda m: f'href="#{name}-{m.group(1)}"', text)
    text = re.sub(r"url\(#([^)]+)\)", lambda m: f"url(#{name}-{m.group(1)})", text)
    return text.replace("<svg ", f'<svg class="plot-svg" role="img" aria-label="{name}" ', 1)


def _figure(width: float, height: float) -> Any:
    _, figure_class = _matplotlib()
    fig = figure_class(figsize=(width, height), dpi=96, layout="constrained")
    return fig


def _grid(fig: Any, count: int, columns: int) -> list[Any]:
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    axes = fig.subplots(rows, columns, squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[count:]:
        ax.set_visible(False)
    return flat[:count]


def _legend(fig: Any, series: Iterable[_Series], extra: Sequence[Any] = ()) -> None:
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=s.color, marker=s.marker, linestyle="", markersize=7, label=s.label)
        for s in series
    ]
    handles += list(extra)
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=min(4, len(handles)),
            frameon=False,
            fontsize=8,
        )


def _batch_ticks(ax: Any, sizes: Sequence[int]) -> None:
    from matplotlib.ticker import FixedLocator, NullLocator

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(sizes))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([str(s) for s in sorted(set(sizes))])


def accuracy_plot(
    results: Sequence[EvalResult], styles: _Styles, phase: str = "predict"
) -> list[_Plot]:
    """Main metric vs p50 latency: one figure per metric, one panel per batch size."""
    by_metric: dict[str, list[tuple[EvalResult, float]]] = {}
    for r in results:
        metric = main_metric(r)
        if metric is not None and _latency(r, phase) is not None and math.isfinite(metric[1]):
            by_metric.setdefault(metric[0], []).append((r, metric[1]))
    plots = []
    for number, (metric_name, points) in enumerate(by_metric.items()):
        sizes = sorted({r.batch_size for r, _ in points})
        columns = min(len(sizes), 3)
        rows = math.ceil(len(sizes) / columns)
        fig = _figure(PLOT_WIDTH, 3.2 * rows + 0.9)
        name = f"accuracy-latency-{number}"
        axes = _grid(fig, len(sizes), columns)
        shown: dict[str, _Series] = {}
        for index, (ax, size) in enumerate(zip(axes, sizes, strict=True)):
            here = [(r, v) for r, v in points if r.batch_size == size]
            for k, (r, value) in enumerate(here):
                s = styles.series(r)
                shown[s.label] = s
                ax.scatter(
                    [_latency(r, phase).p50],
                    [value],
                    color=s.color,
                    marker=s.marker,
                    s=60,
                    edgecolors="white",
                    linewidths=0.6,
                    zorder=3,
                    gid=f"marks-b{size}-{index}-{k}",
                )
            ax.set_xscale("log")
            ax.set_title(f"batch size {size}", fontsize=10)
            ax.set_xlabel(f"p50 {phase} latency per batch (ms, log scale)", fontsize=8)
            ax.set_ylabel(_METRIC_LABELS.get(metric_name, metric_name), fontsize=8)
            ax.grid(True, which="both", alpha=0.25)
            ax.tick_params(labelsize=8)
            ax.margins(x=0.25, y=0.25)
        _legend(fig, shown.values())
        what = _METRIC_LABELS.get(metric_name, metric_name)
        plots.append(
            _Plot(
                name=name,
                title=f"{what[0].upper()}{what[1:]} vs latency",
                svg=_svg(fig, name),
                caption=(
                    f"Each point is one evaluation: {what} on its dataset against the median "
                    f"(p50) {phase} latency of one batch. Up and to the left is better. Colour: "
                    f"model; marker: agent (framework)."
                ),
            )
        )
    return plots


def throughput_plot(results: Sequence[EvalResult], styles: _Styles) -> list[_Plot]:
    """Samples per second vs batch size, one line per model and agent."""
    lines: dict[_Series, list[tuple[int, float]]] = {}
    for r in results:
        if r.throughput > 0:
            lines.setdefault(styles.series(r), []).append((r.batch_size, r.throughput))
    if not lines:
        return []
    fig = _figure(PLOT_WIDTH, 4.6)
    ax = fig.subplots()
    for k, (s, points) in enumerate(lines.items()):
        best: dict[int, float] = {}
        for size, value in points:  # several evaluations at one size: the newest (last) wins
            best[size] = value
        xs = sorted(best)
        ax.plot(
            xs,
            [best[x] for x in xs],
            color=s.color,
            marker=s.marker,
            markersize=6,
            linewidth=1.4,
            gid=f"marks-line-{k}",
        )
    _batch_ticks(ax, [r.batch_size for r in results])
    ax.set_yscale("log")
    ax.set_xlabel("batch size (log scale)", fontsize=8)
    ax.set_ylabel("throughput (samples/s, log scale)", fontsize=8)
    ax.grid(True, which="both", alpha=0.25)
    ax.tick_params(labelsize=8)
    ax.margins(x=0.08)
    _legend(fig, lines)
    name = "throughput-batch"
    return [
        _Plot(
            name=name,
            title="Throughput vs batch size",
            svg=_svg(fig, name),
            caption=(
                "Samples per second over each evaluation's whole timed loop (reading batches "
                "and updating metrics included), by batch size. Higher is better."
            ),
        )
    ]


def latency_plot(
    results: Sequence[EvalResult], styles: _Styles, phase: str = "predict"
) -> list[_Plot]:
    """Percentile boxes of the per-batch latency, one panel per batch size."""
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    rows: dict[int, dict[_Series, Any]] = {}
    for r in results:
        stats = _latency(r, phase)
        if stats is not None:
            rows.setdefault(r.batch_size, {})[styles.series(r)] = stats  # newest wins
    if not rows:
        return []
    sizes = sorted(rows)
    heights = [0.34 * len(rows[s]) + 0.9 for s in sizes]
    fig = _figure(PLOT_WIDTH, sum(heights) + 0.9)
    axes = fig.subplots(len(sizes), 1, squeeze=False, height_ratios=heights)[:, 0]
    marks = {"p90": ("^", 28), "p95": ("D", 22), "p99": ("X", 34)}
    for index, (ax, size) in enumerate(zip(axes, sizes, strict=True)):
        series = list(rows[size])
        stats = [rows[size][s] for s in series]
        ys = list(range(len(series)))[::-1]  # the first series on top
        low = min(st.min for st in stats)
        high = max(st.max for st in stats)
        prefix = f"marks-b{size}-{index}"
        whiskers = LineCollection(
            [[(st.min, y), (st.max, y)] for st, y in zip(stats, ys, strict=True)],
            colors="#555555",
            linewidths=1.0,
            gid=f"{prefix}-range",
        )
        ax.add_collection(whiskers)
        boxes = PatchCollection(
            [
                Rectangle((st.p25, y - 0.3), max(st.p75 - st.p25, st.p50 * 1e-3), 0.6)
                for st, y in zip(stats, ys, strict=True)
            ],
            facecolors=[s.color for s in series],
            edgecolors=[s.color for s in series],
            alpha=0.55,
            linewidths=1.0,
            gid=f"{prefix}-box",
        )
        ax.add_collection(boxes)
        medians = LineCollection(
            [[(st.p50, y - 0.34), (st.p50, y + 0.34)] for st, y in zip(stats, ys, strict=True)],
            colors="black",
            linewidths=2.0,
            gid=f"{prefix}-p50",
        )
        ax.add_collection(medians)
        for label, (marker, area) in marks.items():
            ax.scatter(
                [getattr(st, label) for st in stats],
                ys,
                marker=marker,
                s=area,
                color="#222222",
                zorder=3,
                gid=f"{prefix}-{label}",
            )
        ax.set_xscale("log")
        ax.set_xlim(low / 1.5, high * 1.5)
        ax.set_ylim(-0.7, len(series) - 0.3)
        ax.set_yticks(ys, [s.label for s in series], fontsize=8)
        for tick, s in zip(ax.get_yticklabels(), series, strict=True):
            tick.set_color(s.color)
        ax.set_title(f"batch size {size}", fontsize=10)
        ax.set_xlabel(f"{phase} latency per batch (ms, log scale)", fontsize=8)
        ax.grid(True, axis="x", which="both", alpha=0.25)
        ax.tick_params(axis="x", labelsize=8)
    key = [
        Patch(facecolor="#999999", alpha=0.55, label="p25 to p75"),
        Line2D([], [], color="black", linewidth=2, label="p50 (median)"),
        *(
            Line2D([], [], color="#222222", marker=m, linestyle="", label=label)
            for label, (m, _) in marks.items()
        ),
        Line2D([], [], color="#555555", linewidth=1, label="min to max"),
    ]
    fig.legend(handles=key, loc="outside lower center", ncols=len(key), frameon=False, fontsize=8)
    name = "latency-distributions"
    return [
        _Plot(
            name=name,
            title=f"Latency distributions ({phase})",
            svg=_svg(fig, name),
            caption=(
                f"Per-batch {phase} latency of each evaluation, drawn from the percentiles it "
                f"stored: the results database keeps statistics (from a histogram 0.1% "
                f"precise), not the individual timings, so this is a percentile box plot and "
                f"nothing between the stored percentiles is drawn. Box: p25 to p75; black "
                f"line: p50 (median); markers: p90, p95, p99; whisker: min to max."
            ),
        )
    ]


# ----------------------------------------------------------------------------- tables


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return _e(value)


def _ms(value: float | None) -> str:
    if value is None:
        return "&ndash;"
    if value >= 100:
        return f"{value:,.1f}"
    if value >= 1:
        return f"{value:.3f}"
    return f"{value:.4f}"


def _table(
    head: Sequence[str], groups: Iterable[Iterable[Sequence[str]]], numeric: set[int]
) -> str:
    """An HTML table with one ``<tbody>`` per group of rows; cells are already escaped.
    ``numeric``: the indexes of right-aligned columns."""
    out = ["<table><thead><tr>"]
    out += [f"<th{' class=n' if i in numeric else ''}>{_e(h)}</th>" for i, h in enumerate(head)]
    out.append("</tr></thead>")
    for rows in groups:
        out.append("<tbody>")
        for row in rows:
            cells = [f"<td{' class=n' if i in numeric else ''}>{c}</td>" for i, c in enumerate(row)]
            out.append("<tr>" + "".join(cells) + "</tr>")
        out.append("</tbody>")
    out.append("</table>")
    return "".join(out)


def comparison_table(results: Sequence[EvalResult], by: str) -> str | None:
    """The groups of :func:`compare` with more than one row, as one HTML table (None if none)."""
    comparison = compare(results, by=by)
    groups = [g for g in comparison.groups if len(g) > 1]
    if not groups:
        return None
    head = [
        "model", "framework", "agent", "dataset", "batch", "device", "p50 ms", "p99 ms",
        "samples/s", "throughput x", "speedup", "metric", "Δ metric",
    ]  # fmt: skip
    table_groups = []
    for group in groups:
        rows = []
        for row in group:
            base = row["id"] == row["baseline"]
            metric = row["main_metric"]
            delta = row["main_metric_delta"]
            rows.append(
                [
                    _e(row["model"]) + (' <span class="base">baseline</span>' if base else ""),
                    _e(row["framework"]),
                    _e(row["agent"]),
                    _e(Path(row["dataset"]).name),
                    _e(row["batch_size"]),
                    _e(row["device"]),
                    _ms(row.get("predict_p50_ms")),
                    _ms(row.get("predict_p99_ms")),
                    _num(row["throughput"], 1),
                    _num(row["throughput_ratio"], 2),
                    _num(row["speedup"], 2),
                    f"{_e(metric)} {row['main_metric_value']:.4f}" if metric else "&ndash;",
                    "&ndash;" if base or delta is None else f"{delta:+.4f}",
                ]
            )
        table_groups.append(rows)
    return _table(head, table_groups, numeric={4, 6, 7, 8, 9, 10, 12})


def results_table(results: Sequence[EvalResult], phase: str) -> str:
    head = [
        "id", "created", "model", "framework", "agent", "dataset", "batch", "device",
        "samples", f"{phase} p50 ms", "p90", "p99", "max", "samples/s", "metric", "spread",
        "warnings", "trace",
    ]  # fmt: skip
    rows = []
    for r in results:
        stats = r.latency.get(phase)
        metric = main_metric(r)
        spread = r.spread
        rows.append(
            [
                f"<code>{_e(r.id[:12])}</code>",
                _e(r.created[:19].replace("T", " ")),
                _e(r.model),
                _e(r.framework),
                _e(r.agent),
                _e(Path(r.dataset).name),
                _e(r.batch_size),
                _e(r.device),
                _e(r.num_samples),
                _ms(stats.p50 if stats else None),
                _ms(stats.p90 if stats else None),
                _ms(stats.p99 if stats else None),
                _ms(stats.max if stats else None),
                _num(r.throughput, 1),
                f"{_e(metric[0])} {metric[1]:.4f}" if metric else "&ndash;",
                f"{spread:.1%}" if spread is not None else "&ndash;",
                _e(len(r.warnings)) if r.warnings else "",
                _trace_link(r),
            ]
        )
    return _table(head, [rows], numeric={6, 8, 9, 10, 11, 12, 13, 15, 16})


def _trace_link(result: EvalResult) -> str:
    """A link to the evaluation's trace file (opens in Perfetto), with its level."""
    trace = result.trace or {}
    file = trace.get("file")
    if not file:
        return ""
    level = str(trace.get("level", "")).lower()
    mode = " leveled" if trace.get("mode") == "leveled" else ""
    uri = Path(file).absolute().as_uri()
    return f'<a href="{_e(uri)}" title="{_e(file)}">{_e(level)}{_e(mode)}</a>'


def _counted(values: Iterable[str]) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return list(counts.items())


def provenance_section(results: Sequence[EvalResult]) -> str:
    """Machines, devices, software versions, code versions and thread settings, with counts."""

    def machine(r: EvalResult) -> str:
        p = r.provenance
        cpu = p.get("cpu") or {}
        gpus = p.get("gpu") or "no GPU"
        if isinstance(gpus, list | dict):
            gpus = str(gpus)
        return (
            f"{p.get('host', '?')}: {cpu.get('model', '?')} ({cpu.get('logical_cores', '?')} "
            f"logical, {cpu.get('physical_cores', '?')} physical, "
            f"{cpu.get('usable_cores', '?')} usable cores); {gpus}; {p.get('platform', '')}"
        )

    def code(r: EvalResult) -> str:
        commit = r.provenance.get("git_commit")
        if not commit:
            return "not in a git checkout"
        return f"{commit}" + (" (uncommitted changes)" if r.provenance.get("git_dirty") else "")

    versions: dict[str, dict[str, int]] = {}
    for r in results:
        for name, version in (r.provenance.get("versions") or {}).items():
            counts = versions.setdefault(str(name), {})
            counts[str(version)] = counts.get(str(version), 0) + 1

    def threads(r: EvalResult) -> str:
        t = r.provenance.get("threads") or {}
        return ", ".join(f"{k}={v}" for k, v in t.items()) or "&ndash;"

    def listing(pairs: Iterable[tuple[str, int]]) -> str:
        items = [f"<li>{_e(text)} <span class=count>({n})</span></li>" for text, n in pairs]
        return "<ul>" + "".join(items) + "</ul>"

    created = sorted(r.created for r in results)
    rows = [
        ("Machines", listing(_counted(machine(r) for r in results))),
        ("Devices", listing(_counted(r.device for r in results))),
        (
            "Libraries",
            "<ul>"
            + "".join(
                f"<li>{_e(name)} "
                + ", ".join(f"{_e(v)} <span class=count>({n})</span>" for v, n in counts.items())
                + "</li>"
                for name, counts in sorted(versions.items())
            )
            + "</ul>",
        ),
        ("Code (git commit)", listing(_counted(code(r) for r in results))),
        ("Threads", listing(_counted(threads(r) for r in results))),
        (
            "Evaluated",
            _e(f"{created[0][:19].replace('T', ' ')} to {created[-1][:19].replace('T', ' ')} UTC"),
        ),
    ]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return (
        f'<table class="provenance">{body}</table>'
        f"<p class=note>Numbers in brackets: how many of the {len(results)} evaluations.</p>"
    )


# ----------------------------------------------------------------------------- the page

_CSS = """
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; margin: 0 auto; padding: 1.5rem 2rem 4rem; max-width: 1200px; color: #1d1d1f;
  background: #fff; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; }
h2 { font-size: 1.25rem; margin-top: 2.4rem; border-bottom: 1px solid #ddd;
  padding-bottom: .25rem; }
h3 { font-size: 1.05rem; margin-top: 1.6rem; }
.meta { color: #555; margin-top: 0; }
nav ul { display: flex; flex-wrap: wrap; gap: .4rem 1.2rem; padding: 0; list-style: none; }
figure.plot { margin: 1rem 0 2rem; }
figure.plot svg { display: block; max-width: 100%; height: auto; }
figcaption { color: #444; font-size: .9rem; max-width: 60rem; }
table { border-collapse: collapse; font-size: .82rem; margin: .6rem 0 1.2rem; }
th, td { padding: .25rem .55rem; border-bottom: 1px solid #e5e5e5; text-align: left;
  vertical-align: top; }
thead th { background: #f4f4f6; position: sticky; top: 0; white-space: nowrap; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
td { white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafafa; }
tbody + tbody tr:first-child td { border-top: 2px solid #bbb; }
.base { font-size: .72rem; background: #e8eefc; color: #2a4a9b; border-radius: 3px;
  padding: 0 .3rem; margin-left: .3rem; }
.count { color: #777; }
.note { color: #555; font-size: .9rem; }
.warn { color: #8a5300; }
table.provenance th { width: 11rem; background: none; }
table.provenance ul { margin: 0; padding-left: 1.1rem; }
table.provenance td { white-space: normal; }
.wide { overflow-x: auto; }
code { font-size: .8rem; }
"""


def render_report(
    results: Sequence[EvalResult],
    *,
    title: str = "forgeml evaluation report",
    phase: str = "predict",
    selection: str | None = None,
    now: datetime | None = None,
) -> str:
    """The HTML page for ``results`` (see the module's docs); self-contained, no scripts.

    ``phase``: the latency the plots show (``predict``, the default, ``total``,
    ``preprocess`` or ``postprocess``). ``selection``: a line saying how the results
    were chosen, shown under the title.
    """
    if not results:
        raise EvalError(
            "No evaluations to report on. Run some first (forgeml eval, forgeml eval matrix), "
            "or widen the selection (see 'forgeml results ls')."
        )
    if phase not in PHASES:
        raise EvalError(f"The report's phase must be one of {', '.join(PHASES)}. Got {phase!r}.")
    results = list(results)
    styles = _Styles(results)
    plots = [
        *accuracy_plot(results, styles, phase),
        *throughput_plot(results, styles),
        *latency_plot(results, styles, phase),
    ]
    when = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    models = sorted({r.model for r in results})
    agents = sorted({r.agent for r in results})
    sizes = sorted({r.batch_size for r in results})
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta name="generator" content="forgeml {_e(__version__)}">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>",
        f"<header><h1>{_e(title)}</h1>",
        f'<p class="meta">{len(results)} evaluation(s) of {len(models)} model(s) on '
        f"{len(agents)} agent(s) ({_e(', '.join(agents))}) at batch size(s) "
        f"{_e(', '.join(map(str, sizes)))}. Generated {_e(when)} by forgeml "
        f"{_e(__version__)}." + (f" Selection: {_e(selection)}." if selection else "") + "</p>",
        "</header>",
        '<nav><ul><li><a href="#plots">Plots</a></li><li><a href="#comparisons">Comparisons'
        '</a></li><li><a href="#evaluations">Evaluations</a></li><li><a href="#provenance">'
        "Provenance</a></li></ul></nav>",
        '<section id="plots"><h2>Plots</h2>',
    ]
    if not plots:
        parts.append("<p class=note>Nothing to plot: no evaluation has latency figures.</p>")
    for plot in plots:
        parts.append(
            f'<figure class="plot" id="{_e(plot.name)}" data-plot="{_e(plot.name)}">'
            f"<h3>{_e(plot.title)}</h3>{plot.svg}<figcaption>{_e(plot.caption)}</figcaption>"
            "</figure>"
        )
    unscored = [r for r in results if main_metric(r) is None]
    if unscored:
        parts.append(
            f"<p class=note>{len(unscored)} evaluation(s) have no accuracy metric (a dataset "
            "without labels) and are left out of the accuracy plot.</p>"
        )
    parts.append("</section>")
    parts.append('<section id="comparisons"><h2>Comparisons</h2>')
    parts.append(
        "<p class=note>As <code>forgeml results compare</code>: in each group the first row "
        "is the baseline; <em>throughput x</em> is a row's throughput ÷ the baseline's, "
        "<em>speedup</em> the baseline's p50 predict latency ÷ the row's (above 1 is "
        "better), <em>Δ metric</em> the change of the main accuracy metric.</p>"
    )
    for by, heading, empty in (
        (
            "framework",
            "Across frameworks",
            "No model was evaluated on more than one framework at the same batch size.",
        ),
        (
            "batch_size",
            "Across batch sizes",
            "No model and agent was evaluated at more than one batch size.",
        ),
    ):
        table = comparison_table(results, by)
        parts.append(f"<h3>{_e(heading)}</h3>")
        parts.append(f'<div class="wide">{table}</div>' if table else f"<p class=note>{empty}</p>")
    parts.append("</section>")
    parts.append('<section id="evaluations"><h2>Evaluations</h2>')
    parts.append(f'<div class="wide">{results_table(results, phase)}</div>')
    warned = [r for r in results if r.warnings]
    if warned:
        parts.append("<h3>Warnings</h3><ul>")
        for r in warned:
            for warning in r.warnings:
                parts.append(
                    f"<li class=warn><code>{_e(r.id[:12])}</code> {_e(r.model)} · "
                    f"{_e(r.agent)} · batch {_e(r.batch_size)}: {_e(warning)}</li>"
                )
        parts.append("</ul>")
    parts.append("</section>")
    parts.append('<section id="provenance"><h2>Provenance</h2>')
    parts.append(provenance_section(results))
    parts.append("</section></body></html>")
    return "\n".join(parts) + "\n"


def write_report(
    results: Sequence[EvalResult], path: str | os.PathLike[str], **options: Any
) -> Path:
    """Write :func:`render_report` of ``results`` to ``path`` (atomically); returns the path.

    ``options`` are those of :func:`render_report` (``title``, ``phase``, ``selection``).
    """
    from forgeml._core._files import atomic_write_text

    target = Path(path).expanduser()
    page = render_report(results, **options)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, page)
    return target


def newest_per_configuration(results: Sequence[EvalResult]) -> list[EvalResult]:
    """The newest result of each configuration (model, framework, agent, dataset, batch size,
    device), oldest first: what ``forgeml results compare`` and ``forgeml report`` show."""
    newest: dict[tuple[Any, ...], EvalResult] = {}
    for r in sorted(results, key=lambda r: r.created):
        key = (r.model, r.framework, r.agent, r.dataset, r.batch_size, r.device)
        newest.pop(key, None)
        newest[key] = r
    return sorted(newest.values(), key=lambda r: r.created)
