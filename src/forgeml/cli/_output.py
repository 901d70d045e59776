"""Console output shared by the commands."""

from __future__ import annotations

from typing import Any


def print_table(renderable: Any) -> None:
    """Print a rich table (or any renderable) to stdout.

    On a terminal it fits the window; piped (grep, awk, a file) each row stays on
    one line and nothing is cut short.
    """
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(width=100_000, highlight=False)
    console.print(renderable)
