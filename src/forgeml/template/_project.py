"""``forgeml new``: render the project template with copier, and update a project from it.

A project remembers how it was made in two files at its root: ``.copier-answers.yml``
(the answers: name, framework, ...) and ``.forgeml-template.json`` (every file as the
template last rendered it). ``update_project`` renders the template again with the same
answers and merges each file three ways, as git does: the last rendering is the base, the
project's file is "yours", the new rendering is "theirs". Files you did not touch take
the template's new version; files the template did not change keep yours; where both
changed, ``git merge-file`` merges them, leaving conflict markers where the same lines
changed. This needs no git history of the template, so it works offline, from an
installed forgeml, and after forgeml upgrades.
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import json
import keyword
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from forgeml._core._errors import TemplateError, did_you_mean
from forgeml._core._files import atomic_write_bytes, atomic_write_text
from forgeml._version import __version__

#: The frameworks a project can be made for (``--framework``).
FRAMEWORKS = ("keras", "sklearn", "torch", "xgboost")
#: forgeml's extras a project of each framework needs: the framework, scikit-learn (the
#: bundled digits), tracking (MLflow) and secrets.
EXTRAS = {
    "keras": "keras,tensorflow,sklearn,tracking,secrets",
    "sklearn": "sklearn,tracking,secrets",
    "torch": "torch,sklearn,tracking,secrets",
    "xgboost": "xgboost,sklearn,tracking,secrets",
}
#: The frameworks whose packages a project's image installs (``forgeml.package``).
PACKAGE_FRAMEWORKS = {
    "keras": ["keras", "tensorflow", "sklearn"],
    "sklearn": ["sklearn"],
    "torch": ["torch", "sklearn"],
    "xgboost": ["xgboost", "sklearn"],
}
ANSWERS_FILE = ".copier-answers.yml"
#: The longest project name: the generated code stays within its 100-character lines.
MAX_NAME = 40
#: The answers a project keeps (the others are computed at every rendering).
_STORED = ("project_name", "package_name", "framework", "description", "python_version")
RECORD_FILE = ".forgeml-template.json"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_PYTHON_VERSION = re.compile(r"^3\.[0-9]{1,2}$")
#: Characters a Makefile variable cannot hold safely (quoting, expansion, comments).
_UNSAFE_IN_MAKE = frozenset("'\"$`\\#")
#: Escapes of ``_quoted``: the same in TOML, YAML and Python double-quoted strings.
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}
#: Package names that would shadow what the project imports.
_TAKEN = {"forgeml", "tests", "test", "src", "torch", "sklearn", "keras", "xgboost", "numpy"}


@dataclass(frozen=True)
class ProjectResult:
    """What ``new_project`` or ``update_project`` did to the project at ``path``.

    ``files`` lists every file of the rendering. For an update, each file the template
    changed lands in one list: ``updated`` (you had not edited it: the new version),
    ``merged`` (both changed it: merged, your edits kept), ``conflicts`` (both changed the
    same lines: the file has conflict markers), ``added``, ``removed`` (you had not edited
    it), or ``kept`` (you deleted or edited a file the template changed or removed: yours
    stays as it is).
    """

    path: Path
    answers: dict[str, Any]
    files: tuple[str, ...]
    git: bool = False
    updated: tuple[str, ...] = ()
    merged: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> bool:
        """True when the update wrote, merged, added or removed anything."""
        return bool(self.updated or self.merged or self.conflicts or self.added or self.removed)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def template_path() -> Path:
    """The folder of the copier template that ships with forgeml (``copier.yml`` inside)."""
    return Path(__file__).resolve().parent / "project"


def forgeml_requirement(framework: str) -> str:
    """The pip requirement a project's ``make init`` installs forgeml with.

    The folder forgeml was installed from when it was installed from a local folder
    (a checkout, editable or not), with the framework's extras; else the release
    ``forgeml[extras]==<this version>``.
    """
    extras = EXTRAS[_check_framework(framework)]
    source = _local_source()
    if source is not None:
        return f"{source}[{extras}]"
    return f"forgeml[{extras}]=={__version__}"


def _local_source() -> str | None:
    import importlib.metadata

    try:
        text = importlib.metadata.distribution("forgeml").read_text("direct_url.json")
    except importlib.metadata.PackageNotFoundError:
        text = None
        checkout = Path(__file__).resolve().parents[3]  # src/forgeml/template/_project.py
        if (checkout / "pyproject.toml").is_file() and (checkout / "src" / "forgeml").is_dir():
            return str(checkout)
    if not text:
        return None
    with contextlib.suppress(ValueError):
        info = json.loads(text)
        url = info.get("url", "")
        if url.startswith("file://") and "dir_info" in info:
            return unquote(urlparse(url).path)
    return None


def _check_framework(framework: str) -> str:
    if framework not in FRAMEWORKS:
        raise TemplateError(
            f"Unknown framework '{framework}'. Known: {', '.join(FRAMEWORKS)}."
            + did_you_mean(framework, FRAMEWORKS)
        )
    return framework


def _check_description(description: object) -> str:
    if not isinstance(description, str):
        raise TemplateError(
            f"A project's description must be text. Got {description!r} "
            f"({type(description).__name__}): quote it."
        )
    try:
        description.encode("utf-8")
    except UnicodeEncodeError:
        raise TemplateError(
            f"A project's description must be valid Unicode text. Got {description!r}, which "
            f"holds a lone surrogate: remove it."
        ) from None
    return description


def _unsafe_in_make(text: str) -> list[str]:
    return sorted({c for c in text if c in _UNSAFE_IN_MAKE or not c.isprintable()})


def _check_requirement(requirement: str) -> str:
    """A pip requirement for the Makefile's ``FORGEML ?= ...``, which its recipes quote."""
    unsafe = _unsafe_in_make(requirement)
    if not requirement.strip() or unsafe:
        raise TemplateError(
            f"The forgeml requirement (--forgeml) lands in the project's Makefile, so it may "
            f"not be empty or hold quotes, '$', '`', '\\', '#' or control characters. Got "
            f"{requirement!r}"
            + (f" (with {', '.join(repr(c) for c in unsafe)})" if unsafe else "")
            + ". Give a pip requirement such as 'forgeml[sklearn]==0.1.0' or a folder path."
        )
    return requirement


