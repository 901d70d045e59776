"""A tracked run: immutable params, batched metrics, artifacts, status, and the offline fallback."""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from forgeml._core._env import is_rank_zero
from forgeml._core._errors import TrackError, did_you_mean
from forgeml.track import _store
from forgeml.track._store import Target, describe_error, is_connection_error
from forgeml.track._values import (
    METRICS_PER_BATCH,
    PARAMS_PER_BATCH,
    check_key,
    chunks,
    config_params,
    mask_text,
    mask_tree,
    param_value,
    tag_value,
)

if TYPE_CHECKING:
    from forgeml.track._offline import OfflineRecord
    from forgeml.track._tee import OutputTee

log = logging.getLogger("forgeml.track")
R = TypeVar("R")

#: Seconds between background writes of logged metrics (they also go out every
#: :data:`METRICS_PER_BATCH` values, and when the run ends).
FLUSH_INTERVAL = 5.0
#: Logged metrics not yet written beyond which ``log_metrics`` writes them itself.
MAX_PENDING = 100_000

_Row = tuple[str, float, int, int]  # key, value, timestamp (ms), step


# ----------------------------------------------------------------------------- options


@dataclass
class TrackingOptions:
    """The ``tracking:`` section of a config.

    ``tracking: true`` turns tracking on with these defaults; a mapping sets them;
    ``tracking: false`` (or ``enabled: false``) turns it off.
    """

    uri: str | None = None
    experiment: str | None = None
    run_name: str | None = None
    run_id: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    flush_interval: float = FLUSH_INTERVAL
    log_output: bool = True
    log_system: bool = True
    enabled: bool = True


_OPTION_NAMES = tuple(TrackingOptions.__dataclass_fields__)


def tracking_options(cfg: Mapping[str, Any] | None) -> TrackingOptions | None:
    """The options of ``cfg.tracking``; None when the config has no (or a false) section."""
    if cfg is None:
        return None
    section = cfg.get("tracking")
    if section is None or section is False:
        return None
    if section is True:
        return TrackingOptions()
    if isinstance(section, str):
        return TrackingOptions(uri=section)
    if not isinstance(section, Mapping):
        raise TrackError(
            f"The 'tracking' config must be true, false, a URI or a mapping of "
            f"{', '.join(_OPTION_NAMES)}. Got {section!r}."
        )
    for key in section:
        if key not in _OPTION_NAMES:
            raise TrackError(
                f"Unknown tracking option '{key}'. Known: {', '.join(_OPTION_NAMES)}."
                + did_you_mean(str(key), _OPTION_NAMES)
            )
    options = TrackingOptions(**{k: v for k, v in section.items() if v is not None})
    if not isinstance(options.tags, Mapping):
        raise TrackError(f"tracking.tags must be a mapping. Got {options.tags!r}.")
    try:
        options.flush_interval = float(options.flush_interval)
    except (TypeError, ValueError):
        raise TrackError(
            f"tracking.flush_interval must be a number of seconds. Got {options.flush_interval!r}."
        ) from None
    if options.flush_interval <= 0:
        raise TrackError(
            f"tracking.flush_interval must be positive. Got {options.flush_interval!r}."
        )
    return options


def tracking_enabled(cfg: Mapping[str, Any] | None) -> bool:
    """True when ``cfg`` asks for a tracked run (a ``tracking`` section that is not off)."""
    options = tracking_options(cfg)
    return options is not None and bool(options.enabled)


# ----------------------------------------------------------------------------- run


