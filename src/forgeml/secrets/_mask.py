"""Masking: secret values never reach logs, tracebacks, params or config dumps.

The masker knows these values: those this process loaded from the secrets
file (or passed to :func:`add_mask`), those of the environment variables named
in ``FORGEML_SECRET_NAMES``, which ``forgeml secrets env`` and
:func:`forgeml.secrets.inject` set for the jobs they launch (a job therefore
masks its secrets without holding the key to the file), and the key itself
when ``FORGEML_SECRETS_KEY`` holds it.

Values shorter than :data:`MIN_LENGTH` characters are not masked: masking
``"1"`` or ``"yes"`` everywhere would garble every log line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import traceback
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

#: What a masked value reads as.
MASK = "***"
#: Shorter values are not masked.
MIN_LENGTH = 4
#: The environment variable listing (comma-separated) the names of secrets in the environment.
NAMES_VAR = "FORGEML_SECRET_NAMES"
#: The environment variable that may hold the secrets key (masked too).
KEY_VAR = "FORGEML_SECRETS_KEY"

_lock = threading.Lock()
_registered: set[str] = set()
_version = 0
_cache: tuple[object, re.Pattern[str] | None] = (None, None)


def add_mask(*values: str) -> None:
    """Mask these values from now on in this process (values shorter than 4 are ignored)."""
    global _version
    new = {v for v in values if isinstance(v, str) and len(v) >= MIN_LENGTH}
    with _lock:
        if not new <= _registered:
            _registered.update(new)
            _version += 1


def _env_values() -> tuple[str, ...]:
    """Values of the variables named in ``FORGEML_SECRET_NAMES``, and the secrets key."""
    names = os.environ.get(NAMES_VAR, "")
    found = [os.environ.get(n.strip()) for n in names.split(",")] if names else []
    found.append(os.environ.get(KEY_VAR))
    return tuple(v for v in found if v is not None and len(v) >= MIN_LENGTH)


def _variants(value: str) -> set[str]:
    """The value as written, and as it reads inside JSON, a repr and a URL."""
    forms = {value, json.dumps(value)[1:-1], repr(value)[1:-1], urllib.parse.quote(value, safe="")}
    return {f for f in forms if len(f) >= MIN_LENGTH}


def _pattern() -> re.Pattern[str] | None:
    global _cache
    env_values = _env_values()
    key = (_version, env_values)
    cached_key, pattern = _cache
    if cached_key == key:
        return pattern
    with _lock:
        values = set(_registered)
    values.update(env_values)
    forms: set[str] = set()
    for value in values:
        forms |= _variants(value)
    # Longest first, so a secret that contains another is masked whole.
    ordered = sorted(forms, key=lambda f: (-len(f), f))
    pattern = re.compile("|".join(re.escape(f) for f in ordered)) if ordered else None
    _cache = (key, pattern)
    return pattern


def has_secrets() -> bool:
    """True when there is something to mask."""
    return _pattern() is not None


def mask(text: str) -> str:
    """``text`` with every known secret value replaced by ``***``."""
    pattern = _pattern()
    if pattern is None or not isinstance(text, str):
        return text
    return pattern.sub(MASK, text)


def mask_tree(value: Any) -> Any:
    """A copy of ``value`` with secrets masked in every string of nested dicts, lists and tuples.

    For params, configs and payloads before they are logged or written. Other
    objects are returned unchanged (mask their text form with :func:`mask`).
    """
    if _pattern() is None:
        return value
    return _mask_tree(value)


def _mask_tree(value: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, Mapping):
        items = {_mask_tree(k): _mask_tree(v) for k, v in value.items()}
        try:
            return type(value)(items)  # type: ignore[call-arg]  # dict subclasses (Config)
        except Exception:
            return items
    if isinstance(value, list | tuple | set | frozenset):
        masked = [_mask_tree(v) for v in value]
        try:
            return type(value)(masked)
        except Exception:
            return masked
    return value


# ----------------------------------------------------------------------------- logging


def _mask_record(record: logging.LogRecord) -> None:
    if _pattern() is None:
        return
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it when it formats the record
        return
    masked = mask(message)
    if masked != message:
        record.msg, record.args = masked, ()
    if record.exc_info and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        masked = mask(text)
        if masked != text:
            record.exc_text = masked
    elif record.exc_text:
        record.exc_text = mask(record.exc_text)
    if record.stack_info:
        record.stack_info = mask(record.stack_info)


class MaskingFilter(logging.Filter):
    """A logging filter that masks secrets in a record's message, traceback and stack.

    :func:`install_log_masking` masks every record of the process; attach this
    filter to a handler instead to mask only what that handler writes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        _mask_record(record)
        return True


