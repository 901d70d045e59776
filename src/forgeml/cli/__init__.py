"""The ``forgeml`` command: a click group whose subcommands load only when they run."""

from __future__ import annotations

import importlib
import sys
from typing import Any, NoReturn

import click

from forgeml._core._errors import ForgeMLError, did_you_mean
from forgeml._version import __version__

#: name -> ("module:attribute", one-line help shown by ``forgeml --help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "config": ("forgeml.cli.config:config", "Show resolved configuration files."),
    "eval": ("forgeml.cli.eval:eval_command", "Evaluate models: accuracy, latency, throughput."),
    "export": (
        "forgeml.cli.export:export_command",
        "Export a model to ONNX, TorchScript or TensorRT, checked against it.",
    ),
    "jobs": ("forgeml.cli.jobs:jobs", "Launch, watch, stop and relaunch Slurm jobs and arrays."),
    "models": ("forgeml.cli.models:models", "List, show, add and build models (the zoo)."),
    "new": ("forgeml.cli.new:new", "Create a project from the forgeml template (or update one)."),
    "package": (
        "forgeml.cli.package:package",
        "Write a Docker/Apptainer build context that serves a model.",
    ),
    "ps": ("forgeml.cli.daemons:ps", "List daemons started with -d/--daemon."),
    "repo": ("forgeml.cli.repo:repo", "List, show and remove objects stored in a Repo."),
    "report": ("forgeml.cli.report:report", "Write an HTML report of evaluations: plots, tables."),
    "results": ("forgeml.cli.results:results", "List, show, compare and export evaluations."),
    "runs": ("forgeml.cli.runs:runs", "List, show and compare tracked runs (MLflow)."),
    "secrets": ("forgeml.cli.secrets:secrets", "Store credentials encrypted; run jobs with them."),
    "serve": ("forgeml.cli.serve:serve", "Serve a model over HTTP with dynamic batching."),
    "stop": ("forgeml.cli.daemons:stop", "Stop daemons by pid or program name."),
    "store": ("forgeml.cli.store:store", "List, copy, remove and size files at paths or URLs."),
    "trace": ("forgeml.cli.trace:trace", "Summarise trace files: where the time goes."),
    "track": ("forgeml.cli.track:track", "Show the tracking store; sync runs recorded offline."),
    "tune": ("forgeml.cli.tune:tune", "Search hyperparameters with Optuna; show studies."),
}


class LazyGroup(click.Group):
    """A group that imports a subcommand's module only when that subcommand runs."""

    def __init__(self, *args: Any, commands: dict[str, tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.lazy, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module_name, _, attr = self.lazy[cmd_name][0].partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy[cmd_name][0]} is not a click command")
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in self.list_commands(ctx):
            raise click.UsageError(
                f"No such command '{name}'.{did_you_mean(name, self.list_commands(ctx))}"
                f" Run 'forgeml --help' for the list.",
                ctx,
            )
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        # Errors the user can fix read "Error: ..." with exit code 1, however the
        # group is called (console script, ``python -m forgeml``, CliRunner).
        try:
            return super().invoke(ctx)
        except ForgeMLError as exc:
            raise click.ClickException(str(exc)) from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][1]) for name in sorted(self.lazy)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    commands=COMMANDS,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "-V", "--version", prog_name="forgeml")
def cli() -> None:
    """forgeml: configs, launching, tracking, evaluation, export and serving for ML projects.

    Run 'forgeml COMMAND --help' for a command's options.
    """


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point of the ``forgeml`` console script; always ends with ``SystemExit``."""
    cli.main(args=argv, prog_name="forgeml")
    sys.exit(0)  # not reached: click's standalone mode exits


__all__ = ["COMMANDS", "LazyGroup", "cli", "main"]
