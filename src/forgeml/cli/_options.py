"""Options shared by the commands' definitions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def option(name: str, *more: str, env: str | None = None, **kwargs: Any) -> Callable[[F], F]:
    """An option spelled with dashes and with underscores: ``--model-name`` and
    ``--model_name`` (MLModelScope users type underscores).

    ``more`` adds spellings (a short ``-o``, or a ``/--no-...`` flag pair); ``env``
    names the environment variable the command reads the option from, shown in
    its help.
    """
    dashed = f"--{name.replace('_', '-')}"
    spellings = [dashed] if "_" not in name else [dashed, f"--{name}"]
    if env is not None:
        kwargs["help"] = f"{kwargs.get('help', '')} [env: {env}]"
    decorator: Callable[[F], F] = click.option(*spellings, *more, name, **kwargs)
    return decorator