_installed: dict[str, Any] = {}


def install_log_masking() -> None:
    """Mask secrets in everything this process logs and in uncaught-exception tracebacks.

    Every log record is masked as it is created (whichever logger and handler),
    and ``sys.excepthook`` and ``threading.excepthook`` mask the tracebacks they
    print. Calling it again does nothing. ``app.run`` calls it when the
    environment carries secrets (``FORGEML_SECRET_NAMES``).
    """
    with _lock:
        if _installed:
            return
        previous_factory = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous_factory(*args, **kwargs)
            _mask_record(record)
            return record

        _installed.update(
            factory=factory,
            previous_factory=previous_factory,
            excepthook=sys.excepthook,
            threading_excepthook=threading.excepthook,
        )
        logging.setLogRecordFactory(factory)
        sys.excepthook = _masking_excepthook(sys.excepthook)
        threading.excepthook = _masking_threading_excepthook(threading.excepthook)


def uninstall_log_masking() -> None:
    """Undo :func:`install_log_masking` (for tests)."""
    with _lock:
        if not _installed:
            return
        if logging.getLogRecordFactory() is _installed["factory"]:
            logging.setLogRecordFactory(_installed["previous_factory"])
        sys.excepthook = _installed["excepthook"]
        threading.excepthook = _installed["threading_excepthook"]
        _installed.clear()


def _masked_traceback(
    exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
) -> str | None:
    """The traceback as Python prints it, masked; None when it holds no secret."""
    if _pattern() is None:
        return None
    text = "".join(traceback.format_exception(exc_type, exc, tb))
    masked = mask(text)
    return masked if masked != text else None


def _masking_excepthook(
    previous: Callable[[type[BaseException], BaseException, TracebackType | None], Any],
) -> Callable[[type[BaseException], BaseException, TracebackType | None], Any]:
    def excepthook(
        exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        masked = _masked_traceback(exc_type, exc, tb)
        if masked is None:
            previous(exc_type, exc, tb)
            return
        sys.stderr.write(masked)
        sys.stderr.flush()

    return excepthook


def _masking_threading_excepthook(
    previous: Callable[[threading.ExceptHookArgs], Any],
) -> Callable[[threading.ExceptHookArgs], Any]:
    def excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is None or args.exc_type is SystemExit:
            previous(args)
            return
        masked = _masked_traceback(args.exc_type, args.exc_value, args.exc_traceback)
        if masked is None:
            previous(args)
            return
        name = args.thread.name if args.thread is not None else threading.get_ident()
        sys.stderr.write(f"Exception in thread {name}:\n{masked}")
        sys.stderr.flush()

    return excepthook


def names_in_env(env: Mapping[str, str]) -> list[str]:
    """The secret names listed in ``env``'s ``FORGEML_SECRET_NAMES``."""
    return [n.strip() for n in env.get(NAMES_VAR, "").split(",") if n.strip()]


def with_names(env: Mapping[str, str], names: Iterable[str]) -> str:
    """``FORGEML_SECRET_NAMES`` for ``env`` with ``names`` added (order kept, no repeats)."""
    merged = dict.fromkeys([*names_in_env(env), *names])
    return ",".join(merged)
