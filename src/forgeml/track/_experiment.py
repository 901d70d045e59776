"""``@track.experiment``: run an entry function inside a tracked run."""

from __future__ import annotations

import functools
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from forgeml.track._run import active_run, experiment_name, start_run

F = TypeVar("F", bound=Callable[..., Any])


def source_file(fn: Callable[..., Any]) -> str | None:
    """The file defining ``fn`` (for git and ``mlflow.source.name``), else the script."""
    try:
        found = inspect.getsourcefile(inspect.unwrap(fn))
    except (TypeError, OSError):
        found = None
    if found and os.path.isfile(found):
        return os.path.abspath(found)
    script = sys.argv[0] if sys.argv else ""
    return os.path.abspath(script) if script and os.path.isfile(script) else None


def split_arguments(
    signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Mapping[str, Any] | None, dict[str, Any], str | None]:
    """The config among a call's arguments, the other arguments as params, and ``run_id``.

    A :class:`forgeml.Config` argument (or one named ``cfg``) is the config; a
    ``run_id`` argument names the run to resume and is not a param.
    """
    from forgeml.config import Config

    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError:
        return None, {}, None  # the call itself raises the error
    bound.apply_defaults()
    cfg: Mapping[str, Any] | None = None
    params: dict[str, Any] = {}
    run_id = None
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if name == "run_id":
            run_id = value if isinstance(value, str) and value else None
        elif cfg is None and (
            isinstance(value, Config) or (name == "cfg" and isinstance(value, Mapping))
        ):
            cfg = value
        elif kind is inspect.Parameter.VAR_KEYWORD:
            params.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            params[name] = value
    return cfg, params, run_id


@overload
def experiment(name: F) -> F: ...


@overload
def experiment(
    name: str | None = None,
    *,
    run_id: str | None = None,
    uri: str | None = None,
    tags: Mapping[str, Any] | None = None,
    log_output: bool | None = None,
    log_system: bool | None = None,
) -> Callable[[F], F]: ...


def experiment(
    name: Any = None,
    *,
    run_id: str | None = None,
    uri: str | None = None,
    tags: Mapping[str, Any] | None = None,
    log_output: bool | None = None,
    log_system: bool | None = None,
) -> Any:
    """Run the decorated entry function inside a tracked run.

    Each call starts a run in experiment ``name`` (else ``cfg.tracking.experiment``,
    ``MLFLOW_EXPERIMENT_NAME``, or the function's name), or resumes ``run_id``
    (else a ``run_id`` argument of the call, ``cfg.tracking.run_id`` or
    ``MLFLOW_RUN_ID``). The run records the function's arguments as params, a
    config argument in full (params ``a.b.c`` and ``config.yaml``), git commit,
    branch and uncommitted diff, Python and packages, host and Slurm job, and
    everything printed (``output.log``). An exception marks the run FAILED with
    its traceback and is raised again.

    Inside a run that is already active (``app.run`` with ``cfg.tracking``), the
    call logs its arguments into that run. In distributed workers of rank > 0
    the function just runs. Works with or without parentheses.
    """
    if callable(name):
        return experiment()(name)

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)
        source = source_file(fn)

        @functools.wraps(fn)
        def tracked(*args: Any, **kwargs: Any) -> Any:
            cfg, params, call_run_id = split_arguments(signature, args, kwargs)
            current = active_run()
            if current is not None:
                if current.enabled and cfg is not None and not current._config_logged:
                    current.log_config(cfg, params)
                elif current.enabled:
                    current.log_params(params)
                return fn(*args, **kwargs)
            with start_run(
                experiment_name(name, cfg, fn.__name__),
                run_id=run_id or call_run_id,
                uri=uri,
                tags=tags,
                cfg=cfg,
                params=params,
                source=source,
                log_output=log_output,
                log_system=log_system,
            ):
                return fn(*args, **kwargs)

        return tracked  # type: ignore[return-value]

    return decorate


def run_tracked(call: Callable[[Any], Any], name: str, source: str | None, cfg: Any) -> Any:
    """``call(cfg)`` inside a run configured by ``cfg.tracking`` (what ``app.run`` uses)."""
    with start_run(experiment_name(None, cfg, name), cfg=cfg, source=source):
        return call(cfg)
