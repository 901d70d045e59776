"""``@notify.on()``: post when a job starts, completes or fails, without touching its outcome."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, overload

from forgeml._core._env import process_rank
from forgeml._core._errors import NotifyError
from forgeml.notify._post import (
    Kind,
    check_kind,
    check_timeout,
    check_url,
    clip_traceback,
    finish_payload,
    jsonable,
    numeric_metrics,
    post,
    resolve_target,
    resolve_timeout,
)

log = logging.getLogger("forgeml.notify")

P = ParamSpec("P")
R = TypeVar("R")

_metrics_lock = threading.Lock()
_metrics_stack: list[dict[str, float]] = []
_warned_no_url = False


def log_metrics(metrics: Mapping[str, float] | None = None, /, **more: float) -> None:
    """Record final metrics for the completion notification of the running ``@notify.on`` job.

    Later values replace earlier ones under the same name; they are merged
    over the numbers of the job's return value. Outside a notified job this
    does nothing.
    """
    values = {**(metrics or {}), **more}
    with _metrics_lock:
        if _metrics_stack:
            _metrics_stack[-1].update(numeric_metrics(values))


class _Outbox:
    """Posts of one job, in order, on daemon threads: a hung receiver never holds the process."""

    def __init__(self, url: str, kind: Kind, timeout: float) -> None:
        self.url, self.kind, self.timeout = url, kind, timeout
        self._last: threading.Thread | None = None

    def put(self, payload: dict[str, Any]) -> None:
        previous = self._last

        def send() -> None:
            if previous is not None:
                previous.join()
            post(payload, self.url, self.kind, self.timeout)

        thread = threading.Thread(target=send, name=f"forgeml-notify-{payload['event']}")
        thread.daemon = True
        self._last = thread
        thread.start()

    def wait(self, seconds: float) -> None:
        if self._last is not None:
            self._last.join(seconds)
            if self._last.is_alive():
                log.warning(
                    "a notification was still being posted after %.1f s; not waiting longer",
                    seconds,
                )


def _job_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or ""
    if module == "__main__":
        argv0 = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else ""
        module = Path(argv0).stem or "__main__"
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{module}:{name}" if module else name


def _config_of(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The run config, when the job takes one (``main(cfg)`` under ``app.run``)."""
    cfg = kwargs.get("cfg")
    if isinstance(cfg, Mapping):
        return cfg
    if args and isinstance(args[0], Mapping):
        return args[0]
    return None


def _arguments(signature: inspect.Signature | None, args: tuple[Any, ...], kwargs: Any) -> Any:
    if signature is not None:
        try:
            bound = signature.bind_partial(*args, **kwargs)
            bound.apply_defaults()
            return jsonable(dict(bound.arguments))
        except TypeError:
            pass
    return jsonable({"args": list(args), "kwargs": dict(kwargs)})


@overload
def on(
    fn: Callable[P, R],
    /,
    *,
    start: bool = ...,
    complete: bool = ...,
    failure: bool = ...,
    webhook_url: str | None = ...,
    timeout: float | None = ...,
    kind: Kind = ...,
    job: str | None = ...,
) -> Callable[P, R]: ...


