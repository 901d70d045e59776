"""Small text formats shared by messages and command output."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """``"12.3 s"`` under a minute, else ``"M:SS"``, or ``"H:MM:SS"`` from an hour on."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
