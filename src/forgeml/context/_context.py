"""``compute_context``: run a function in a child process under a resource request."""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ParamSpec, TypeVar, overload

from forgeml._core import _errors
from forgeml._core._errors import ContextChildError, ContextError, ForgeMLError
from forgeml._core._files import atomic_write_text
from forgeml._core._lazy import is_installed
from forgeml.context._child import CALL, RESULT, WRAPPED
from forgeml.context._pool import ResourcePool, default_pool, machine_cpus
from forgeml.context._requests import DEFAULT, Allocation, normalize
from forgeml.context._transport import Transport

P = ParamSpec("P")
R = TypeVar("R")
Requirements = Mapping[str, Mapping[str, Any] | None]

_active: Allocation | None = None
#: The keyword arguments a compute_context wrapper takes for itself (never passed on).
RESERVED = (
    "call_context_reqs",
    "call_pool",
    "call_trust",
    "call_use_existing_context",
    "call_timeout",
)
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def set_active(allocation: Allocation | None) -> None:
    """Make ``allocation`` the context of this process (done by the context's child)."""
    global _active
    _active = allocation


def current_context() -> Allocation | None:
    """The allocation this process runs under: set inside a compute context, else None."""
    return _active


def context_check(reqs: Requirements | None) -> None:
    """Raise :class:`ContextIncompatibilityError` unless the active context satisfies ``reqs``.

    Inside a compute context, ``reqs`` (``{framework: {resource: amount}}``) is
    compared with what the context was granted: every framework must be part of
    it (``"default"`` always is) with at least the shares and counts asked for.
    Outside any compute context there is nothing to compare with, and it raises
    :class:`ContextError`.
    """
    if _active is None:
        normalize(reqs)  # a malformed request is reported as such
        raise ContextError(
            f"No compute context is active in this process, so it cannot satisfy "
            f"{dict(reqs or {})!r}. Call context_check inside a function run by "
            f"compute_context, or check current_context() is not None first."
        )
    _active.check(reqs)