def _quoted(text: str) -> str:
    """``text`` as a double-quoted string that TOML, YAML and Python all read as ``text``.

    Quotes, backslashes and line breaks are escaped, and so is every character that is
    not printable (``\\uXXXX``), so that free text cannot end the string or the line.
    """
    out = ['"']
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) > 0xFFFF:
            out.append(f"\\U{ord(char):08x}")
        else:
            out.append(f"\\u{ord(char):04x}")
    out.append('"')
    return "".join(out)


def package_name(project_name: str) -> str:
    """The Python package of a project: its name in lower case, ``-`` as ``_``.

    Raises ``TemplateError`` for names that are not valid, or that would shadow a module
    the project imports.
    """
    if not _NAME.match(project_name):
        raise TemplateError(
            f"A project's name must start with a letter and hold only letters, digits, '-' "
            f"and '_' (it names the folder, the distribution and the package). "
            f"Got '{project_name}'."
        )
    if len(project_name) > MAX_NAME:
        raise TemplateError(
            f"A project's name may have at most {MAX_NAME} characters (it names the package, "
            f"and longer names push the generated code past its line length). Got "
            f"'{project_name}' ({len(project_name)} characters): choose a shorter name."
        )
    package = project_name.lower().replace("-", "_")
    if keyword.iskeyword(package) or package in _TAKEN or package in sys.stdlib_module_names:
        raise TemplateError(
            f"The project name '{project_name}' gives the package '{package}', which would "
            f"shadow a module of that name. Choose another name, e.g. '{package}_project'."
        )
    return package


