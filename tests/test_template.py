"""``forgeml new``: the project template for every framework, git, and ``--update`` merges.

The slow tests run a generated project's own ``make test``: the sklearn one exactly as a
user would on a fresh machine (``make`` creates the project's virtualenv and installs
forgeml and the tools from the package index), the torch one with this environment
(``VENV=... INIT=``) to spare the install of torch.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from forgeml.cli import cli
from forgeml.config import load
from forgeml.eval import load_manifest
from forgeml.template import (
    ANSWERS_FILE,
    FRAMEWORKS,
    MAX_NAME,
    RECORD_FILE,
    TemplateError,
    forgeml_requirement,
    new_project,
    package_name,
    template_path,
    update_project,
)

BIN = Path(sys.executable).parent
MAKE_TARGETS = ("init", "format", "lint", "type-check", "test", "train", "eval", "package")
AGENTS = {"sklearn": "sklearn", "torch": "pytorch", "xgboost": "xgboost", "keras": "tensorflow"}
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=30
    )
    return done.stdout


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_framework_renders_a_clean_project(tmp_path: Path, framework: str) -> None:
    root = tmp_path / "my-proj"
    result = new_project(root, framework=framework, git=False)
    pkg = "my_proj"
    assert result.path == root
    assert result.answers["package_name"] == pkg
    expected = {
        ANSWERS_FILE,
        RECORD_FILE,
        ".envrc",
        ".gitignore",
        "Makefile",
        "README.md",
        "pyproject.toml",
        "configs/app.yml",
        "configs/defaults.yml",
        "configs/sites/local.yml",
        "configs/sites/slurm.yml",
        "configs/launch.yml",
        f"models/{pkg}.yml",
        f"src/{pkg}/__init__.py",
        f"src/{pkg}/data.py",
        f"src/{pkg}/model.py",
        f"src/{pkg}/program.py",
        f"tests/test_{pkg}.py",
        "Dockerfile",
        "MLproject",
        ".dockerignore",
    }
    assert expected <= set(result.files)
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == set(
        result.files
    )

    answers = yaml.safe_load((root / ANSWERS_FILE).read_text())
    assert answers["project_name"] == "my-proj"
    assert answers["framework"] == framework
    assert "forgeml_requirement" not in answers  # computed at every rendering, not kept

    pyproject = (root / "pyproject.toml").read_text()
    assert 'name = "my-proj"' in pyproject
    assert f"forgeml[{framework if framework != 'keras' else 'keras,tensorflow'}," in pyproject
    makefile = (root / "Makefile").read_text()
    for target in (*MAKE_TARGETS, "slurm-launch"):
        assert f"\n{target}:" in makefile, target
    assert f"FORGEML ?= {forgeml_requirement(framework)}\n" in makefile
    assert ("PINS ?= torch==2.13.0" in makefile) == (framework == "torch")
    assert "forgeml jobs launch configs/launch.yml" in makefile
    assert "forgeml secrets export" in (root / ".envrc").read_text()
    assert ".forgeml/" in (root / ".gitignore").read_text()
    assert f"{pkg}.program" in (root / "Dockerfile").read_text()
    assert f"{pkg}.program" in (root / "MLproject").read_text()

    for source in root.rglob("*.py"):
        compile(source.read_text(), str(source), "exec")
    program = (root / "src" / pkg / "program.py").read_text()
    assert "app.run(main" in program
    assert "@track.experiment" in program
    assert "from forgeml.data import NumpyDataset" in (root / "src" / pkg / "data.py").read_text()

    for command in (["check", "--no-cache", "."], ["format", "--no-cache", "--check", "."]):
        done = subprocess.run(
            [str(BIN / "ruff"), *command], cwd=root, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr

    cfg = load(root / "configs" / "app.yml")
    assert cfg.output == f"models/{pkg}.dry"
    assert cfg.tracking.experiment == "my-proj"
    assert cfg.slurm_partition == "cpu"
    assert cfg.model
    launch = yaml.safe_load((root / "configs" / "launch.yml").read_text())
    assert launch["command"] == ["python", "-m", f"{pkg}.program", "--cfg", "configs/app.yml"]
    manifest = load_manifest(root / "models" / f"{pkg}.yml")
    assert manifest.key == (pkg, AGENTS[framework])


@needs_git
def test_a_new_project_is_a_git_repository_with_a_first_commit(tmp_path: Path) -> None:
    code, output = invoke("new", str(tmp_path / "demo"), "--framework", "xgboost")
    assert code == 0, output
    assert "Created demo (xgboost)" in output
    assert "a git repository with a first commit" in output
    root = tmp_path / "demo"
    assert "forgeml new demo" in git(root, "log", "--format=%s")
    assert git(root, "rev-list", "--count", "HEAD").strip() == "1"
    assert git(root, "status", "--porcelain") == ""  # every file is committed
    tracked = set(git(root, "ls-files").split())
    assert {"Makefile", RECORD_FILE, ANSWERS_FILE, "src/demo/program.py"} <= tracked


def test_no_git_leaves_git_alone(tmp_path: Path) -> None:
    code, output = invoke("new", str(tmp_path / "plain"), "--no-git", "--json")
    assert code == 0, output
    assert '"git": false' in output
    assert (tmp_path / "plain" / "Makefile").is_file()
    assert not (tmp_path / "plain" / ".git").exists()


def test_an_existing_folder_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, output = invoke("new", str(tmp_path / "empty"), "--no-git")
    assert code == 0, output

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    code, output = invoke("new", str(taken))
    assert code == 1
    assert "already exists and is not empty" in output
    assert "forgeml new --update" in output
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]  # untouched


def test_names_and_frameworks_are_checked(tmp_path: Path) -> None:
    assert package_name("My-Project") == "my_project"
    with pytest.raises(TemplateError, match="start with a letter"):
        package_name("9lives")
    with pytest.raises(TemplateError, match="would shadow a module"):
        package_name("json")
    with pytest.raises(TemplateError, match="Did you mean 'torch'"):
        new_project(tmp_path / "x", framework="trch")
    assert not (tmp_path / "x").exists()
    code, output = invoke("new", str(tmp_path / "y"), "--framework", "pytorch")
    assert code == 2
    assert "'pytorch' is not one of" in output


def ruff_passes(root: Path) -> None:
    for command in (["check", "--no-cache", "."], ["format", "--no-cache", "--check", "."]):
        done = subprocess.run(
            [str(BIN / "ruff"), *command], cwd=root, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr


#: Free text that would end a string, a line or a recipe if it were pasted unescaped.
NASTY = (
    'Matches \\d digits """ end\n$HOME $(shell id) `id` \'q\' "x" {{ y }} \x7f \u2028 \U0001f600\\'
)


