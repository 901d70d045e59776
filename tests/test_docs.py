"""The docs run: every example in ``docs/*.md`` and README.md is executed, so they never rot.

How a page's fenced blocks are treated, in page order, in a fresh temp dir per page:

- A block with ``title="PATH"`` in its info string (```` ```yaml title="configs/a.yml" ````,
  any language) is written to ``PATH``, relative to the temp dir.
- A ```` ```python ```` block runs in one namespace shared by the page, with the
  temp dir as the working directory. The namespace is a module registered in
  ``sys.modules`` as ``docs_<page>``, and the temp dir is on ``sys.path``, so classes
  the page defines, and modules it writes as titled files, import by name (what
  ``forgeml.load_object`` does).
- A ```` ```pycon ```` block (``>>>`` prompts) runs as a doctest in that same
  namespace; its shown output must match (``...`` matches anything).
- A ```` ```console ```` block runs each ``$ COMMAND`` line with bash in the temp
  dir; it must exit 0. The lines after a command, up to the next ``$ ``, are its
  expected output: each non-empty one must appear in some line of what the
  command printed (stdout and stderr together; runs of whitespace count as one
  space; ``...`` inside a line matches anything; a line that is just ``...``
  expects nothing). ``forgeml`` and ``python`` are the ones of this
  interpreter's environment, and ``FORGEML_HOME`` is a temp dir.
- A block whose info string has the word ``skip`` or the class ``.skip``
  (```` ```python {.skip} ````) is shown, not run. Other blocks are shown only.
"""

from __future__ import annotations

import contextlib
import doctest
import os
import re
import subprocess
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
README = ROOT / "README.md"
#: Pages whose examples run: the docs, and the README's tour.
RUN = [README, *PAGES]
COMMAND_TIMEOUT = 60

_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_TITLE = re.compile(r"""\btitle=(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s}]+))""")


@dataclass
class Block:
    lang: str
    info: str
    text: str
    line: int  # line number of the opening fence, 1-based

    @property
    def title(self) -> str | None:
        match = _TITLE.search(self.info)
        if match is None:
            return None
        return match.group("dq") or match.group("sq") or match.group("bare")

    @property
    def skipped(self) -> bool:
        words = re.split(r"[\s{}]+", self.info)
        return "skip" in words or ".skip" in words


def parse_blocks(markdown: str) -> list[Block]:
    """The fenced code blocks of a page, in order."""
    blocks: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, info = match.group("fence"), match.group("info").strip()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (
            lines[i].startswith(fence[0] * len(fence)) and lines[i].strip(fence[0]) == ""
        ):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise AssertionError(f"line {start + 1}: code block never closed")
        i += 1
        lang = info.strip("{ ").split()[0].lstrip(".") if info.strip("{ }") else ""
        text = "\n".join(body) + "\n"
        blocks.append(Block(lang=lang, info=info, text=text, line=start + 1))
    return blocks