def new_project(
    path: str | os.PathLike[str],
    *,
    framework: str = "sklearn",
    name: str | None = None,
    description: str | None = None,
    git: bool = True,
    forgeml: str | None = None,
    template: str | os.PathLike[str] | None = None,
) -> ProjectResult:
    """Create a project in the folder ``path`` (new, or empty) from the template.

    Args:
        path: the project's folder; its name is the project's name unless ``name``.
        framework: the model's framework: ``sklearn``, ``torch``, ``xgboost`` or ``keras``.
        name: the project's name (default: the folder's name).
        description: one sentence for the README and pyproject.
        git: make the folder a git repository with the files in a first commit.
        forgeml: the pip requirement ``make init`` installs forgeml with (default:
            :func:`forgeml_requirement`).
        template: another copier template folder (default: :func:`template_path`).
    """
    target = Path(path).absolute()
    project = name or target.name
    answers: dict[str, Any] = {
        "project_name": project,
        "package_name": package_name(project),
        "framework": _check_framework(framework),
    }
    if description is not None:
        answers["description"] = _check_description(description)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise TemplateError(
            f"'{target}' already exists and is not empty: forgeml new writes only into a new "
            f"or empty folder. Choose another name, or run 'forgeml new --update' inside an "
            f"existing forgeml project to apply template changes to it."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.", dir=target.parent) as tmp:
        staging = Path(tmp) / "project"
        files, answers = _render(template, answers, staging, forgeml=forgeml)
        _write_record(staging, files, forgeml=forgeml)
        if target.exists():
            target.rmdir()
        os.replace(staging, target)
    made_git = False
    notes: list[str] = []
    if git:
        made_git, note = _git_init(target, f"forgeml new {project} (forgeml {__version__})")
        if note:
            notes.append(note)
    return ProjectResult(
        path=target,
        answers=answers,
        files=tuple(sorted([*files, RECORD_FILE])),
        git=made_git,
        notes=tuple(notes),
    )


def update_project(
    path: str | os.PathLike[str] = ".",
    *,
    template: str | os.PathLike[str] | None = None,
    forgeml: str | None = None,
) -> ProjectResult:
    """Apply the template's changes to the project at ``path``, keeping your edits.

    Renders the template again with the project's answers and merges every file
    three ways (see the module's docstring). Merges happen in the working tree and
    nothing is committed: commit first, so that ``git diff`` shows the update.
    Conflicts are reported in ``conflicts``, not raised.
    """
    root = Path(path).absolute()
    answers = _read_answers(root)
    base, given = _read_record(root)
    forgeml = forgeml or given  # a requirement given to forgeml new stays
    with tempfile.TemporaryDirectory(prefix="forgeml-update-") as tmp:
        staging = Path(tmp) / "project"
        new, answers = _render(template, answers, staging, forgeml=forgeml)
        result = _merge(root, base, new)
        _write_record(root, new, forgeml=forgeml)
    return ProjectResult(path=root, answers=answers, files=tuple(sorted(new)), **result)


# --- rendering ---------------------------------------------------------------------------


def _render(
    template: str | os.PathLike[str] | None,
    answers: Mapping[str, Any],
    destination: Path,
    *,
    forgeml: str | None,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Render the template into ``destination``; returns its files and the answers used."""
    source = Path(template).absolute() if template is not None else template_path()
    if not (source / "copier.yml").is_file() and not (source / "copier.yaml").is_file():
        raise TemplateError(
            f"'{source}' is not a copier template: it has no copier.yml. Give the folder that "
            f"holds copier.yml, or leave the template out to use forgeml's."
        )
    framework = str(answers["framework"])
    data = {
        **{k: v for k, v in answers.items() if not k.startswith("_")},
        "forgeml_requirement": _check_requirement(forgeml or forgeml_requirement(framework)),
        "forgeml_version": __version__,
    }
    if "description" in answers:  # else the template's default (its own quoting)
        data["description_quoted"] = _quoted(_check_description(answers["description"]))
    import copier

    try:
        worker = copier.run_copy(
            str(source),
            destination,
            data=data,
            defaults=True,
            overwrite=True,
            quiet=True,
            unsafe=False,
        )
    except Exception as exc:  # copier raises many kinds (validation, Jinja, YAML)
        raise TemplateError(f"The template at '{source}' failed to render: {exc}") from exc
    combined = worker.answers.combined
    used = {k: combined[k] for k in _STORED if k in combined}
    _add_package_files(destination, used)
    files = {
        p.relative_to(destination).as_posix(): p.read_bytes()
        for p in sorted(destination.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(destination).parts
    }
    files.pop(RECORD_FILE, None)
    return files, used


def _add_package_files(destination: Path, answers: Mapping[str, Any]) -> None:
    """The project's Dockerfile, MLproject and .dockerignore, from ``forgeml package``."""
    try:
        from forgeml.package import project_files
    except ImportError:
        return  # a forgeml without the packaging module: the template's files stay
    package = str(answers["package_name"])
    options: dict[str, Any] = {
        "name": str(answers["project_name"]),
        "frameworks": PACKAGE_FRAMEWORKS[str(answers["framework"])],
        "command": ["python", "-m", f"{package}.program", "--cfg", "configs/app.yml"],
        "python": str(answers.get("python_version", "3.11")),
    }
    if "install_project" in inspect.signature(project_files).parameters:
        options["install_project"] = True  # the image runs the project's package
    files: Mapping[str, str] = project_files(**options)
    for name, text in files.items():
        atomic_write_text(destination / name, text)


def _write_record(root: Path, files: Mapping[str, bytes], *, forgeml: str | None) -> None:
    record = {
        "comment": "The files as forgeml's template last rendered them: the base that "
        "'forgeml new --update' merges from. Do not edit.",
        "forgeml_version": __version__,
        # --forgeml, when given: an update keeps it (else it names the running forgeml).
        "forgeml_requirement": forgeml,
        "files": {name: _encode(data) for name, data in sorted(files.items())},
    }
    atomic_write_text(root / RECORD_FILE, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _read_answers(root: Path) -> dict[str, Any]:
    import yaml

    path = root / ANSWERS_FILE
    if not path.is_file():
        raise TemplateError(
            f"'{root}' is not a forgeml project: it has no {ANSWERS_FILE}. Run "
            f"'forgeml new --update' in a folder made with 'forgeml new', or create one with "
            f"'forgeml new NAME'."
        )
    try:
        answers = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TemplateError(
            f"{path} is not valid YAML ({exc}). Restore it from git: git checkout -- {ANSWERS_FILE}"
        ) from None
    if not isinstance(answers, dict) or "project_name" not in answers:
        raise TemplateError(
            f"{path} does not hold a project's answers (project_name, framework, ...). "
            f"Restore it from git: git checkout -- {ANSWERS_FILE}"
        )
    return _check_answers(answers, path)


def _check_answers(answers: Mapping[Any, Any], path: Path) -> dict[str, Any]:
    """The answers an update renders with, checked as ``new_project`` checks its arguments.

    The file is text anyone can edit, and its values land in the Makefile, pyproject.toml
    and the package's folder: a wrong one is refused, never rendered. Only the answers a
    project keeps are used (the template computes the others).
    """

    def wrong(key: str, why: str, fix: str) -> TemplateError:
        return TemplateError(
            f"The answer {key}: {answers.get(key)!r} in {path} is wrong: {why} Nothing was "
            f"updated. {fix} (or restore the file from git: git checkout -- {ANSWERS_FILE}), "
            f"then run 'forgeml new --update' again."
        )

    project = answers["project_name"]
    if not isinstance(project, str):
        raise wrong("project_name", "it must be text.", "Set it to the project's name")
    try:
        package = package_name(project)
    except TemplateError as exc:
        raise wrong("project_name", str(exc), "Set it to the project's name") from None
    stored = answers.get("package_name", package)
    if not isinstance(stored, str) or not stored.isidentifier() or stored != package:
        raise wrong(
            "package_name",
            f"it must be '{package}', the package of project_name '{project}'.",
            f"Set it to '{package}'",
        )
    framework = answers.get("framework")
    if framework not in FRAMEWORKS:
        raise wrong(
            "framework",
            f"it must be one of {', '.join(FRAMEWORKS)}."
            + did_you_mean(str(framework), FRAMEWORKS),
            "Set it to the framework the project was made for",
        )
    checked: dict[str, Any] = {"project_name": project, "package_name": package}
    checked["framework"] = framework
    if "description" in answers:
        description = answers["description"]
        if not isinstance(description, str):
            raise wrong("description", "it must be text.", "Quote it")
        try:
            checked["description"] = _check_description(description)
        except TemplateError as exc:
            raise wrong("description", str(exc), "Correct it") from None
    if "python_version" in answers:
        version = answers["python_version"]
        if not isinstance(version, str) or not _PYTHON_VERSION.match(version):
            raise wrong(
                "python_version",
                "it must be a Python version as quoted text, such as '3.11'.",
                "Set it to the version as quoted text, such as '3.11'",
            )
        checked["python_version"] = version
    return checked


def _encode(data: bytes) -> str | dict[str, str]:
    """A file in the record: its text, or ``{"base64": ...}`` when it is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode("ascii")}


def _decode(value: object) -> bytes:
    if isinstance(value, dict):
        return base64.b64decode(str(value["base64"]))
    return str(value).encode("utf-8")


def _read_record(root: Path) -> tuple[dict[str, bytes], str | None]:
    """The files of the last rendering, and the ``--forgeml`` requirement it was given."""
    path = root / RECORD_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        files = {str(name): _decode(value) for name, value in record["files"].items()}
        outside = [n for n in files if Path(n).is_absolute() or ".." in Path(n).parts]
        if outside:
            raise ValueError(f"paths outside the project: {', '.join(outside)}")
        given = record.get("forgeml_requirement")
        if given and _unsafe_in_make(str(given)):
            raise ValueError(f"forgeml_requirement {given!r} is not a safe requirement")
        return files, str(given) if given else None
    except FileNotFoundError:
        raise TemplateError(
            f"{root} has no {RECORD_FILE}, the record of the template's last rendering "
            f"that an update merges from. Restore it from git (git checkout -- {RECORD_FILE})."
        ) from None
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        raise TemplateError(
            f"{path} is damaged ({exc}). Restore it from git: git checkout -- {RECORD_FILE}"
        ) from None


# --- merging -----------------------------------------------------------------------------


def _merge(root: Path, base: Mapping[str, bytes], new: Mapping[str, bytes]) -> dict[str, Any]:
    lists: dict[str, list[str]] = {
        k: [] for k in ("updated", "merged", "conflicts", "added", "removed", "kept")
    }
    for name in sorted(set(base) | set(new)):
        old, theirs = base.get(name), new.get(name)
        if old == theirs:
            continue  # the template did not change it: the project's file stays as it is
        target = root / name
        yours = target.read_bytes() if target.is_file() else None
        if yours == theirs:
            continue
        if theirs is None:  # the template removed it
            if yours == old:
                target.unlink()
                lists["removed"].append(name)
            elif yours is not None:
                lists["kept"].append(name)
        elif yours is None:
            if old is None:
                atomic_write_bytes(target, theirs)
                lists["added"].append(name)
            else:
                lists["kept"].append(name)  # you deleted it: it stays deleted
        elif yours == old:
            atomic_write_bytes(target, theirs)
            lists["updated"].append(name)
        elif b"\0" in yours + theirs + (old or b""):  # binary: no line merge, yours stays
            lists["conflicts"].append(name)
        else:
            merged, clean = _merge_file(yours, old or b"", theirs)
            atomic_write_bytes(target, merged)
            lists["merged" if clean else "conflicts"].append(name)
    return {k: tuple(v) for k, v in lists.items()}


def _merge_file(yours: bytes, base: bytes, theirs: bytes) -> tuple[bytes, bool]:
    """``git merge-file`` of three versions: the merged text, and whether it is clean."""
    git = shutil.which("git")
    if git is None:
        raise TemplateError(
            "Updating a project needs git (git merge-file merges your edits with the "
            "template's): install git and run 'forgeml new --update' again."
        )
    with _scratch() as tmp:
        paths = []
        for label, data in (("yours", yours), ("base", base), ("theirs", theirs)):
            file = tmp / label
            file.write_bytes(data)
            paths.append(str(file))
        done = subprocess.run(
            [
                git,
                "merge-file",
                "-p",
                "-L",
                "yours",
                "-L",
                "template (before)",
                "-L",
                f"template (forgeml {__version__})",
                *paths,
            ],
            capture_output=True,
            check=False,
        )
    if done.returncode < 0 or done.returncode > 127:
        raise TemplateError(f"git merge-file failed: {done.stderr.decode(errors='replace')}")
    return done.stdout, done.returncode == 0


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="forgeml-merge-") as tmp:
        yield Path(tmp)


# --- git ---------------------------------------------------------------------------------


def _git_init(root: Path, message: str) -> tuple[bool, str]:
    """Make ``root`` a git repository with every file in a first commit.

    Returns whether it did, and a note when it could not (git missing or failing).
    """
    git = shutil.which("git")
    if git is None:
        return False, "git is not installed: the project is not a git repository (git init)."
    base = [git, "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false"]
    identity = subprocess.run(
        [git, "config", "user.email"], cwd=root, capture_output=True, text=True, check=False
    )
    if not identity.stdout.strip():  # no identity configured: commit as forgeml
        base += ["-c", "user.name=forgeml", "-c", "user.email=forgeml@localhost"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", message]):
        done = subprocess.run([*base, *args], cwd=root, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return False, f"git {args[0]} failed ({done.stderr.strip()}): commit by hand."
    return True, ""