def test_a_free_text_description_is_rendered_safely(tmp_path: Path) -> None:
    code, output = invoke("new", str(tmp_path / "demo"), "--no-git", "--description", NASTY)
    assert code == 0, output
    root = tmp_path / "demo"
    for source in root.rglob("*.py"):
        compile(source.read_text(), str(source), "exec")
    ruff_passes(root)
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    assert pyproject["project"]["description"] == NASTY
    manifest = yaml.safe_load((root / "models" / "demo.yml").read_text())
    assert manifest["description"] == NASTY
    assert load_manifest(root / "models" / "demo.yml").key == ("demo", "sklearn")
    assert yaml.safe_load((root / ANSWERS_FILE).read_text())["description"] == NASTY
    assert NASTY in (root / "README.md").read_text()  # markdown: the text as it is
    for name in ("Makefile", ".envrc", "Dockerfile", "MLproject"):
        assert "Matches" not in (root / name).read_text(), name  # no free text in recipes
    # The answers file keeps it exactly: an update renders the same files again.
    assert not update_project(root).changed


def test_long_names_stay_within_the_generated_line_length(tmp_path: Path) -> None:
    name = "Long-" + "x" * (MAX_NAME - 5)
    root = tmp_path / name
    new_project(root, framework="torch", git=False)
    ruff_passes(root)
    with pytest.raises(TemplateError, match=f"at most {MAX_NAME} characters"):
        package_name(name + "y")