class Run:
    """One MLflow run being recorded by this process.

    Get one from :func:`start_run` or the :func:`experiment` decorator. Params
    are written at once and are immutable; metrics are queued and written in
    batches by a background thread (every :data:`FLUSH_INTERVAL` seconds, every
    1000 values, and when the run ends). When the tracking server stops
    answering, the run carries on in a local store (see ``forgeml track sync``).

    In distributed workers of rank > 0 the run is *disabled*: every method does
    nothing, and ``run_id`` is the run being resumed (or None).
    """

    def __init__(
        self,
        target: Target | None,
        *,
        experiment: str,
        experiment_id: str | None = None,
        run_name: str | None = None,
        start_time: int | None = None,
        params: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        resumed: bool = False,
        configured_uri: str | None = None,
        flush_interval: float = FLUSH_INTERVAL,
        offline: OfflineRecord | None = None,
        run_id: str | None = None,
    ) -> None:
        self._target = target
        self.enabled = target is not None
        #: The run's id: in the tracking store, or in the local store when it started offline.
        self.run_id: str | None = target.run_id if target is not None else run_id
        self.experiment = experiment
        self.experiment_id = experiment_id
        self.run_name = run_name
        self.start_time = start_time if start_time is not None else int(time.time() * 1000)
        #: The URI the run was meant for (its server, even after a switch to offline).
        self.uri = configured_uri or (target.uri if target is not None else None)
        self.resumed = resumed
        self.status = "RUNNING" if self.enabled else "DISABLED"
        self.offline_record = offline
        self._params: dict[str, str] = dict(params or {})
        self._tags: dict[str, str] = dict(tags or {})
        self._switch_lock = threading.RLock()
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._buffer: list[_Row] = []
        self._error: BaseException | None = None
        self._stopping = not self.enabled
        self._valid_keys: set[str] = set()
        self._interval = flush_interval
        self._tee: OutputTee | None = None
        self._tee_dir: Path | None = None
        self._log_name = "output.log"
        self._config_logged = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        if self.enabled:
            self._thread = threading.Thread(
                target=self._flush_loop, name="forgeml-track-flush", daemon=True
            )
            self._thread.start()

    # -------------------------------------------------------------- basics

    @classmethod
    def disabled(
        cls, experiment: str = "", run_id: str | None = None, uri: str | None = None
    ) -> Run:
        """A run that records nothing (distributed workers of rank > 0)."""
        return cls(None, experiment=experiment, run_id=run_id, configured_uri=uri)

    @property
    def offline(self) -> bool:
        """True when the run is being recorded in the local offline store."""
        return self.offline_record is not None

    @property
    def params(self) -> dict[str, str]:
        """The params logged so far (as stored: text)."""
        return dict(self._params)

    @property
    def artifact_uri(self) -> str | None:
        """Where the run's artifacts are stored (None for a disabled run)."""
        if self._target is None:
            return None
        run = self._call("read the run", lambda t: t.client.get_run(t.run_id))
        return str(run.info.artifact_uri)

    def __repr__(self) -> str:
        where = " offline" if self.offline else ""
        return (
            f"<forgeml.track.Run {self.run_id} experiment={self.experiment!r} "
            f"status={self.status}{where}>"
        )

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.end(exit_status(exc), error=exc if exit_status(exc) != "FINISHED" else None)

    # -------------------------------------------------------------- writes

    def _call(self, what: str, fn: Callable[[Target], R]) -> R:
        """Run one write against the current store; switch to offline if the server is gone."""
        target = self._target
        assert target is not None
        try:
            return fn(target)
        except TrackError:
            raise
        except Exception as exc:
            switched = self._target is not target  # by another thread, meanwhile
            if not switched and (self.offline_record is not None or not is_connection_error(exc)):
                raise TrackError(
                    f"Could not {what} for run {self.run_id} at {target.uri}: {describe_error(exc)}"
                ) from exc
            try:
                self._go_offline(target, exc)
            except Exception as offline_exc:
                raise TrackError(
                    f"Could not {what} for run {self.run_id}: {target.uri} cannot be reached "
                    f"({describe_error(exc)}), and the offline store failed too: "
                    f"{describe_error(offline_exc)}"
                ) from offline_exc
        target = self._target
        assert target is not None
        try:
            return fn(target)
        except Exception as exc:
            raise TrackError(
                f"Could not {what} for run {self.run_id} in the offline store {target.uri}: "
                f"{describe_error(exc)}"
            ) from exc

    def _go_offline(self, failed: Target, exc: BaseException) -> None:
        with self._switch_lock:
            if self._target is not failed:  # another thread switched already
                return
            from forgeml.track._offline import open_offline

            self._target, self.offline_record = open_offline(
                target_uri=failed.uri,
                experiment=self.experiment,
                run_name=self.run_name,
                start_time=self.start_time,
                remote_run_id=failed.run_id,
                params=self._params,
                tags=self._tags,
                reason=describe_error(exc),
            )

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (nested mappings become dotted keys); a logged key keeps its value.

        Logging a key again with the same value does nothing; with another value it
        raises :class:`TrackError` and logs none of ``params``.
        """
        if not self.enabled:
            return
        from forgeml.track._values import flatten

        new: dict[str, str] = {}
        changed: list[str] = []
        for key, value in flatten(mask_tree(dict(params))).items():
            check_key(key, "parameter")
            text = param_value(value)
            old = self._params.get(key)
            if old is None:
                new[key] = text
            elif old != text:
                changed.append(f"'{key}' is {old!r}, not {text!r}")
        if changed:
            raise TrackError(
                f"Parameters of run {self.run_id} are immutable: {'; '.join(changed)}. "
                f"Log a changed value under a new name, or start a new run."
            )
        self._write_params(new)

    def _write_params(self, new: Mapping[str, str]) -> None:
        if not new:
            return
        from mlflow.entities import Param

        for batch in chunks(new.items(), PARAMS_PER_BATCH):
            entities = [Param(k, v) for k, v in batch]
            self._call("log params", functools.partial(_log_batch, params=entities))
            self._params.update(batch)

    def log_param(self, key: str, value: Any) -> None:
        self.log_params({key: value})

    def log_config(self, cfg: Mapping[str, Any], params: Mapping[str, Any] | None = None) -> None:
        """Log a config: its flattened values as params, and the whole as ``config.yaml``.

        ``params`` (a function's arguments) are logged with it and win over config
        values of the same name: they are what the code ran with.
        """
        if not self.enabled:
            return
        from forgeml.track._values import flatten

        masked = mask_tree(cfg)
        values = config_params(masked)
        for key, value in flatten(mask_tree(dict(params or {}))).items():
            values[check_key(key, "parameter")] = param_value(value)
        changed = [
            f"'{k}' is {self._params[k]!r}, not {v!r}"
            for k, v in values.items()
            if k in self._params and self._params[k] != v
        ]
        if changed:
            raise TrackError(
                f"Parameters of run {self.run_id} are immutable: {'; '.join(changed)}. "
                f"Resume a run with the config it started with, or start a new run."
            )
        self._write_params({k: v for k, v in values.items() if k not in self._params})
        self.log_text(_dump_config(masked), "config.yaml")
        self._config_logged = True

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (unlike params, tags may change)."""
        if not self.enabled or not tags:
            return
        from mlflow.entities import RunTag

        values = {check_key(k, "tag"): tag_value(mask_text(str(v))) for k, v in tags.items()}
        for batch in chunks(values.items(), PARAMS_PER_BATCH):
            entities = [RunTag(k, v) for k, v in batch]
            self._call("set tags", functools.partial(_log_batch, tags=entities))
            self._tags.update(batch)

    def set_tag(self, key: str, value: Any) -> None:
        self.set_tags({key: value})

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Queue metric values (numbers) at ``step`` (default 0); they are written in batches."""
        if not self.enabled:
            return
        now = int(time.time() * 1000)
        try:
            at = int(step) if step is not None else 0
        except (TypeError, ValueError):
            raise TrackError(f"A metric step must be an integer. Got {step!r}.") from None
        rows: list[_Row] = []
        for key, value in metrics.items():
            if key not in self._valid_keys:
                check_key(key, "metric")
                self._valid_keys.add(key)
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise TrackError(
                    f"Metric '{key}' must be a number. Got {value!r} ({type(value).__name__})."
                ) from None
            rows.append((key, number, now, at))
        with self._cond:
            self._raise_pending()
            if self._stopping:
                raise TrackError(f"Run {self.run_id} has ended; start a new run to log metrics.")
            self._buffer.extend(rows)
            pending = len(self._buffer)
            if pending >= METRICS_PER_BATCH:
                self._cond.notify()
        if pending >= MAX_PENDING:
            self.flush()

    def log_metric(self, key: str, value: Any, step: int | None = None) -> None:
        self.log_metrics({key: value}, step=step)

    def _raise_pending(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._stopping or len(self._buffer) >= METRICS_PER_BATCH,
                    timeout=self._interval,
                )
                if self._stopping:
                    return
            try:
                self._flush_buffer()
            except BaseException as exc:  # surfaced by the next call on the run
                with self._cond:
                    self._error = self._error or exc

    def _flush_buffer(self) -> None:
        """Write the queued metrics. When a batch fails, it and the batches after it go
        back to the front of the queue (sent again next time) and the error is raised;
        beyond :data:`MAX_PENDING` queued values the oldest are dropped, with an error
        that says so."""
        with self._send_lock:
            with self._cond:
                rows, self._buffer = self._buffer, []
            if not rows:
                return
            from mlflow.entities import Metric

            sent = 0
            try:
                for batch in chunks(rows, METRICS_PER_BATCH):
                    entities = [Metric(k, v, ts, step) for k, v, ts, step in batch]
                    self._call("log metrics", functools.partial(_log_batch, metrics=entities))
                    sent += len(batch)
            except BaseException as exc:
                with self._cond:
                    self._buffer[:0] = rows[sent:]
                    dropped = len(self._buffer) - MAX_PENDING
                    if dropped > 0:
                        del self._buffer[:dropped]
                if dropped > 0:
                    raise TrackError(
                        f"Could not log metrics for run {self.run_id}, and more than "
                        f"{MAX_PENDING} values are waiting to be written: the {dropped} oldest "
                        f"were dropped. Cause: {exc}"
                    ) from exc
                raise

    def flush(self) -> None:
        """Write every metric logged so far now (the background thread does it anyway)."""
        if not self.enabled:
            return
        self._flush_buffer()
        with self._cond:
            self._raise_pending()

    def log_artifact(self, path: str | os.PathLike[str], artifact_path: str | None = None) -> None:
        """Copy a file or a folder into the run's artifacts (under ``artifact_path``)."""
        if not self.enabled:
            return
        local = Path(path)
        if not local.exists():
            raise TrackError(f"Cannot log artifact '{path}': there is no such file or folder.")
        if local.is_dir():
            self._call(
                f"log the folder {local}",
                lambda t: t.client.log_artifacts(t.run_id, str(local), artifact_path),
            )
        else:
            self._call(
                f"log the file {local}",
                lambda t: t.client.log_artifact(t.run_id, str(local), artifact_path),
            )

    def log_text(self, text: str, artifact_file: str) -> None:
        """Store ``text`` as the artifact ``artifact_file`` (a path inside the run)."""
        if not self.enabled:
            return
        self._call(
            f"log {artifact_file}", lambda t: t.client.log_text(t.run_id, text, artifact_file)
        )

    def log_dict(self, data: Any, artifact_file: str) -> None:
        """Store ``data`` as JSON (``.json``) or YAML (``.yaml``/``.yml``)."""
        if not self.enabled:
            return
        if artifact_file.endswith((".yaml", ".yml")):
            from forgeml.config._loader import dump_yaml

            text = dump_yaml(data)
        else:
            text = json.dumps(data, indent=2, default=str) + "\n"
        self.log_text(text, artifact_file)

    # -------------------------------------------------------------- system, output

    def log_system(self, source: str | None = None) -> None:
        """Record git commit/branch/diff, Python, packages, host and Slurm job of this process."""
        if not self.enabled:
            return
        from forgeml._core._git import git_info
        from forgeml.track import _info

        git = git_info(Path(source) if source else None, diff=True)
        env = _info.environment()
        self.set_tags(_info.system_tags(source, git, env))
        pkgs = env.pop("packages")
        env["packages"] = len(pkgs)
        if git is not None:
            env["git"] = {
                "root": git.root,
                "commit": git.commit,
                "branch": git.branch,
                "dirty": git.dirty,
                "untracked": git.untracked,
            }
        self.log_text(
            mask_text(json.dumps(env, indent=2, default=str)) + "\n", "forgeml/environment.json"
        )
        self.log_text(_info.requirements(pkgs), "forgeml/requirements.txt")
        if git is not None and git.dirty:
            self.log_text(mask_text(git.diff), "forgeml/git.diff")
        if git is not None and (git.dirty or git.untracked):
            self.log_text(mask_text(git.status), "forgeml/git-status.txt")

    def start_output(self) -> None:
        """Copy stdout, stderr and console logging into the run's log artifact from now on."""
        if not self.enabled or self._tee is not None:
            return
        from forgeml.track._tee import OutputTee

        self._tee_dir = Path(tempfile.mkdtemp(prefix="forgeml-run-"))
        self._tee = OutputTee(self._tee_dir / self._log_name).start()

    def _stop_output(self) -> None:
        tee, folder = self._tee, self._tee_dir
        self._tee = self._tee_dir = None
        if tee is None or folder is None:
            return
        try:
            tee.stop()
            _mask_file(tee.path)
            self.log_artifact(tee.path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    # -------------------------------------------------------------- end

    def end(self, status: str = "FINISHED", *, error: BaseException | None = None) -> None:
        """Write what is queued, store the output log, and mark the run ``status``.

        With ``error``, its traceback is stored as the ``traceback.txt`` artifact and
        the ``forgeml.traceback`` tag. Ending twice does nothing.
        """
        if not self.enabled:
            _deactivate(self)
            return
        with self._cond:
            if self._stopping:
                return
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        problems: list[BaseException] = []
        with self._cond:
            if self._error is not None:
                problems.append(self._error)
                self._error = None
        steps = [self._flush_buffer, self._stop_output]
        if error is not None:
            steps.append(functools.partial(self._log_error, error))
        steps.append(functools.partial(self._terminate, status))
        try:
            for step in steps:
                try:
                    step()
                except Exception as exc:
                    problems.append(exc)
        finally:
            _deactivate(self)
        if problems:
            message = "; ".join(describe_error(p) for p in problems)
            if error is not None:  # the run's own exception is what the caller must see
                log.error("run %s: some records could not be written: %s", self.run_id, message)
            else:
                raise TrackError(
                    f"Run {self.run_id} ended, but some records could not be written: {message}"
                ) from problems[0]

    def _log_error(self, error: BaseException) -> None:
        text = mask_text("".join(traceback.format_exception(error)))
        self.log_text(text, "traceback.txt")
        self.set_tags(
            {
                "forgeml.error": tag_value(f"{type(error).__name__}: {error}"),
                "forgeml.traceback": tag_value(text, keep_end=True),
            }
        )

    def _terminate(self, status: str) -> None:
        self._call("mark the run ended", lambda t: t.client.set_terminated(t.run_id, status))
        self.status = status
        if self.offline_record is not None:
            self.offline_record.ended = True
            self.offline_record.save()


def _log_batch(target: Target, **entities: Any) -> None:
    target.client.log_batch(target.run_id, **entities)


def exit_status(exc: BaseException | None) -> str:
    """MLflow's status for a run whose body ended with ``exc``."""
    if exc is None:
        return "FINISHED"
    if isinstance(exc, SystemExit) and exc.code in (None, 0):
        return "FINISHED"
    if isinstance(exc, KeyboardInterrupt):
        return "KILLED"
    return "FAILED"


def _dump_config(cfg: Mapping[str, Any]) -> str:
    from forgeml.config import Config

    try:
        return Config(cfg).dump("yaml")
    except Exception:
        return json.dumps(cfg, indent=2, default=str) + "\n"


def _mask_file(path: Path) -> None:
    """Mask secrets in a log file in place, line by line."""
    from forgeml.secrets import mask

    if not path.is_file():
        return
    masked = path.with_suffix(".masked")
    changed = False
    with (
        open(path, encoding="utf-8", errors="replace") as src,
        open(masked, "w", encoding="utf-8") as dst,
    ):
        for line in src:
            new = mask(line)
            changed = changed or new != line
            dst.write(new)
    if changed:
        os.replace(masked, path)
    else:
        masked.unlink()


# ----------------------------------------------------------------------------- active run

_active: Run | None = None
_active_lock = threading.Lock()
_warned: set[str] = set()


def active_run() -> Run | None:
    """The run this process is recording now (disabled in workers of rank > 0), or None."""
    return _active


def _activate(run: Run) -> None:
    global _active
    with _active_lock:
        _active = run


def _deactivate(run: Run) -> None:
    global _active
    with _active_lock:
        if _active is run:
            _active = None


def current(what: str) -> Run | None:
    """The active run for a module-level call; warns once per function when there is none."""
    run = _active
    if run is None and what not in _warned:
        _warned.add(what)
        log.warning(
            "forgeml.track.%s: no run is active, so nothing is recorded. Start one with "
            "@track.experiment, track.start_run() or a 'tracking' section in the config.",
            what,
        )
    return run


@atexit.register
def _end_at_exit() -> None:
    """End a run still active when the interpreter exits (``start_run`` without ``with``).

    An uncaught exception (``sys.last_value``, set when Python printed it) fails it.
    """
    run = _active
    if run is not None and run._pid == os.getpid():  # not in a forked child
        error = getattr(sys, "last_value", None)
        with contextlib.suppress(Exception):
            run.end(exit_status(error), error=error)


# ----------------------------------------------------------------------------- start


def experiment_name(
    explicit: str | None, cfg: Mapping[str, Any] | None, fallback: str | None = None
) -> str:
    """``explicit``, else ``cfg.tracking.experiment``, else ``MLFLOW_EXPERIMENT_NAME``,
    else ``fallback``, else the script's name."""
    options = tracking_options(cfg)
    name = (
        explicit
        or (options.experiment if options else None)
        or os.environ.get("MLFLOW_EXPERIMENT_NAME")
        or fallback
    )
    if not name:
        from forgeml.app._logging import script_name

        name = script_name()
    return str(name)


def start_run(
    experiment: str | None = None,
    *,
    run_id: str | None = None,
    run_name: str | None = None,
    uri: str | None = None,
    tags: Mapping[str, Any] | None = None,
    cfg: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    source: str | None = None,
    log_output: bool | None = None,
    log_system: bool | None = None,
) -> Run:
    """Start (or, given ``run_id``, resume) a run and make it the active one.

    Use it as a context manager (``with track.start_run() as run:``) or end it
    with ``run.end()``. Settings not given come from ``cfg.tracking`` (see
    :class:`TrackingOptions`), then ``MLFLOW_TRACKING_URI``,
    ``MLFLOW_EXPERIMENT_NAME`` and ``MLFLOW_RUN_ID``; the store defaults to the
    embedded one. ``cfg`` itself is logged (flattened params and ``config.yaml``),
    with ``params``, the system (git, Python, packages, host) and, while the run
    lasts, everything printed (``output.log``).

    In a distributed worker of rank > 0 the returned run is disabled (logs nothing).
    """
    options = tracking_options(cfg) or TrackingOptions()
    name = experiment_name(experiment, cfg)
    run_id = run_id or options.run_id or os.environ.get("MLFLOW_RUN_ID") or None
    target_uri = _store.tracking_uri(uri or options.uri)
    if not is_rank_zero(cfg):
        run = Run.disabled(name, run_id=run_id, uri=target_uri)
        _activate(run)
        return run
    if _active is not None and _active.enabled:
        raise TrackError(
            f"Run {_active.run_id} is already active in this process. End it first "
            f"(run.end(), or leave its 'with' block); @track.experiment inside a tracked "
            f"run logs into that run."
        )
    run = _open(
        target_uri,
        name,
        run_id=run_id,
        run_name=run_name or options.run_name,
        flush_interval=options.flush_interval,
    )
    _activate(run)
    try:
        if options.log_output if log_output is None else log_output:
            run.start_output()
        if options.log_system if log_system is None else log_system:
            run.log_system(source)
        run.set_tags({**options.tags, **(tags or {})})
        if cfg is not None:
            run.log_config(cfg, params)
        elif params:
            run.log_params(params)
    except BaseException as exc:
        run.end(exit_status(exc), error=exc)
        raise
    return run


def _open(
    uri: str, experiment: str, *, run_id: str | None, run_name: str | None, flush_interval: float
) -> Run:
    reason = _store.probe(uri)
    if reason is None:
        try:
            return _open_at(uri, experiment, run_id, run_name, flush_interval)
        except TrackError:
            raise
        except Exception as exc:
            if not is_connection_error(exc):
                raise TrackError(f"Cannot start a run at {uri}: {describe_error(exc)}") from exc
            reason = describe_error(exc)
    from forgeml.track._offline import open_offline

    start = int(time.time() * 1000)
    target, record = open_offline(
        target_uri=uri,
        experiment=experiment,
        run_name=run_name,
        start_time=start,
        remote_run_id=run_id,
        params={},
        tags={},
        reason=reason,
    )
    return Run(
        target,
        experiment=experiment,
        run_name=run_name,
        start_time=start,
        resumed=run_id is not None,
        configured_uri=uri,
        flush_interval=flush_interval,
        offline=record,
    )


def _open_at(
    uri: str, experiment: str, run_id: str | None, run_name: str | None, flush_interval: float
) -> Run:
    client = _store.client(uri)
    if run_id:
        try:
            existing = client.get_run(run_id)
        except Exception as exc:
            if getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                raise TrackError(
                    f"Cannot resume run {run_id}: there is no such run at {uri}. "
                    f"List runs with 'forgeml runs ls'."
                ) from None
            raise
        info = existing.info
        exp = client.get_experiment(info.experiment_id)
        resumes = int(existing.data.tags.get("forgeml.resumes", "0") or 0) + 1
        client.update_run(run_id, status="RUNNING")
        run = Run(
            Target(client, uri, run_id),
            experiment=exp.name,
            experiment_id=str(info.experiment_id),
            run_name=info.run_name,
            start_time=info.start_time,
            params=existing.data.params,
            tags=existing.data.tags,
            resumed=True,
            flush_interval=flush_interval,
        )
        run._log_name = f"output-resume{resumes}.log"
        run.set_tags({"forgeml.resumes": resumes})
        return run
    exp_id = _store.experiment_id(client, uri, experiment)
    created = client.create_run(exp_id, run_name=run_name)
    return Run(
        Target(client, uri, created.info.run_id),
        experiment=experiment,
        experiment_id=exp_id,
        run_name=created.info.run_name,
        start_time=created.info.start_time,
        flush_interval=flush_interval,
    )


def warn_offline(uri: str, reason: str, where: str) -> None:
    """Say once per process and server that runs are being recorded locally."""
    key = f"offline:{uri}"
    if key in _warned:
        return
    _warned.add(key)
    log.warning(
        "The tracking server %s cannot be reached (%s). The run goes on and is recorded "
        "locally in %s; push it with 'forgeml track sync' once the server is back.",
        uri,
        reason,
        where,
    )
