"""One log format for the console and the log file of a run."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from forgeml.config import Config

FORMAT = "%(asctime)s %(levelname)-7s %(name)s [pid %(process)d{rank}]: %(message)s"
_MARK = "_forgeml_handler"


def script_name() -> str:
    """The running program's name: ``train`` for ``python train.py``, else ``forgeml``."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else ""
    return Path(argv0).stem or "forgeml"


def default_logfile(rank: int | None = None) -> Path:
    suffix = f"-rank{rank}" if rank is not None and rank >= 0 else ""
    return Path.cwd() / f"{script_name()}-{os.getpid()}{suffix}.log"


def setup_logging(cfg: Config, rank: int | None = None, *, console: bool = True) -> Path | None:
    """Configure the root logger for a run; returns the log file, if one is written.

    ``-L``/``--logging`` (or ``--logfile``, or daemon mode) adds a file handler
    at ``<script>-<pid>[-rank<r>].log``. Handlers from an earlier call are replaced.

    Every process of a run sets up its logging here (the launcher, a daemon after
    it detaches, each distributed worker), so this is also where the secrets
    handed to the job (``forgeml secrets env``) start being masked in its logs
    and tracebacks.
    """
    _mask_secrets_if_any()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
        handler.close()
    rank_text = f" rank {rank}" if rank is not None and rank >= 0 else ""
    formatter = logging.Formatter(FORMAT.format(rank=rank_text))
    if root.level == logging.WARNING or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    handlers: list[logging.Handler] = []
    if console and not any(not getattr(h, _MARK, False) for h in root.handlers):
        handlers.append(logging.StreamHandler(sys.stderr))
    logfile: Path | None = None
    if cfg.get("logging") or cfg.get("logfile") or cfg.get("daemon"):
        given = cfg.get("logfile")
        if given and rank is not None and rank > 0:
            base = Path(given)
            logfile = base.with_name(f"{base.stem}-rank{rank}{base.suffix}")
        else:
            logfile = Path(given) if given else default_logfile(rank)
        logfile.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(logfile, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        setattr(handler, _MARK, True)
        root.addHandler(handler)
    logging.captureWarnings(True)
    return logfile


def _mask_secrets_if_any() -> None:
    """Mask secrets handed to this job (``$FORGEML_SECRET_NAMES``) in its logs and tracebacks."""
    if os.environ.get("FORGEML_SECRET_NAMES"):
        from forgeml.secrets import install_log_masking

        install_log_masking()
