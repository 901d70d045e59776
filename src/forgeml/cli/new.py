"""``forgeml new``: create a project from forgeml's template, or update one from it."""

from __future__ import annotations

import json

import click

from forgeml.template import FRAMEWORKS, ProjectResult, TemplateError, new_project, update_project


@click.command("new")
@click.argument("path", metavar="[NAME]", required=False)
@click.option(
    "-f",
    "--framework",
    type=click.Choice(FRAMEWORKS),
    default=None,
    help="The model's framework (default: sklearn). The project's pyproject installs "
    "forgeml with its extras.",
)
@click.option(
    "--no-git",
    is_flag=True,
    help="Do not make the project a git repository (default: git init and a first commit).",
)
@click.option(
    "--update",
    is_flag=True,
    help="Apply the template's changes to the existing project NAME (default: the current "
    "folder), keeping your edits (three-way merge).",
)
@click.option(
    "--description",
    metavar="TEXT",
    default=None,
    help="One sentence for the README, pyproject.toml and the model's manifest (any text: "
    "it is escaped where it lands).",
)
@click.option(
    "--forgeml",
    "forgeml_req",
    metavar="REQUIREMENT",
    default=None,
    help="The pip requirement 'make init' installs forgeml with (the Makefile's FORGEML). "
    "Default: the folder this forgeml was installed from, else forgeml[...]==VERSION.",
)
@click.option(
    "--template",
    metavar="DIR",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Another copier template folder (one with copier.yml). Default: forgeml's own.",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
def new(
    path: str | None,
    framework: str | None,
    no_git: bool,
    update: bool,
    description: str | None,
    forgeml_req: str | None,
    template: str | None,
    as_json: bool,
) -> None:
    """Create the project NAME from forgeml's template, or update one with --update.

    \b
    The project (a new folder NAME) has:
      pyproject.toml   forgeml with the framework's extras, dev tools (pytest, ruff, mypy)
      configs/         app.yml, defaults.yml, sites/ (local, Slurm settings)
      src/NAME/        program.py (forgeml.app.run + @track.experiment), model.py,
                       data.py (scikit-learn's bundled digits as forgeml.data datasets)
      models/NAME.yml  the trained model's manifest (forgeml eval, serve, package)
      tests/           they pass: make test
      Makefile         init, format, lint, type-check, test, train, eval, package,
                       slurm-launch
      Dockerfile, MLproject (forgeml package), .envrc (forgeml secrets export),
      .gitignore, README.md

    \b
    Examples:
      forgeml new demo && cd demo && make test
      forgeml new vision --framework torch --no-git
      cd demo && forgeml new --update

    --update renders the template of this forgeml again with the project's answers
    (.copier-answers.yml) and merges every file three ways against the last rendering
    (.forgeml-template.json): files you did not edit take the new version, your edits
    stay, and where you and the template changed the same lines the file gets conflict
    markers (<<<<<<< yours ... >>>>>>> template) and the command exits with status 1.
    Commit before updating; nothing is committed for you.
    """
    if update:
        if framework is not None or no_git or description is not None:
            raise TemplateError(
                "--update keeps the project's answers (.copier-answers.yml): it takes no "
                "--framework, --no-git or --description. Run 'forgeml new --update [PATH]'."
            )
        result = update_project(path or ".", template=template, forgeml=forgeml_req)
    else:
        if path is None:
            raise click.UsageError("Give the new project's NAME, e.g. 'forgeml new demo'.")
        result = new_project(
            path,
            framework=framework or "sklearn",
            description=description,
            git=not no_git,
            forgeml=forgeml_req,
            template=template,
        )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    elif update:
        _print_update(result)
    else:
        _print_new(result, path or "")
    if result.conflicts:
        raise TemplateError(
            f"{len(result.conflicts)} file(s) have conflicts between your edits and the "
            f"template's: {', '.join(result.conflicts)}. Resolve the <<<<<<< markers in "
            f"them, then commit."
        )


def _print_new(result: ProjectResult, path: str) -> None:
    answers = result.answers
    git = "a git repository with a first commit" if result.git else "no git repository"
    click.echo(
        f"Created {answers['project_name']} ({answers['framework']}) in {result.path}: "
        f"{len(result.files)} files, {git}."
    )
    for note in result.notes:
        click.echo(f"Note: {note}")
    click.echo("Next:")
    click.echo(f"  cd {path}")
    click.echo("  make init    # .venv with forgeml, the project and the dev tools")
    click.echo("  make train   # train on the bundled digits, tracked (forgeml runs ls)")
    click.echo("  make eval    # accuracy and latency of the trained model")
    click.echo("  make test    # ruff, mypy and pytest")


def _print_update(result: ProjectResult) -> None:
    if not result.changed and not result.kept:
        click.echo(f"{result.path} is up to date with the forgeml template.")
        return
    click.echo(f"Updated {result.path} from the forgeml template:")
    rows = [
        ("updated", result.updated, ""),
        ("merged", result.merged, " (your edits kept)"),
        ("added", result.added, ""),
        ("removed", result.removed, ""),
        ("kept", result.kept, " (yours: you edited or deleted it)"),
        ("conflict", result.conflicts, ""),
    ]
    for label, names, note in rows:
        for name in names:
            click.echo(f"  {label:<9}{name}{note}")
