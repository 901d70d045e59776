"""The HTML report: forgeml.eval.render_report/write_report and ``forgeml report``.

The results are real evaluations of the small linear digits model of
``tests/eval_fixtures.py`` (agents ``numpy_linear`` and ``numpy_jitter``, several
batch sizes). The page is opened in a real headless Chromium (Debian's
``chromium``; ``make test`` installs it when run as root) to check that the plots
render: every plot's marks have a size on the page and paint pixels in a
screenshot, and the page fetches nothing.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import eval_fixtures
from forgeml import EvalError
from forgeml.cli import cli
from forgeml.eval import EvalResult, ResultsDB, evaluate, render_report, write_report

MODEL = eval_fixtures.MODEL
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
PLOTS = ("accuracy-latency-0", "throughput-batch", "latency-distributions")


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[EvalResult]]:
    """Six evaluations, stored once for the module: two agents x batch sizes 1, 10 and 50."""
    base = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(base)
        eval_fixtures.install(base, monkeypatch)
        found = [
            evaluate(MODEL, agent=agent, batch_size=batch_size, num_batches=9, num_warmup=1)
            for agent in ("numpy_linear", "numpy_jitter")
            for batch_size in (1, 10, 50)
        ]
    return base / "home", found


@pytest.fixture
def results(
    stored: tuple[Path, list[EvalResult]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[EvalResult]:
    """The stored evaluations, with a copy of their database as this test's FORGEML_HOME."""
    home, found = stored
    shutil.copytree(home, tmp_path / "home")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FORGEML_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return found


def ids_of(page: str) -> list[str]:
    return re.findall(r'\bid="([^"]+)"', page)


# ----------------------------------------------------------------------------- the page


def test_the_page_has_the_plots_tables_and_provenance(results: list[EvalResult]) -> None:
    page = render_report(results, now=NOW, selection="all of them")

    assert page.startswith("<!DOCTYPE html>")
    for name in PLOTS:
        match = re.search(
            rf'<figure class="plot" id="{name}" data-plot="{name}">(.*?)</figure>', page, re.S
        )
        assert match is not None, name
        figure = match.group(1)
        assert "<svg" in figure
        assert f'id="{name}-marks-' in figure  # the plotted marks, as named groups
        assert "<figcaption>" in figure
    assert "Top-1 accuracy vs latency" in page
    assert "Throughput vs batch size" in page
    assert "Latency distributions (predict)" in page
    assert "percentile box plot" in page  # honest about what the boxes are drawn from
    # The comparison tables: across frameworks (both agents run numpy models) and batch sizes.
    assert page.count('<span class="base">baseline</span>') == 3 + 2
    for section in ("Across frameworks", "Across batch sizes", "Evaluations", "Provenance"):
        assert f">{section}<" in page
    for r in results:
        assert r.id[:12] in page
    assert "Generated 2026-11-21 12:00 UTC" in page
    assert "Selection: all of them." in page
    assert "numpy " + results[0].provenance["versions"]["numpy"] in page
    assert html.escape(results[0].provenance["cpu"]["model"]) in page


def test_the_page_is_self_contained_and_its_ids_unique(results: list[EvalResult]) -> None:
    page = render_report(results, now=NOW)
    assert "<script" not in page
    assert "<link" not in page
    assert "@import" not in page
    # Every reference points inside the page (anchors, SVG definitions).
    references = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert references
    assert all(ref.startswith("#") for ref in references), references
    assert not re.search(r"url\((?!#)", page)
    ids = ids_of(page)
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1][:5]


def test_the_page_is_the_same_for_the_same_results(results: list[EvalResult]) -> None:
    assert render_report(results, now=NOW) == render_report(results, now=NOW)


def test_each_metric_gets_its_own_accuracy_plot(results: list[EvalResult]) -> None:
    regression = [
        replace(r, id=r.id[::-1], model="linear_regressor", metrics={"r2": 0.5 + i / 10})
        for i, r in enumerate(results[:3])
    ]
    unscored = [replace(results[0], id="f" * 32, model="no_labels", metrics={})]
    page = render_report([*results, *regression, *unscored], now=NOW)
    assert 'data-plot="accuracy-latency-0"' in page
    assert 'data-plot="accuracy-latency-1"' in page
    assert "R² vs latency" in page
    assert "1 evaluation(s) have no accuracy metric" in page


def test_the_phase_and_the_title_can_be_chosen(results: list[EvalResult], tmp_path: Path) -> None:
    path = write_report(results, tmp_path / "sub" / "r.html", title="Mine <3", phase="total")
    page = path.read_text(encoding="utf-8")
    assert "<title>Mine &lt;3</title>" in page
    assert "Latency distributions (total)" in page
    assert "p50 total latency per batch" in page


def test_nothing_to_report_and_bad_phase_are_errors(results: list[EvalResult]) -> None:
    with pytest.raises(EvalError, match="No evaluations to report on"):
        render_report([])
    with pytest.raises(EvalError, match="phase must be one of preprocess, predict"):
        render_report(results, phase="inference")


# ----------------------------------------------------------------------------- the command