def test_what_lands_in_the_makefile_is_checked(tmp_path: Path) -> None:
    for requirement in ("x'; touch /tmp/p; '", "forgeml $(shell id)", "a\nall:", "f # c", " "):
        with pytest.raises(TemplateError, match="lands in the project's Makefile"):
            new_project(tmp_path / "demo", git=False, forgeml=requirement)
        assert not (tmp_path / "demo").exists()
    with pytest.raises(TemplateError, match="lone surrogate"):
        new_project(tmp_path / "demo", git=False, description="bad \udc80")

    root = tmp_path / "demo"
    new_project(root, git=False, forgeml="forgeml[sklearn]==0.1.0")
    record = (root / RECORD_FILE).read_text()
    (root / RECORD_FILE).write_text(record.replace("forgeml[sklearn]==0.1.0", "x'; id; '"))
    with pytest.raises(TemplateError, match=r"is damaged .*not a safe requirement"):
        update_project(root)


#: Edits of .copier-answers.yml an update refuses, and what it says.
WRONG_ANSWERS = [
    ("project_name: demo", "project_name: 'x; touch /tmp/p'", "must start with a letter"),
    ("project_name: demo", "project_name: json", "would shadow a module"),
    ("project_name: demo", "project_name: [demo]", "it must be text"),
    ("package_name: demo", "package_name: 'x; touch /tmp/p'", "Set it to 'demo'"),
    ("package_name: demo", "package_name: other", "must be 'demo', the package of"),
    ("framework: sklearn", "framework: sklaern", "Did you mean 'sklearn'"),
    ("framework: sklearn", "framework: null", "must be one of keras, sklearn"),
    ("python_version: '3.11'", "python_version: 3.10", "python_version: 3.1 in"),
    ("python_version: '3.11'", "python_version: '3.11\"; x'", "such as '3.11'"),
    ("description: ", "description: [1]\nx: ", "description: [1] in"),
]


def test_update_refuses_wrong_answers_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    new_project(root, git=False, description="A demo.")
    answers = root / ANSWERS_FILE
    original = answers.read_text()
    files = {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and p != answers}
    for old, new, message in WRONG_ANSWERS:
        assert old in original, old
        answers.write_text(original.replace(old, new))
        with pytest.raises(TemplateError) as caught:
            update_project(root)
        text = str(caught.value)
        assert message in text, text
        assert text.startswith(f"The answer {new.partition(':')[0]}: "), text
        assert f"git checkout -- {ANSWERS_FILE}" in text
        assert "Nothing was updated" in text
        assert {p: p.read_bytes() for p in files} == files

    # Answers the template computes are never taken from the file.
    answers.write_text(original + "forgeml_extras: 'x; touch /tmp/p'\nagent: '$(id)'\n")
    result = update_project(root)
    assert not result.changed
    assert "/tmp/p" not in (root / "Makefile").read_text()
    assert set(result.answers) <= {
        "project_name",
        "package_name",
        "framework",
        "description",
        "python_version",
    }


def test_forgeml_requirement_names_this_installation() -> None:
    requirement = forgeml_requirement("torch")
    assert requirement.endswith(("[torch,sklearn,tracking,secrets]", "==0.1.0"))
    if not requirement.startswith("forgeml["):  # installed from a folder: that folder
        assert (Path(requirement.partition("[")[0]) / "pyproject.toml").is_file()


def changed_template(tmp_path: Path) -> Path:
    """A copy of forgeml's template with changes: what a newer forgeml would ship."""
    template = tmp_path / "template"
    shutil.copytree(template_path(), template)
    files = template / "template"
    readme = files / "README.md.jinja"
    readme.write_text(readme.read_text() + "\nSee the forgeml docs for more.\n")
    makefile = files / "Makefile.jinja"
    makefile.write_text(makefile.read_text().replace("PYTHON ?= python3", "PYTHON ?= python3.11"))
    defaults = files / "configs" / "defaults.yml.jinja"
    defaults.write_text(defaults.read_text().replace("c: 1.0 ", "c: 2.0 "))
    (files / "CHANGELOG.md.jinja").write_text("# {{ project_name }} changes\n")
    (files / "configs" / "sites" / "local.yml.jinja").unlink()
    return template