def _function_path(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise ContextError(
            f"compute_context runs {qualname or fn!r} in a new process, which imports it by "
            f"name, so it must be defined at the top level of a module (not inside a function, "
            f"not a lambda). Move it to module level."
        )
    if module == "__main__":
        main = sys.modules.get("__main__")
        if getattr(main, "__file__", None) is None:
            raise ContextError(
                f"{qualname} is defined interactively (in __main__ with no file), so a new "
                f"process cannot import it. Put it in a module and import it from there."
            )
    return f"{module}:{qualname}"


def _check_installed(reqs: Mapping[str, Any]) -> None:
    from forgeml.frameworks import FRAMEWORKS

    for name in reqs:
        if name != DEFAULT and not is_installed(name):
            hint = FRAMEWORKS.entry(name).hint
            raise ContextError(
                f"The compute context asks for {name}, which is not installed here."
                + (f" HINT: {hint}" if hint else "")
            )


def _gpu_ids(allocation: Allocation) -> list[str]:
    """The CUDA ids of the granted GPUs: pool index i is the i-th GPU this process sees."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    parent = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
    return [parent[i] if i < len(parent) else str(i) for i in sorted(allocation.gpus)]


def _cpu_ids(allocation: Allocation) -> list[int]:
    """The OS ids of the granted CPUs: pool index i is the i-th CPU of this process's
    affinity (sorted). Indices beyond it are left out with a warning; when none is left,
    the child is not pinned."""
    if not allocation.cpus:
        return []
    usable = machine_cpus()
    wanted = sorted(allocation.cpus)
    ids = [usable[i] for i in wanted if i < len(usable)]
    beyond = [f"cpu/{i}" for i in wanted if i >= len(usable)]
    if beyond:
        what = "its CPUs are not pinned" if not ids else f"it is pinned to OS CPUs {ids} only"
        warnings.warn(
            f"The compute context was granted {', '.join(beyond)}, but this process may run "
            f"on {len(usable)} CPU(s) only (OS ids {usable}; pool index i is the i-th of "
            f"them), so {what}. Declare the pool with at most {len(usable)} CPUs "
            f"(ResourcePool(cpus={len(usable)})).",
            RuntimeWarning,
            stacklevel=4,
        )
    return ids


def _child_environment(allocation: Allocation, gpu_ids: list[str]) -> dict[str, str]:
    env = {"CUDA_VISIBLE_DEVICES": ",".join(gpu_ids)}
    if "CUDA_DEVICE_ORDER" not in os.environ:
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # CUDA numbers GPUs as NVML does
    if allocation.cpus:
        for name in _THREAD_VARIABLES:
            if name not in os.environ:
                env[name] = str(len(allocation.cpus))
    return env


def _exit_description(code: int | None) -> str:
    if code is None:
        return "no exit status"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-code).name}"
        return f"signal {-code}"
    return f"exit code {code}"


def _raise_child_error(record: dict[str, Any], name: str, pid: int | None) -> None:
    message = str(record.get("message", ""))
    child_type = str(record.get("type", "Exception"))
    tb = str(record.get("traceback", ""))
    cls = getattr(_errors, str(record.get("forgeml_error") or ""), None)
    error: ForgeMLError
    if isinstance(cls, type) and issubclass(cls, ForgeMLError):
        error = cls(message)
    else:
        error = ContextChildError(f"{name} raised {child_type} in its compute context: {message}")
    error.child_type = child_type  # type: ignore[attr-defined]
    error.child_traceback = tb  # type: ignore[attr-defined]
    error.add_note(f"Traceback in the compute context process (pid {pid}):\n{tb.rstrip()}")
    raise error


def _run_in_child(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    reqs: dict[str, dict[str, float]],
    pool: ResourcePool,
    trust: bool,
    timeout: float | None,
) -> Any:
    path = _function_path(fn)
    _check_installed(reqs)
    name = getattr(fn, "__qualname__", path)
    workdir = Path(tempfile.mkdtemp(prefix="forgeml-context-"))
    try:
        inbound = Transport(workdir / "in", trust=trust)
        call: dict[str, Any] = {
            "function": path,
            "args": inbound.dump(list(args), f"an argument of {name}"),
            "kwargs": inbound.dump(kwargs, f"an argument of {name}"),
            "trust": trust,
            "parent_pid": os.getpid(),
            "sys_path": [str(p) for p in sys.path],
            "main_path": getattr(sys.modules.get("__main__"), "__file__", None),
        }
        allocation = pool.request(reqs, timeout=timeout)
        try:
            gpu_ids = _gpu_ids(allocation)
            call["allocation"] = allocation.to_dict()
            call["gpu_ids"] = gpu_ids
            call["cpu_ids"] = _cpu_ids(allocation)
            atomic_write_text(workdir / CALL, json.dumps(call))
            process = subprocess.Popen(
                [sys.executable, "-m", "forgeml.context._main", str(workdir)],
                env={**os.environ, **_child_environment(allocation, gpu_ids)},
            )
            try:
                process.wait()
            finally:
                if process.poll() is None:  # interrupted while waiting: the child goes too
                    process.terminate()
                    try:
                        process.wait(5)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
        finally:
            pool.release(allocation)
        result = workdir / RESULT
        if not result.is_file():
            raise ContextChildError(
                f"The compute context process of {name} (pid {process.pid}) ended with "
                f"{_exit_description(process.returncode)} before returning a result (killed, "
                f"out of memory, or a crash in native code). Look at its output above."
            )
        record = json.loads(result.read_text(encoding="utf-8"))
        if not record.get("ok"):
            _raise_child_error(record, name, process.pid)
        return Transport(workdir / "out", trust=trust).load(record["value"])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _check_reserved(fn: Callable[..., Any]) -> None:
    """A :class:`ContextError` when ``fn`` has a parameter the wrapper keeps for itself."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read (some builtins)
        return
    clash = [name for name in parameters if name in RESERVED]
    if clash:
        name = getattr(fn, "__qualname__", repr(fn))
        raise ContextError(
            f"{name} has the parameter(s) {', '.join(clash)}, but compute_context reserves "
            f"{', '.join(RESERVED)} for its wrapper (they set the context of one call and are "
            f"never passed to the function). Rename the parameter(s), e.g. "
            f"{clash[0].removeprefix('call_')}."
        )


@overload
def compute_context(ctx_context_reqs: Callable[P, R], /) -> Callable[..., R]: ...


@overload
def compute_context(
    ctx_context_reqs: Requirements | None = None,
    *,
    ctx_pool: ResourcePool | None = None,
    ctx_trust: bool = False,
    ctx_use_existing_context: bool = True,
    ctx_timeout: float | None = 0,
) -> Callable[[Callable[P, R]], Callable[..., R]]: ...


def compute_context(
    ctx_context_reqs: Requirements | Callable[..., Any] | None = None,
    *,
    ctx_pool: ResourcePool | None = None,
    ctx_trust: bool = False,
    ctx_use_existing_context: bool = True,
    ctx_timeout: float | None = 0,
) -> Any:
    """Run the decorated function in a child process under a resource request.

    ``ctx_context_reqs`` is ``{framework: {resource: amount}}``, e.g.
    ``{"torch": {"gpu/0": 0.5}, "tf": {}}`` (None: ``{"default": {}}``, no
    framework). Each call requests it from ``ctx_pool`` (default: this process's
    CPUs and GPUs), starts a fresh ("spawn") Python process pinned to the granted
    CPUs and GPUs, with each framework limited to its share, runs the function
    there, and releases the grant when the process has ended. The wrapper takes
    the same arguments plus ``call_context_reqs=``, ``call_pool=``, ``call_trust=``,
    ``call_use_existing_context=`` and ``call_timeout=``, which override the
    ``ctx_`` settings for one call. These five names are reserved: the wrapper keeps
    them and never passes them to the function, so decorating a function that has a
    parameter of one of these names raises :class:`ContextError` (rename it); a
    function taking ``**kwargs`` never receives them either.

    Arguments and the return value cross as forgeml archives (Objects), ``.npy``
    files (large arrays) or tagged JSON (plain data); anything else is refused
    unless ``ctx_trust`` (then pickled). A function must live at the top level of
    an importable module. An exception in the child is raised again in the parent
    (a forgeml error as itself, any other as :class:`ContextChildError`) with the
    child's traceback as a note and in ``child_traceback``. The child dies when the
    parent does.

    Inside a compute context, a call whose request the active context satisfies
    runs in the same process (``ctx_use_existing_context``); one it does not
    satisfy raises :class:`ContextIncompatibilityError`. ``ctx_timeout``: seconds
    to wait for the pool to free what is asked (0: fail at once; None: forever).
    """
    if callable(ctx_context_reqs):
        return compute_context()(ctx_context_reqs)
    normalize(ctx_context_reqs)  # a malformed request fails where it is written

    def decorate(fn: Callable[P, R]) -> Callable[..., R]:
        if getattr(fn, WRAPPED, None) is not None:
            fn = getattr(fn, WRAPPED)
        _check_reserved(fn)

        @functools.wraps(fn)
        def wrapper(
            *args: Any,
            call_context_reqs: Requirements | None = None,
            call_pool: ResourcePool | None = None,
            call_trust: bool | None = None,
            call_use_existing_context: bool | None = None,
            call_timeout: float | None = None,
            **kwargs: Any,
        ) -> R:
            reqs = normalize(
                call_context_reqs if call_context_reqs is not None else ctx_context_reqs
            )
            use_existing = (
                ctx_use_existing_context
                if call_use_existing_context is None
                else call_use_existing_context
            )
            active = current_context()
            if active is not None and use_existing:
                active.check(reqs)
                return fn(*args, **kwargs)
            pool = call_pool or ctx_pool or default_pool()
            trust = ctx_trust if call_trust is None else call_trust
            timeout = ctx_timeout if call_timeout is None else call_timeout
            result: R = _run_in_child(fn, args, kwargs, reqs, pool, trust, timeout)
            return result

        setattr(wrapper, WRAPPED, fn)
        return wrapper

    return decorate