def run_cli(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_report_selects_like_results_ls(
    results: list[EvalResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report.html"
    done = run_cli("report", "-o", str(out))
    assert done.exit_code == 0, done.output
    assert f"wrote {out} (6 evaluation(s), " in done.output
    assert "the newest evaluation of each configuration" in out.read_text()

    # The same configuration again: one per configuration by default, every one with --all.
    eval_fixtures.install(tmp_path, monkeypatch)
    evaluate(MODEL, agent="numpy_linear", batch_size=10, num_batches=9)
    assert "(6 evaluation(s)" in run_cli("report", "-o", str(out)).output
    assert "(7 evaluation(s)" in run_cli("report", "--all", "-o", str(out)).output

    done = run_cli("report", "--agent", "numpy_jitter", "--batch_size", "10", "-o", str(out))
    assert "(1 evaluation(s)" in done.output
    assert "with agent=numpy_jitter, batch size=10" in out.read_text()

    done = run_cli("report", "--last", "2", "-o", str(out))
    assert "(2 evaluation(s)" in done.output
    assert "Selection: the newest 2." in out.read_text()

    done = run_cli("report", results[0].id[:8], results[3].id, "-o", str(out))
    assert "(2 evaluation(s)" in done.output

    both = run_cli("report", results[0].id, "--model", MODEL, "-o", str(out))
    assert both.exit_code == 2
    assert "not both" in both.output


def test_cli_report_without_matches_says_so(results: list[EvalResult], tmp_path: Path) -> None:
    done = run_cli("report", "--model", "nothing_like_it", "-o", str(tmp_path / "r.html"))
    assert done.exit_code == 1
    assert "Error: No evaluations match in " in done.output
    assert not (tmp_path / "r.html").exists()
    assert len(ResultsDB()) == 6


# ----------------------------------------------------------------------------- in a browser

#: Headless Chromium: no sandbox (tests may run as root), no GPU, nothing fetched in the
#: background, a throwaway profile.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)
WIDTH = 1280

#: Appended to a copy of the page: where every plot and each of its marks is laid out,
#: the page's height, and how many resources the page fetched.
PROBE = """<script>
(function () {
  const out = {plots: [], height: document.documentElement.scrollHeight,
               resources: performance.getEntriesByType("resource").length};
  const box = (el) => { const r = el.getBoundingClientRect();
    return {x: r.left + scrollX, y: r.top + scrollY, w: r.width, h: r.height}; };
  for (const fig of document.querySelectorAll("figure.plot")) {
    const svg = fig.querySelector("svg");
    out.plots.push({name: fig.dataset.plot, svg: box(svg),
      marks: [...svg.querySelectorAll('[id*="-marks-"]')].map((m) => ({id: m.id, ...box(m)}))});
  }
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip(
            "Debian's chromium is not installed, so the report is not opened in a browser. "
            "'make test' installs it (apt-get install chromium) when run as root; or install "
            "it yourself."
        )
    return found


def run_chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.mark.slow
def test_the_plots_render_in_headless_chromium(results: list[EvalResult], tmp_path: Path) -> None:
    from PIL import Image

    binary = chromium()
    report = write_report(results, tmp_path / "report.html")
    probe = tmp_path / "probe.html"
    probe.write_text(
        report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8"
    )

    dom = run_chromium(
        binary, tmp_path / "profile-dom", f"--window-size={WIDTH},1000", "--dump-dom",
        probe.as_uri(),
    ).stdout  # fmt: skip
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found is not None, dom[-2000:]
    layout = json.loads(html.unescape(found.group(1)))
    assert layout["resources"] == 0  # self-contained: nothing was fetched
    assert [p["name"] for p in layout["plots"]] == list(PLOTS)
    assert dom.count("<svg") >= len(PLOTS)
    for plot in layout["plots"]:
        assert plot["svg"]["w"] > 300, plot["svg"]
        assert plot["svg"]["h"] > 150, plot["svg"]
        assert plot["svg"]["x"] + plot["svg"]["w"] <= WIDTH
        assert len(plot["marks"]) >= 2, plot["name"]
        for mark in plot["marks"]:
            assert mark["w"] > 0 or mark["h"] > 0, mark  # a line has no height, not nothing
    marks = {p["name"]: len(p["marks"]) for p in layout["plots"]}
    assert marks["accuracy-latency-0"] == len(results)  # one point per evaluation
    assert marks["throughput-batch"] == 2  # one line per agent
    assert marks["latency-distributions"] == 3 * 6  # range, box, p50, p90, p95, p99 per size

    shot = tmp_path / "report.png"
    height = int(layout["height"]) + 10
    run_chromium(
        binary, tmp_path / "profile-shot", f"--window-size={WIDTH},{height}",
        f"--screenshot={shot}", report.as_uri(),
    )  # fmt: skip
    image = Image.open(shot).convert("RGB")
    assert image.size == (WIDTH, height)
    ink = np.asarray(image).min(axis=2) < 230  # darker than the white background
    for plot in layout["plots"]:
        inked = 0
        for mark in plot["marks"]:
            left, top = int(mark["x"]) - 2, int(mark["y"]) - 2
            right = int(mark["x"] + mark["w"]) + 3
            bottom = int(mark["y"] + mark["h"]) + 3
            painted = int(ink[max(top, 0) : bottom, max(left, 0) : right].sum())
            assert painted > 0, (plot["name"], mark["id"])
            inked += painted
        assert inked > 20 * len(plot["marks"]), plot["name"]
        svg = plot["svg"]
        area = np.asarray(image)[
            int(svg["y"]) : int(svg["y"] + svg["h"]), int(svg["x"]) : int(svg["x"] + svg["w"])
        ]
        colours = np.unique(area.reshape(-1, 3), axis=0)
        assert len(colours) > 20, plot["name"]  # axes, text, coloured marks: not blank