def parse_console(text: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines with the expected-output lines that follow each."""
    commands: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:].strip(), []))
        elif commands:
            commands[-1][1].append(line)
        elif line.strip():
            raise AssertionError(f"console block: output line {line!r} before any '$ ' command")
    return commands


def _squash(text: str) -> str:
    return " ".join(text.split())


def expected_pattern(line: str) -> re.Pattern[str]:
    parts = [re.escape(part) for part in _squash(line).split("...")]
    return re.compile(".*".join(parts))


def missing_lines(expected: list[str], output: str) -> list[str]:
    """The expected lines that appear in no line of ``output``."""
    got = [_squash(line) for line in output.splitlines()]
    missing = []
    for line in expected:
        if not line.strip() or line.strip() == "...":
            continue
        pattern = expected_pattern(line)
        if not any(pattern.search(g) for g in got):
            missing.append(line)
    return missing


def run_command(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def stop_leftover_daemons(home: Path) -> None:
    """Stop daemons a failed page left running (their records live under FORGEML_HOME)."""
    from forgeml.app import list_daemons, stop_daemon

    saved = os.environ.get("FORGEML_HOME")
    os.environ["FORGEML_HOME"] = str(home)
    try:
        for record in list_daemons():
            with contextlib.suppress(Exception):
                stop_daemon(record, timeout=5, force=True)
    finally:
        if saved is None:
            os.environ.pop("FORGEML_HOME", None)
        else:
            os.environ["FORGEML_HOME"] = saved


def page_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # not inside someone else's distributed run
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["FORGEML_HOME"] = str(home)
    env["COLUMNS"] = "160"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_page(page: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = page.relative_to(ROOT).as_posix()
    home = workdir.parent / f"{workdir.name}-forgeml-home"
    env = page_env(home)
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("FORGEML_HOME", str(home))
    monkeypatch.syspath_prepend(str(workdir))
    module = types.ModuleType(f"docs_{page.stem}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace: dict[str, object] = module.__dict__
    before = set(sys.modules)
    try:
        for block in parse_blocks(page.read_text(encoding="utf-8")):
            where = f"{name}, block at line {block.line}"
            if block.skipped:
                continue
            if block.title is not None:
                target = workdir / block.title
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(block.text, encoding="utf-8")
            elif block.lang == "python":
                code = compile(block.text, f"<{where}>", "exec")
                exec(code, namespace)
            elif block.lang == "pycon":
                run_doctest(block, namespace, where)
            elif block.lang == "console":
                for command, expected in parse_console(block.text):
                    result = run_command(command, workdir, env)
                    assert result.returncode == 0, (
                        f"{where}: `{command}` exited {result.returncode}:\n{result.stdout}"
                    )
                    missing = missing_lines(expected, result.stdout)
                    assert not missing, (
                        f"{where}: `{command}` did not print\n  "
                        + "\n  ".join(missing)
                        + f"\nIt printed:\n{result.stdout}"
                    )
    finally:
        stop_leftover_daemons(home)
        for imported in set(sys.modules) - before:  # modules the page wrote and imported
            where_from = getattr(sys.modules[imported], "__file__", None) or ""
            if str(where_from).startswith(str(workdir)):
                del sys.modules[imported]


def run_doctest(block: Block, namespace: dict[str, object], where: str) -> None:
    parser = doctest.DocTestParser()
    test = parser.get_doctest(block.text, namespace, where, where, block.line)
    test.globs = namespace  # not a copy: what the block defines is in the page's module at once
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    report: list[str] = []
    runner.run(test, out=report.append, clear_globs=False)
    assert runner.failures == 0, "".join(report)


def needs_torch(page: Path) -> bool:
    return "import torch" in page.read_text(encoding="utf-8")


@pytest.mark.parametrize("page", RUN, ids=[p.name for p in RUN])
def test_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if needs_torch(page):
        pytest.importorskip("torch", reason=f"the examples of {page.name} use torch")
    workdir = tmp_path / "work"
    workdir.mkdir()
    run_page(page, workdir, monkeypatch)


def test_there_are_pages() -> None:
    assert {p.name for p in PAGES} >= {"index.md", "config.md", "launcher.md", "cli.md"}


def nav_files(nav: object) -> list[str]:
    """Every page file named in an mkdocs ``nav`` (nested sections included)."""
    if isinstance(nav, str):
        return [] if "://" in nav else [nav]
    if isinstance(nav, list):
        return [f for item in nav for f in nav_files(item)]
    if isinstance(nav, dict):
        return [f for value in nav.values() for f in nav_files(value)]
    return []


def test_mkdocs_nav_lists_every_page() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = nav_files(config["nav"])
    assert len(listed) == len(set(listed)), f"a page is listed twice in mkdocs.yml: {listed}"
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert set(listed) == on_disk, (
        f"only in mkdocs.yml nav: {sorted(set(listed) - on_disk)}; "
        f"only in docs/: {sorted(on_disk - set(listed))}"
    )


_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def slug(heading: str) -> str:
    """The anchor of a heading, as MkDocs' toc (and GitHub, for plain headings) writes it."""
    text = re.sub(r"[`*_]", "", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[-\s]+", "-", text).strip("-")


def anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    in_code = False
    found = set()
    for line in text.splitlines():
        if _FENCE.match(line):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#{1,6}\s+(.*)", line)):
            found.add(slug(match.group(1)))
    return found


@pytest.mark.parametrize("source", RUN, ids=[p.name for p in RUN])
def test_local_links_resolve(source: Path) -> None:
    text = source.read_text(encoding="utf-8")
    broken = []
    for match in _LINK.finditer(text):
        target = match.group("target")
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto: ...
        path_part, _, anchor = target.partition("#")
        page = (source.parent / path_part).resolve() if path_part else source
        if not page.exists():
            broken.append(f"{target} (no file {page})")
        elif anchor and page.suffix == ".md" and anchor not in anchors(page):
            broken.append(f"{target} (no heading #{anchor} in {page.name})")
    assert not broken, f"broken links in {source.name}: {broken}"


# The harness itself: small, exact checks so a broken parser cannot pass pages silently.


def test_parse_blocks_reads_titles_languages_and_skips() -> None:
    page = (
        'Intro\n\n```yaml title="configs/a.yml"\na: 1\n```\n\n'
        "```python {.skip}\nraise SystemExit\n```\n\n"
        "````console\n$ echo hi\nhi\n````\n"
    )
    first, second, third = parse_blocks(page)
    assert (first.lang, first.title, first.text, first.line) == (
        "yaml",
        "configs/a.yml",
        "a: 1\n",
        3,
    )
    assert (second.lang, second.skipped, second.title) == ("python", True, None)
    assert third.lang == "console"
    assert parse_console(third.text) == [("echo hi", ["hi"])]


def test_expected_output_matching() -> None:
    output = "PID   NAME     UPTIME\n 42   sleeper  0:00:01\nrank 0/2: sum=3rank 1/2: sum=3\n"
    assert (
        missing_lines(["PID NAME UPTIME", "... sleeper ...", "...", "", "rank 1/2: sum=3"], output)
        == []
    )
    assert missing_lines(["sleeper 0:00:02"], output) == ["sleeper 0:00:02"]