@overload
def on(
    fn: None = None,
    /,
    *,
    start: bool = ...,
    complete: bool = ...,
    failure: bool = ...,
    webhook_url: str | None = ...,
    timeout: float | None = ...,
    kind: Kind = ...,
    job: str | None = ...,
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def on(
    fn: Callable[P, R] | None = None,
    /,
    *,
    start: bool = True,
    complete: bool = True,
    failure: bool = True,
    webhook_url: str | None = None,
    timeout: float | None = None,
    kind: Kind = "auto",
    job: str | None = None,
) -> Callable[P, R] | Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a job function to post when it starts, completes and fails.

    The start post carries the arguments; the completion post the return value
    and final metrics (the numbers in a returned dict, plus what
    :func:`log_metrics` recorded); the failure post the traceback. All are
    masked with :func:`forgeml.secrets.mask` and cut to a sane size.

    ``webhook_url`` defaults to ``$FORGEML_WEBHOOK_URL``, else
    ``$SLACK_WEBHOOK_URL``, else the config's ``notify.webhook_url`` (when the
    job takes a config as its first argument or ``cfg``). ``kind="auto"``
    posts Slack messages (through ``slack_sdk``) to ``hooks.slack.com`` and for
    ``$SLACK_WEBHOOK_URL``, and JSON to any other URL; ``"slack"`` or
    ``"webhook"`` choose. ``timeout`` (seconds; default
    ``$FORGEML_NOTIFY_TIMEOUT``, else ``notify.timeout``, else 5) bounds each
    post, and the job waits at most that long at its end.

    Only rank 0 posts: the first of ``$RANK``, ``$SLURM_PROCID`` and the config's
    ``rank`` (or a ``rank`` argument) that is set says the rank
    (:func:`forgeml._core._env.process_rank`). Posts run on background threads;
    a failed or slow post is logged, and the job's return value, exception and
    exit code stay what they would be without the decorator. ``functools.wraps`` keeps the
    signature, so ``app.run(fn)`` builds the same options.
    """
    check_kind(kind)
    if webhook_url is not None:
        check_url(webhook_url, "webhook_url=")
    if timeout is not None:
        check_timeout(timeout, "timeout=")

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
            raise NotifyError(
                f"notify.on decorates plain functions; {getattr(func, '__qualname__', func)} is "
                f"async. Decorate the function that runs it (asyncio.run(...)) instead."
            )
        try:
            signature: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):
            signature = None

        @functools.wraps(func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            notifier = _Notifier.begin(
                func, signature, args, kwargs, webhook_url, kind, timeout, job, start
            )
            if notifier is None:
                return func(*args, **kwargs)
            with _metrics_lock:
                _metrics_stack.append({})
            try:
                result = func(*args, **kwargs)
            except SystemExit as exc:
                if exc.code in (None, 0):
                    notifier.end("complete" if complete else None, result=None)
                else:
                    notifier.end("failure" if failure else None, exc=exc)
                raise
            except BaseException as exc:
                notifier.end("failure" if failure else None, exc=exc)
                raise
            else:
                notifier.end("complete" if complete else None, result=result)
                return result
            finally:
                with _metrics_lock:
                    _metrics_stack.pop()

        return wrapper

    return decorate(fn) if fn is not None else decorate


class _Notifier:
    """The notifications of one call of a decorated job."""

    def __init__(self, job: str, args: Any, outbox: _Outbox, rank: int = 0) -> None:
        self.job, self.args, self.outbox = job, args, outbox
        self.started = time.monotonic()
        self.host = socket.gethostname()
        self.rank = rank

    @classmethod
    def begin(
        cls,
        func: Callable[..., Any],
        signature: inspect.Signature | None,
        args: tuple[Any, ...],
        kwargs: Mapping[str, Any],
        webhook_url: str | None,
        kind: Kind,
        timeout: float | None,
        job: str | None,
        start: bool,
    ) -> _Notifier | None:
        """A notifier for this call (and the start posted), or None when nothing will be posted.

        Never raises: a bad URL from the environment or config is logged.
        """
        global _warned_no_url
        try:
            cfg = _config_of(args, kwargs)
            rank = process_rank(cfg if cfg is not None else kwargs)  # or a ``rank`` argument
            if rank != 0:
                return None
            target = resolve_target(webhook_url, kind, cfg)
            if target is None:
                if not _warned_no_url:
                    _warned_no_url = True
                    log.warning(
                        "notifications are off: pass webhook_url= to notify.on, or set "
                        "FORGEML_WEBHOOK_URL or SLACK_WEBHOOK_URL"
                    )
                return None
            outbox = _Outbox(*target, resolve_timeout(timeout, cfg))
            notifier = cls(
                job or _job_name(func), _arguments(signature, args, kwargs), outbox, rank
            )
            if start:
                notifier.send("start")
            return notifier
        except Exception as exc:
            log.warning("notifications are off for this run: %s", exc)
            return None

    def payload(self, event: str, **fields: Any) -> dict[str, Any]:
        return {
            "event": event,
            "job": self.job,
            "host": self.host,
            "pid": os.getpid(),
            "rank": self.rank,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "args": self.args,
            "result": None,
            "metrics": {},
            "error": None,
            "traceback": None,
            "duration": None,
            **fields,
        }

    def send(self, event: str, **fields: Any) -> None:
        self.outbox.put(finish_payload(self.payload(event, **fields)))

    def end(
        self, event: str | None, *, result: Any = None, exc: BaseException | None = None
    ) -> None:
        """Post the completion or failure (when enabled) and wait at most the timeout."""
        try:
            if event is not None:
                duration = round(time.monotonic() - self.started, 3)
                if exc is not None:
                    text = "".join(traceback.format_exception(exc))
                    error = "".join(traceback.format_exception_only(exc)).strip()
                    self.send(
                        event,
                        error=jsonable(error),
                        traceback=clip_traceback(text),
                        duration=duration,
                    )
                else:
                    with _metrics_lock:
                        logged = dict(_metrics_stack[-1]) if _metrics_stack else {}
                    self.send(
                        event,
                        result=jsonable(result),
                        metrics={**numeric_metrics(result), **logged},
                        duration=duration,
                    )
            self.outbox.wait(self.outbox.timeout)
        except Exception as exc:  # the job's outcome is never changed by a notification
            log.warning("could not send the '%s' notification: %s", event, exc)