@needs_git
def test_update_applies_template_changes_and_keeps_your_edits(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    new_project(root, framework="sklearn")
    readme = root / "README.md"
    readme.write_text("Our team's notes.\n\n" + readme.read_text())  # merges with the template's
    defaults = root / "configs" / "defaults.yml"
    defaults.write_text(defaults.read_text().replace("c: 1.0 ", "c: 0.5 "))  # so does it: conflict
    program = root / "src" / "demo" / "program.py"
    program.write_text(program.read_text() + "# our change\n")  # the template keeps it as it was
    git(root, "commit", "-q", "-am", "our edits")
    before = program.read_text()

    code, output = invoke(
        "new", "--update", str(root), "--template", str(changed_template(tmp_path))
    )

    assert code == 1, output  # a conflict is an error the user resolves
    assert "updated  Makefile" in output
    assert "merged   README.md (your edits kept)" in output
    assert "added    CHANGELOG.md" in output
    assert "removed  configs/sites/local.yml" in output
    assert "conflict configs/defaults.yml" in output
    assert "Resolve the <<<<<<< markers" in output

    assert "PYTHON ?= python3.11" in (root / "Makefile").read_text()
    merged = readme.read_text()
    assert merged.startswith("Our team's notes.")
    assert merged.endswith("See the forgeml docs for more.\n")
    assert (root / "CHANGELOG.md").read_text() == "# demo changes\n"
    assert not (root / "configs" / "sites" / "local.yml").exists()
    conflicted = defaults.read_text()
    assert "<<<<<<< yours\n  c: 0.5" in conflicted
    assert "  c: 2.0" in conflicted
    assert ">>>>>>> template" in conflicted
    assert program.read_text() == before

    # The record now holds the new rendering: once resolved, a second update has nothing to do.
    defaults.write_text(conflicted.split("<<<<<<< yours\n")[0] + "  c: 0.5\n")
    result = update_project(root, template=tmp_path / "template")
    assert not result.changed
    assert result.conflicts == ()


def test_update_keeps_the_forgeml_requirement_given_to_new(tmp_path: Path) -> None:
    release = "forgeml[sklearn,tracking,secrets]==0.1.0"
    root = tmp_path / "pinned"
    new_project(root, git=False, forgeml=release)
    assert f"FORGEML ?= {release}\n" in (root / "Makefile").read_text()
    code, output = invoke("new", "--update", str(root))
    assert code == 0, output
    assert "is up to date with the forgeml template" in output
    assert f"FORGEML ?= {release}\n" in (root / "Makefile").read_text()


def test_update_needs_a_forgeml_project(tmp_path: Path) -> None:
    code, output = invoke("new", "--update", str(tmp_path))
    assert code == 1
    assert "is not a forgeml project" in output
    code, output = invoke("new", "--update", str(tmp_path), "--framework", "torch")
    assert code == 1
    assert "takes no --framework" in output

    root = tmp_path / "demo"
    new_project(root, git=False)
    (root / RECORD_FILE).write_text('{"files": {"../outside.txt": "x"}}')
    code, output = invoke("new", "--update", str(root))
    assert code == 1
    assert "is damaged (paths outside the project: ../outside.txt)" in output
    (root / RECORD_FILE).unlink()
    code, output = invoke("new", "--update", str(root))
    assert code == 1
    assert f"has no {RECORD_FILE}" in output


def make(root: Path, *args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["FORGEML_HOME"] = str(root / ".forgeml")
    env["MAKEFLAGS"] = ""
    return subprocess.run(
        ["make", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
@needs_git
@needs_make
def test_new_demo_make_test_passes_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    """The acceptance test: forgeml new demo && cd demo && make test, then make eval."""
    code, output = invoke("new", str(tmp_path / "demo"), "--framework", "sklearn")
    assert code == 0, output
    root = tmp_path / "demo"
    done = make(root, "test", timeout=800)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert "3 passed" in done.stdout
    assert (root / ".venv" / "bin" / "forgeml").is_file()  # its own environment
    done = make(root, "eval", timeout=300)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert "test accuracy" in done.stdout
    assert re.search(r"^top1\s+0\.9", done.stdout, re.MULTILINE), done.stdout


@pytest.mark.slow
@pytest.mark.timeout(600)
@needs_make
def test_torch_project_make_test_passes_with_this_environment(tmp_path: Path) -> None:
    root = tmp_path / "vision"
    new_project(root, framework="torch", git=False)
    done = make(root, "test", f"VENV={sys.prefix}", "INIT=", timeout=500)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    assert "3 passed" in done.stdout
