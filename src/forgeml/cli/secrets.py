"""``forgeml secrets``: set, get, list, remove and export credentials; run commands with them."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Any

import click

from forgeml._core._errors import CLIError

if TYPE_CHECKING:
    from forgeml.secrets import SecretStore


@click.group()
def secrets() -> None:
    """Encrypted credentials, handed to jobs as environment variables.

    The file is $FORGEML_SECRETS_FILE, else ~/.config/forgeml/secrets.enc
    (mode 0600). Its key comes from $FORGEML_SECRETS_KEY, else the OS keyring,
    where the first `set` creates it. Without a keyring (servers, CI), run
    `export FORGEML_SECRETS_KEY=$(forgeml secrets keygen)` first.

    \b
    Examples:
      forgeml secrets set DB_PASSWORD            # prompts; nothing is echoed
      printf %s "$TOKEN" | forgeml secrets set API_TOKEN
      forgeml secrets ls
      forgeml secrets env -- python train.py     # the job sees $DB_PASSWORD
      forgeml secrets export > .envrc            # for direnv
    """


@secrets.command("set", short_help="Store a secret (prompted for, not echoed).")
@click.argument("name")
def set_(name: str) -> None:
    """Store secret NAME: its value is prompted for (not echoed), or read from stdin.

    A value piped on stdin is stored as given, less one final newline.

    \b
    Examples:
      forgeml secrets set DB_PASSWORD
      forgeml secrets set SSH_KEY < ~/.ssh/deploy_key
    """
    from forgeml.secrets import MIN_LENGTH, check_name

    check_name(name)
    if sys.stdin is not None and sys.stdin.isatty():
        value = click.prompt(
            f"Value of {name}", hide_input=True, confirmation_prompt=True, err=True
        )
    else:
        value = sys.stdin.read()
        value = value.removesuffix("\n").removesuffix("\r")
    store = _store()
    store.set(name, value)
    click.echo(f"Saved secret {name} in {store.path}.", err=True)
    if len(value) < MIN_LENGTH:
        click.echo(
            f"Warning: values shorter than {MIN_LENGTH} characters are not masked in logs.",
            err=True,
        )


@secrets.command("get")
@click.argument("name")
def get(name: str) -> None:
    """Print the value of secret NAME (and nothing else) on stdout.

    \b
    Example:
      psql "postgresql://me:$(forgeml secrets get DB_PASSWORD)@db/app"
    """
    click.echo(_store().get(name))


@secrets.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of names.")
def ls(as_json: bool) -> None:
    """List the names of the stored secrets (never their values)."""
    names = _store().names()
    if as_json:
        click.echo(json.dumps(names))
    elif names:
        click.echo("\n".join(names))


@secrets.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
def rm(names: tuple[str, ...]) -> None:
    """Remove secrets; if one NAME is unknown, none is removed."""
    _store().remove(*names)
    click.echo(f"Removed {', '.join(names)}.", err=True)


@secrets.command("export", short_help="Print export lines for a shell or a .envrc.")
@click.argument("names", nargs=-1, metavar="[NAME]...")
def export(names: tuple[str, ...]) -> None:
    """Print `export NAME=VALUE` lines for a shell or a direnv .envrc (all secrets, or NAMEs).

    Values are quoted for POSIX shells. A last line sets FORGEML_SECRET_NAMES,
    so that forgeml jobs started from that shell mask these values in their logs.

    \b
    Examples:
      eval "$(forgeml secrets export DB_PASSWORD)"
      forgeml secrets export > .envrc && direnv allow
    """
    from forgeml.secrets._mask import NAMES_VAR

    chosen = _store().select(names or None)
    lines = [f"export {name}={shlex.quote(value)}" for name, value in sorted(chosen.items())]
    if chosen:
        lines.append(f"export {NAMES_VAR}={','.join(sorted(chosen))}")
        click.echo("\n".join(lines))


@secrets.command(
    "env",
    short_help="Run a command with the secrets in its environment.",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--name",
    "-n",
    "names",
    multiple=True,
    metavar="NAME",
    help="Only this secret (repeat for more); default: all.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def env(ctx: click.Context, names: tuple[str, ...], command: tuple[str, ...]) -> None:
    """Run COMMAND with the secrets in its environment; exit with its exit status.

    COMMAND runs directly (no shell). FORGEML_SECRET_NAMES tells forgeml jobs
    which variables to mask in their logs and tracebacks.

    \b
    Examples:
      forgeml secrets env -- python train.py --cfg configs/exp.yml
      forgeml secrets env -n DB_PASSWORD -- ./migrate.sh
    """
    from forgeml.secrets import inject

    environ = inject(names=names or None, store=_store())  # decrypted before anything runs
    ctx.exit(_run(list(command), environ))


@secrets.command("keygen", short_help="Print a new key for FORGEML_SECRETS_KEY.")
def keygen() -> None:
    """Print a new random key, for FORGEML_SECRETS_KEY on machines without a keyring.

    \b
    Example:
      export FORGEML_SECRETS_KEY=$(forgeml secrets keygen)
    """
    from forgeml.secrets import generate_key

    click.echo(generate_key())


# ----------------------------------------------------------------------------- helpers


def _store() -> SecretStore:
    from forgeml.secrets import SecretStore

    return SecretStore()


def _run(command: list[str], environ: dict[str, str]) -> int:
    """Run ``command``; forward SIGTERM/SIGHUP to it; its status (128+N if killed by signal N)."""
    try:
        child = subprocess.Popen(command, env=environ)
    except FileNotFoundError:
        raise CLIError(f"Cannot run {command[0]!r}: no such command.") from None
    except PermissionError:
        raise CLIError(f"Cannot run {command[0]!r}: permission denied.") from None
    forwarded = (signal.SIGTERM, signal.SIGHUP)
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def forward(signum: int, frame: Any) -> None:
            child.send_signal(signum)

        for signum in forwarded:
            previous[signum] = signal.signal(signum, forward)
        # Ctrl-C reaches the child through the terminal; wait for it to finish.
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = child.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return 128 - code if code < 0 else code
