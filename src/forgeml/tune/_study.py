"""Studies: storage, samplers, pruners, workers, stale-trial recovery, results.

Optuna is imported inside functions: ``import forgeml.tune`` stays cheap.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from forgeml._core._env import forgeml_home
from forgeml._core._errors import ForgeMLError, TuneError, did_you_mean
from forgeml.config import Config
from forgeml.tune import _report
from forgeml.tune._space import SearchSpace, apply_values, object_def

if TYPE_CHECKING:
    from forgeml.objects import ObjectDef, Repo

#: Samplers by name (``--sampler``).
SAMPLERS = ("cmaes", "grid", "random", "tpe")
#: Pruners by name (``--pruner``).
PRUNERS = ("hyperband", "median", "none")
#: Optimisation directions.
DIRECTIONS = ("maximize", "minimize")
#: Where a study keeps forgeml's settings (config, space, metric, ...): a study user attribute.
META_KEY = "forgeml"
#: Seconds between a worker's heartbeats while a trial runs; a trial of another host
#: whose last heartbeat is older than :data:`STALE_AFTER` is taken as abandoned.
HEARTBEAT_INTERVAL = 30.0
STALE_AFTER = 180.0
#: Seconds after which a running trial that no worker signed is taken as abandoned.
UNSIGNED_AFTER = 10.0
#: Environment variable naming the process a local worker must not outlive.
PARENT_ENV = "FORGEML_TUNE_PARENT"

Printer = Callable[[str], None]


# ----------------------------------------------------------------------------- storage


def default_storage(study: str) -> Path:
    """The journal file a study uses unless told otherwise: ``<home>/tune/<study>.journal``."""
    return forgeml_home() / "tune" / f"{study}.journal"


def _storage_name(storage: str | os.PathLike[str] | None, study: str) -> str:
    if storage is None or str(storage) == "":
        return str(default_storage(study))
    text = os.fspath(storage)
    if "://" in text:
        return text
    return str(Path(text).expanduser().absolute())


def open_storage(storage: str | os.PathLike[str] | None, study: str) -> Any:
    """An Optuna storage that parallel workers may share.

    A path (default :func:`default_storage`) is a journal file
    (``JournalStorage`` + ``JournalFileBackend``, locked by file creation, so it
    works on NFS); a URL is an RDB (``postgresql://``, ``mysql://``). SQLite is
    refused: its locking breaks under parallel workers, on NFS in particular.
    """
    import optuna

    name = _storage_name(storage, study)
    if name.startswith("sqlite:"):
        raise TuneError(
            f"Storage {name!r} is a SQLite file, which is not safe for parallel workers. "
            f"Use a journal file (a path, e.g. --storage studies/{study}.journal, the default) "
            f"or a database server URL (postgresql://..., mysql://...)."
        )
    if "://" in name:
        try:
            return optuna.storages.RDBStorage(name)
        except Exception as exc:  # sqlalchemy raises many types
            raise TuneError(f"Cannot open the study storage {name!r}: {exc}") from None
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import (
        JournalFileBackend,
        JournalFileOpenLock,
        JournalStorage,
    )

    backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
    return JournalStorage(backend)


@contextlib.contextmanager
def _claim_lock(storage_name: str) -> Iterator[None]:
    """Serialise "count the trials, then ask for one" across workers of a journal file."""
    if "://" in storage_name:
        yield  # an RDB: no shared file to lock; parallel workers may overshoot --trials by a few
        return
    from optuna.storages.journal import JournalFileOpenLock

    lock = JournalFileOpenLock(storage_name + ".claim", grace_period=30)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def load_study(study: str, storage: str | os.PathLike[str] | None = None) -> Any:
    """The ``optuna.Study`` named ``study`` (raises :class:`TuneError` when there is none)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    name = _storage_name(storage, study)
    if "://" not in name and not Path(name).is_file():
        known = sorted(p.stem for p in default_storage(study).parent.glob("*.journal"))
        hint = f" Studies in {default_storage(study).parent}: {', '.join(known)}." if known else ""
        raise TuneError(
            f"No study '{study}': the storage '{name}' does not exist. Start it with "
            f"'forgeml tune CONFIG --space SPACE --study {study}', or pass --storage."
            + hint
            + (did_you_mean(study, known) if storage is None else "")
        )
    handle = open_storage(name, study)
    try:
        return optuna.load_study(study_name=study, storage=handle)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(handle)]
        raise TuneError(
            f"No study '{study}' in '{name}'. Known: {', '.join(known) or '(none)'}."
            + did_you_mean(study, known)
        ) from None


def _meta(study: Any) -> dict[str, Any]:
    meta = study.user_attrs.get(META_KEY)
    if not isinstance(meta, dict):
        raise TuneError(
            f"Study '{study.study_name}' was not created by forgeml tune (it has no "
            f"'{META_KEY}' settings), so its config is unknown."
        )
    return meta


# ----------------------------------------------------------------------------- samplers


def make_sampler(name: str, *, seed: int | None, space: SearchSpace) -> Any:
    """The Optuna sampler called ``name`` (one of :data:`SAMPLERS`)."""
    import optuna

    if name == "tpe":
        # constant_liar: parallel workers do not all sample next to the same running trial.
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if name == "cmaes":
        if importlib.util.find_spec("cmaes") is None:
            raise TuneError(
                "The cmaes sampler needs the 'cmaes' package, which is not installed. "
                "HINT: pip install cmaes (or pick --sampler tpe)."
            )
        return optuna.samplers.CmaEsSampler(seed=seed)
    raise TuneError(
        f"Unknown sampler {name!r}. Known: {', '.join(SAMPLERS)}." + did_you_mean(name, SAMPLERS)
    )


def make_pruner(name: str) -> Any:
    """The Optuna pruner called ``name`` (one of :data:`PRUNERS`)."""
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise TuneError(
        f"Unknown pruner {name!r}. Known: {', '.join(PRUNERS)}." + did_you_mean(name, PRUNERS)
    )


# ----------------------------------------------------------------------------- status


@dataclass
class StudyStatus:
    """Where a study stands: trial counts by state and the best trial so far."""

    study: str
    storage: str
    metric: str
    direction: str
    trials: int
    counts: dict[str, int]
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    sampler: str = ""
    pruner: str = ""
    run_id: str | None = None
    #: The Slurm job id of the workers, when ``optimize(slurm=True)`` submitted them.
    job: str | None = None

    @property
    def finished(self) -> int:
        """Trials that count toward ``trials``: complete, pruned, failed (not abandoned)."""
        return (
            self.counts.get("COMPLETE", 0)
            + self.counts.get("PRUNED", 0)
            + self.counts.get("FAIL", 0)
        )

    @property
    def done(self) -> bool:
        return self.finished >= self.trials

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "finished": self.finished, "done": self.done}

    def summary(self) -> str:
        counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.counts.items()) if n)
        head = (
            f"study '{self.study}': {self.finished}/{self.trials} trials ({counts or 'none yet'})"
        )
        if self.best_trial is None:
            return head + "; no complete trial yet"
        values = " ".join(f"{k}={_fmt(v)}" for k, v in self.best_params.items())
        return (
            f"{head}; best trial {self.best_trial}: {self.metric}={_fmt(self.best_value)} {values}"
        )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _counts(trials: Sequence[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in trials:
        state = t.state.name
        if state == "FAIL" and t.user_attrs.get("forgeml.stale"):
            state = "ABANDONED"  # a worker died under it; it was queued again
        counts[state] = counts.get(state, 0) + 1
    return counts


def status(study: str, storage: str | os.PathLike[str] | None = None) -> StudyStatus:
    """Trial counts and the best trial of a study."""
    handle = load_study(study, storage)
    meta = _meta(handle)
    trials = handle.get_trials(deepcopy=False)
    best = _best(handle)
    return StudyStatus(
        study=study,
        storage=_storage_name(storage, study),
        metric=str(meta.get("metric")),
        direction=str(meta.get("direction")),
        trials=int(meta.get("trials", 0)),
        counts=_counts(trials),
        best_trial=None if best is None else best.number,
        best_value=None if best is None else best.value,
        best_params={} if best is None else dict(best.params),
        sampler=str(meta.get("sampler", "")),
        pruner=str(meta.get("pruner", "")),
        run_id=meta.get("run_id"),
    )


def _best(study: Any) -> Any:
    try:
        return study.best_trial
    except ValueError:
        return None


# ----------------------------------------------------------------------------- entry


def _import_paths(meta: Mapping[str, Any]) -> None:
    for folder in (meta.get("workdir"), meta.get("config_dir")):
        if folder and folder not in sys.path:
            sys.path.insert(0, str(folder))


def resolve_entry(entry: Any) -> Callable[[Config], Any]:
    """The function ``"package.module:function"`` names."""
    if not isinstance(entry, str) or ":" not in entry:
        raise TuneError(
            f"The config's 'entry' must name the function to optimise as "
            f"'module:function' (e.g. entry: objective:train). Got {entry!r}."
        )
    module_name, _, attr = entry.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TuneError(
            f"Cannot import the entry module '{module_name}' ({exc}). It is looked up next to "
            f"the config file, in the working directory and on sys.path."
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        known = [n for n in dir(module) if callable(getattr(module, n)) and not n.startswith("_")]
        raise TuneError(
            f"Entry '{entry}': module '{module_name}' has no function '{attr}'."
            + did_you_mean(attr, known)
        )
    return fn  # type: ignore[no-any-return]


def _check_entry_module(entry: Any) -> None:
    """Check that the entry's module can be found, without importing it (a cheap check)."""
    if not isinstance(entry, str) or ":" not in entry:
        resolve_entry(entry)  # raises the message
        return
    module = str(entry).partition(":")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise TuneError(
            f"Cannot find the entry module '{module}'. It is looked up next to the config "
            f"file, in the working directory and on sys.path."
        )


def _metric_value(result: Any, metric: str, reported: list[tuple[int, float]]) -> float:
    if isinstance(result, Mapping):
        if metric not in result:
            raise TuneError(
                f"The entry returned {sorted(map(str, result))} but not the searched metric "
                f"'{metric}'. Return it (or a number), or fix --metric."
                + did_you_mean(metric, list(map(str, result)))
            )
        result = result[metric]
    if result is None:
        if reported:
            return reported[-1][1]
        raise TuneError(
            f"The entry returned None and reported no '{metric}' value. Return the metric, "
            f"or report it with tune.report(step, value) or track.log_metrics."
        )
    if isinstance(result, bool) or not isinstance(result, int | float):
        try:
            return float(result)
        except (TypeError, ValueError):
            raise TuneError(
                f"The entry must return the metric '{metric}' as a number or in a mapping. "
                f"Got {result!r}."
            ) from None
    return float(result)


def run_entry(cfg: Config, meta: Mapping[str, Any]) -> Any:
    """Seed from ``cfg.seed`` (when there is one) and call the config's entry with ``cfg``."""
    _import_paths(meta)
    fn = resolve_entry(cfg.get("entry"))
    seed = cfg.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0:
        from forgeml.app import seed_everything

        seed_everything(seed)
    return fn(cfg)


# ----------------------------------------------------------------------------- workers


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is dead
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return True


def _abandoned(trial: Any, now: float) -> bool:
    worker = str(trial.user_attrs.get("forgeml.worker", ""))
    if not worker:  # killed between taking the trial and signing it (milliseconds apart)
        start = trial.datetime_start
        return start is None or now - start.timestamp() > UNSIGNED_AFTER
    host, _, pid = worker.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return not _pid_alive(int(pid))
    beat = trial.user_attrs.get("forgeml.heartbeat")
    if not isinstance(beat, int | float):
        start = trial.datetime_start
        beat = start.timestamp() if start is not None else 0.0
    return now - float(beat) > STALE_AFTER


def recover_stale(study: Any, storage: Any) -> list[int]:
    """Fail the RUNNING trials whose worker is gone, and queue their values again.

    A trial is abandoned when its worker ran on this host and its process is
    dead, or ran elsewhere and sent no heartbeat for :data:`STALE_AFTER` seconds.
    Returns the numbers of the trials queued again.
    """
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(study.study_name)
    requeued: list[int] = []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _abandoned(trial, now):
            continue
        if _abandon(study, storage, study_id, trial.number, trial.params):
            requeued.append(trial.number)
    return requeued


def _abandon(
    study: Any, storage: Any, study_id: int, number: int, params: Mapping[str, Any]
) -> bool:
    """Mark a running trial failed and abandoned, and queue its values again.

    Returns False when the trial is no longer running: a live worker finished it
    after the caller listed it as RUNNING, and it is left as that worker told it.
    """
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    # Optuna refuses any write to a finished trial, so the mark goes first, while the
    # trial still runs. A trial finished between the two writes keeps its own state and
    # a stray mark, which readers ignore: "abandoned" means FAIL *and* the mark.
    try:
        storage.set_trial_user_attr(trial_id, "forgeml.stale", True)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except (UpdateFinishedTrialError, RuntimeError):  # finished meanwhile by a live worker
        return False
    study.enqueue_trial(dict(params), user_attrs={"forgeml.retry_of": number})
    return True


def _await_orphans(study: Any, storage: Any, echo: Printer | None) -> bool:
    """After the workers stopped short: requeue trials orphaned too recently to be seen
    at the start (killed between taking and signing them). True if any was requeued."""
    from optuna.trial import TrialState

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running:
        return False
    youngest = max((t.datetime_start.timestamp() for t in running if t.datetime_start), default=0)
    time.sleep(max(0.0, youngest + UNSIGNED_AFTER + 0.5 - time.time()))
    requeued = recover_stale(study, storage)
    if requeued and echo is not None:
        echo(f"trial(s) {', '.join(map(str, requeued))} lost their worker; queued again")
    return bool(requeued)


def _counted(trials: Sequence[Any]) -> int:
    from optuna.trial import TrialState

    n = 0
    for t in trials:
        stale = t.state == TrialState.FAIL and t.user_attrs.get("forgeml.stale")
        if t.state != TrialState.WAITING and not stale:
            n += 1
    return n


class _Heartbeat:
    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(storage, trial_id, interval), daemon=True
        )
        self._thread.start()

    def _loop(self, storage: Any, trial_id: int, interval: float) -> None:
        while not self._stop.wait(interval):
            with contextlib.suppress(Exception):
                storage.set_trial_user_attr(trial_id, "forgeml.heartbeat", time.time())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def die_with_parent() -> None:
    """In a local worker: exit when the process named by :data:`PARENT_ENV` dies."""
    parent = os.environ.get(PARENT_ENV, "")
    if not parent.isdigit():
        return
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != int(parent):
        os._exit(1)  # the parent died before prctl took effect


def run_worker(
    study: str,
    *,
    storage: str | os.PathLike[str] | None = None,
    trials: int | None = None,
    index: int = 0,
    echo: Printer | None = print,
) -> int:
    """Run trials of ``study`` until it has ``trials`` (default: the study's own target).

    Many workers (processes, Slurm array tasks) may run this at once against one
    storage. Returns the number of trials this worker ran.
    """
    import optuna

    storage_name = _storage_name(storage, study)
    handle = open_storage(storage_name, study)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    loaded = load_study(study, storage_name)
    meta = _meta(loaded)
    target = int(trials if trials is not None else meta.get("trials", 0))
    space = SearchSpace.from_dict(meta["space"], source=f"Study '{study}' space")
    seed = meta.get("seed")
    handle_study = optuna.load_study(
        study_name=study,
        storage=handle,
        sampler=make_sampler(
            str(meta["sampler"]), seed=None if seed is None else int(seed) + index, space=space
        ),
        pruner=make_pruner(str(meta["pruner"])),
    )
    _import_paths(meta)
    resolve_entry(Config(meta["config"]).get("entry"))  # fail before taking a trial
    ran = 0
    while True:
        with _claim_lock(storage_name):
            if _counted(handle_study.get_trials(deepcopy=False)) >= target:
                break
            trial = handle_study.ask()
            trial.set_user_attr("forgeml.worker", _worker_id())
        run_trial(handle_study, handle, trial, meta, space, echo=echo)
        ran += 1
    return ran


def run_trial(
    study: Any,
    storage: Any,
    trial: Any,
    meta: Mapping[str, Any],
    space: SearchSpace,
    *,
    echo: Printer | None = print,
) -> str:
    """Run one trial: the config with its values, a tracking run, the entry, pruning, tell."""
    from optuna.trial import TrialState

    metric = str(meta["metric"])
    started = time.time()
    params = space.suggest(trial)
    cfg = apply_values(Config(meta["config"]), params)
    info = _report.TrialInfo(
        study=study.study_name, number=trial.number, params=params, metric=metric
    )
    run = _start_trial_run(meta, study.study_name, trial.number, cfg) if meta.get("track") else None
    log = _hook_run(run, metric) if run is not None else (lambda _m, _s: None)
    active = _report._Active(info, trial, log)
    if run is not None:
        info.run_id = run.run_id
        trial.set_user_attr("forgeml.run_id", run.run_id)
        run._forgeml_tune_active = active
    beat = _Heartbeat(storage, trial._trial_id, HEARTBEAT_INTERVAL)
    _report.activate(active)
    state, value, error = "COMPLETE", None, None
    try:
        result = run_entry(cfg, meta)
        if active.pruned_at is not None:  # pruned, and the entry (a training loop) stopped
            raise _report.Pruned(f"pruned at step {active.pruned_at}")
        value = _metric_value(result, metric, info.reported)
        if not math.isfinite(value):
            raise TuneError(f"The entry returned a non-finite {metric}: {value!r}.")
    except (_report.Pruned, optuna_pruned()):
        state = "PRUNED"
    except Exception as exc:  # a failed trial is recorded; the search goes on
        state, error = "FAIL", exc
        trial.set_user_attr("forgeml.error", f"{type(exc).__name__}: {exc}"[:2000])
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): a resume runs these values again
        with contextlib.suppress(Exception):
            study_id = storage.get_study_id_from_name(study.study_name)
            _abandon(study, storage, study_id, trial.number, trial.params)
        if run is not None:
            with contextlib.suppress(Exception):
                run.end("KILLED")
        raise
    finally:
        _report.activate(None)
        beat.stop()
    try:
        if state == "COMPLETE":
            study.tell(trial, value)
        else:
            study.tell(trial, state=TrialState[state])
    except RuntimeError as exc:  # the grid sampler stops the study when its grid is done:
        if "Study.stop" not in str(exc):  # the trial is told by then; the count stops us
            raise
    seconds = time.time() - started
    if run is not None:
        final = value if value is not None else (info.reported[-1][1] if info.reported else None)
        with contextlib.suppress(ForgeMLError):
            if final is not None:
                run.log_metrics({metric: final})
            run.set_tags({"forgeml.trial_state": state})
            run.end("FINISHED" if state != "FAIL" else "FAILED", error=error)
    if echo is not None:
        shown = value if value is not None else (info.reported[-1][1] if info.reported else None)
        values = " ".join(f"{k}={_fmt(v)}" for k, v in params.items())
        what = f"{metric}={_fmt(shown)}" if shown is not None else "-"
        tail = f" ({type(error).__name__}: {error})" if error is not None else ""
        if state == "PRUNED" and info.reported:
            tail = f" (at step {info.reported[-1][0]})"
        echo(f"trial {trial.number} {state.lower()}: {what} {values} [{seconds:.1f} s]{tail}")
        if error is not None and not isinstance(error, ForgeMLError):
            echo("".join(traceback.format_exception(error)).rstrip())
    return state


def optuna_pruned() -> type[BaseException]:
    import optuna

    return optuna.TrialPruned


def _start_trial_run(meta: Mapping[str, Any], study: str, number: int, cfg: Config) -> Any:
    from forgeml import track

    tags = {"forgeml.study": study, "forgeml.trial": number}
    if meta.get("run_id"):
        tags["mlflow.parentRunId"] = meta["run_id"]
    return track.start_run(
        str(meta.get("experiment") or study),
        run_name=f"{study}-trial-{number}",
        tags=tags,
        cfg=cfg,
        log_output=False,
        log_system=False,
    )


def _hook_run(run: Any, metric: str) -> Callable[[Mapping[str, Any], int], None]:
    """Make ``track.log_metrics`` of the searched metric (with a step) feed the pruner."""
    original = run.log_metrics

    def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
        original(metrics, step=step)
        active = getattr(run, "_forgeml_tune_active", None)
        if active is not None and step is not None and metric in metrics:
            active.observe(int(step), float(metrics[metric]))

    run.log_metrics = log_metrics

    def log(metrics: Mapping[str, Any], step: int) -> None:
        original(metrics, step=step)

    return log


# ----------------------------------------------------------------------------- optimize


def _tracking_section(cfg: Mapping[str, Any]) -> Any:
    return cfg.get("tracking", True)


def optimize(
    config: str | os.PathLike[str],
    space: str | os.PathLike[str] | SearchSpace | Mapping[str, Any],
    *,
    metric: str,
    direction: str = "maximize",
    trials: int = 50,
    sampler: str = "tpe",
    pruner: str = "median",
    jobs: int = 1,
    study: str | None = None,
    storage: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    overrides: Sequence[str] = (),
    track: bool = True,
    slurm: bool = False,
    slurm_options: Mapping[str, Any] | None = None,
    echo: Printer | None = print,
) -> StudyStatus:
    """Search ``space`` over the config ``config`` until the study has ``trials`` trials.

    Creates the study, or resumes it (same name and storage): trials already
    finished count toward ``trials``, and trials left running by a killed worker
    are failed and queued again. ``jobs`` workers run at once, as local processes
    or (``slurm=True``) as one Slurm array. Returns the study's status.
    """
    import optuna

    from forgeml.config import load

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for label, value, known in (
        ("direction", direction, DIRECTIONS),
        ("sampler", sampler, SAMPLERS),
        ("pruner", pruner, PRUNERS),
    ):
        if value not in known:
            raise TuneError(
                f"Unknown {label} {value!r}. Known: {', '.join(known)}."
                + did_you_mean(str(value), known)
            )
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise TuneError(f"'trials' must be a positive integer. Got {trials!r}.")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise TuneError(f"'jobs' must be a positive integer. Got {jobs!r}.")
    config_path = Path(config)
    if not config_path.is_file():
        raise TuneError(f"Config file '{config_path}' does not exist.")
    cfg = load(config_path, *overrides)
    if isinstance(space, SearchSpace):
        search = space
    elif isinstance(space, Mapping):
        search = SearchSpace.from_dict(space)
    else:
        search = SearchSpace.load(space)
    search.check(cfg)
    meta: dict[str, Any] = {
        "config": cfg.to_dict(),
        "config_path": str(config_path.absolute()),
        "config_dir": str(config_path.absolute().parent),
        "workdir": str(Path.cwd()),
        "space": search.to_dict(),
        "metric": metric,
        "direction": direction,
        "sampler": sampler,
        "pruner": pruner,
        "seed": seed if seed is not None else cfg.get("seed", 0),
        "trials": trials,
        "track": bool(track) and _tracking_section(cfg) is not False,
    }
    _import_paths(meta)
    if jobs == 1 and not slurm:
        resolve_entry(cfg.get("entry"))  # fail now; worker processes check it themselves
    else:
        _check_entry_module(cfg.get("entry"))
    if sampler == "grid":
        size = math.prod(len(v) for v in search.grid().values())
        if trials > size:
            if echo is not None:
                echo(f"the grid has {size} points: running {size} trials, not {trials}")
            trials = meta["trials"] = size
    name = study or config_path.stem
    storage_name = _storage_name(storage, name)
    handle = open_storage(storage_name, name)
    created = optuna.create_study(
        study_name=name,
        storage=handle,
        direction=direction,  # type: ignore[arg-type]
        load_if_exists=True,
    )
    previous = created.user_attrs.get(META_KEY)
    if isinstance(previous, dict):
        for key in ("space", "metric", "direction", "config"):
            if _comparable(previous.get(key)) != _comparable(meta[key]):
                raise TuneError(
                    f"Study '{name}' in '{storage_name}' exists with a different {key} "
                    f"(was {previous.get(key)!r}, now {meta[key]!r}). Resume it with the same "
                    f"config, space, metric and direction, or start a new study (--study NAME)."
                )
        meta["run_id"] = previous.get("run_id")
        meta["experiment"] = previous.get("experiment")
    if meta["track"] and not meta.get("run_id"):
        meta["experiment"] = _experiment(cfg, name)
        meta["run_id"] = _study_run(meta, name, storage_name)
    created.set_user_attr(META_KEY, meta)
    requeued = recover_stale(created, handle)
    if requeued and echo is not None:
        echo(f"resuming: trial(s) {', '.join(map(str, requeued))} lost their worker; queued again")
    before = status(name, storage_name)
    if echo is not None and before.finished:
        echo(f"resuming study '{name}': {before.finished}/{trials} trials already finished")
    job = None
    if not before.done and slurm:
        job = _launch_slurm(name, storage_name, trials, jobs, slurm_options or {}, echo)
    elif not before.done:
        for _ in range(3):
            if jobs == 1:
                run_worker(name, storage=storage_name, trials=trials, echo=echo)
            else:
                _run_local_workers(name, storage_name, trials, jobs, quiet=echo is None)
            if status(name, storage_name).done or not _await_orphans(created, handle, echo):
                break
    after = status(name, storage_name)
    after.job = job
    summarized = created.user_attrs.get("forgeml.summarized")
    if meta["track"] and meta.get("run_id") and after.done and summarized != after.finished:
        _finish_study_run(meta, after)
        created.set_user_attr("forgeml.summarized", after.finished)
    return after


def _comparable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if k != "__file__"}
    return value


def _experiment(cfg: Mapping[str, Any], study: str) -> str:
    section = cfg.get("tracking")
    if isinstance(section, Mapping) and section.get("experiment"):
        return str(section["experiment"])
    return study


def _study_run(meta: Mapping[str, Any], study: str, storage: str) -> str | None:
    from forgeml import track

    run = track.start_run(
        str(meta["experiment"]),
        run_name=study,
        tags={"forgeml.study": study, "forgeml.role": "study", "forgeml.storage": storage},
        cfg=Config(meta["config"]),
        params={
            "tune.metric": meta["metric"],
            "tune.direction": meta["direction"],
            "tune.sampler": meta["sampler"],
            "tune.pruner": meta["pruner"],
            "tune.seed": meta["seed"],
        },
        log_output=False,
        log_system=False,
    )
    try:
        run.log_dict(meta["space"], "space.yaml")
    finally:
        run.end()
    return None if run.run_id is None else str(run.run_id)


def _finish_study_run(meta: Mapping[str, Any], result: StudyStatus) -> None:
    from forgeml import track

    with contextlib.suppress(ForgeMLError):
        run = track.start_run(
            str(meta["experiment"]), run_id=str(meta["run_id"]), log_output=False, log_system=False
        )
        try:
            counts = {f"tune.{k.lower()}": float(v) for k, v in result.counts.items()}
            if result.best_value is not None:
                counts[f"best.{result.metric}"] = float(result.best_value)
            run.log_metrics(counts)
            if result.best_trial is not None:
                run.set_tags(
                    {
                        "forgeml.best_trial": result.best_trial,
                        **{f"best.{k}": v for k, v in result.best_params.items()},
                    }
                )
        finally:
            run.end()


def worker_command(study: str, storage: str, trials: int, index: int | None = None) -> list[str]:
    """The command line of one worker (``forgeml tune worker ...``)."""
    command = [
        sys.executable,
        "-m",
        "forgeml",
        "tune",
        "worker",
        study,
        "--storage",
        storage,
        "--trials",
        str(trials),
    ]
    if index is not None:
        command += ["--index", str(index)]
    return command


def _run_local_workers(
    study: str, storage: str, trials: int, jobs: int, *, quiet: bool = False
) -> None:
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    extra = ["--quiet"] if quiet else []
    procs = [
        subprocess.Popen([*worker_command(study, storage, trials, i), *extra], env=env)
        for i in range(jobs)
    ]
    try:
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            with contextlib.suppress(OSError):
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # deaf to SIGTERM: stop it for good
                with contextlib.suppress(OSError):
                    p.kill()
                p.wait()
        raise
    failed = [(i, c) for i, c in enumerate(codes) if c != 0]
    if failed:
        raise TuneError(
            f"{len(failed)} of {jobs} workers of study '{study}' failed (exit codes "
            f"{', '.join(str(c) for _, c in failed)}); their output is above. Fix the cause "
            f"and run the same command again: the study resumes."
        )


def _launch_slurm(
    study: str,
    storage: str,
    trials: int,
    jobs: int,
    options: Mapping[str, Any],
    echo: Printer | None,
) -> str:
    try:
        jobs_module = importlib.import_module("forgeml.jobs")
    except ImportError:
        raise TuneError(
            "--slurm needs forgeml.jobs, which this installation lacks. Run the workers "
            "yourself: " + " ".join(worker_command(study, storage, trials))
        ) from None
    if "://" not in storage and echo is not None:
        echo(f"the Slurm workers share the journal '{storage}': it must be on a shared filesystem")
    job = jobs_module.launch(
        worker_command(study, storage, trials),
        overrides=[["--index", str(i)] for i in range(jobs)],
        name=f"tune-{study}",
        array_parallelism=jobs,
        **dict(options),
    )
    if echo is not None:
        echo(f"submitted {jobs} worker(s) of study '{study}' to Slurm: {job}")
        echo(f"follow it with: forgeml tune status {study} --storage {storage}")
    return str(job.id)


# ----------------------------------------------------------------------------- best


def best_config(study: str, storage: str | os.PathLike[str] | None = None) -> Config:
    """The study's config with the best trial's values applied."""
    handle = load_study(study, storage)
    meta = _meta(handle)
    best = _best(handle)
    if best is None:
        raise TuneError(
            f"Study '{study}' has no complete trial yet. Run more trials, or check "
            f"'forgeml tune status {study}' for failures."
        )
    cfg = apply_values(Config(meta["config"]), best.params)
    _import_paths(meta)
    return cfg


def best_definition(
    study: str, key: str = "model", storage: str | os.PathLike[str] | None = None
) -> ObjectDef:
    """The :class:`~forgeml.objects.ObjectDef` at ``key`` of the best trial's config."""
    cfg = best_config(study, storage)
    node = cfg.get_path(key)
    if node is None:
        raise TuneError(
            f"The config of study '{study}' has no key '{key}'. Name the object definition "
            f"with key= (--object)." + did_you_mean(key, [str(k) for k in cfg])
        )
    return object_def(node)


def retrain(study: str, storage: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Run the entry once more with the best trial's config (and its seed), untracked.

    Returns ``{"value": the metric, "result": what the entry returned}``. The value
    equals the best trial's only when the config has a ``seed`` (each run is seeded
    from it) and the entry is deterministic given that seed: no unseeded randomness,
    no nondeterministic kernels (GPU atomics, thread races), no data that changed.
    Otherwise expect a value near the best trial's, not the same one.
    """
    handle = load_study(study, storage)
    meta = _meta(handle)
    cfg = best_config(study, storage)
    result = run_entry(cfg, meta)
    return {"value": _metric_value(result, str(meta["metric"]), []), "result": result}


def save_best(
    study: str,
    repo: str | os.PathLike[str] | Repo,
    *,
    key: str = "model",
    storage: str | os.PathLike[str] | None = None,
    retrain_first: bool = False,
    tags: Sequence[str] = (),
) -> str:
    """Build the best trial's object definition (``key`` of its config) and add it to ``repo``.

    With ``retrain_first`` the entry runs again with the best config and the
    trained object it returns (``{"object": obj, ...}``) is saved instead.
    Returns the stored object's id.
    """
    return _save_best(study, repo, key, storage, retrain_first, tags, None)


def _save_best(
    study: str,
    repo: str | os.PathLike[str] | Repo,
    key: str,
    storage: str | os.PathLike[str] | None,
    retrain_first: bool,
    tags: Sequence[str],
    retrained: Any,
) -> str:
    from forgeml.objects import Object, Repo

    store = repo if isinstance(repo, Repo) else Repo(os.fspath(repo), create=True)
    number = status(study, storage).best_trial
    if retrain_first:
        result = retrained if retrained is not None else retrain(study, storage)["result"]
        obj = result.get("object") if isinstance(result, Mapping) else None
        if not isinstance(obj, Object):
            raise TuneError(
                "To save a retrained object, the entry must return a mapping with the "
                "trained forgeml Object under 'object' (and the metric). Got "
                f"{type(result).__name__}."
            )
    else:
        obj = best_definition(study, key, storage).build()
    return str(store.add_object(obj, tags=["tune", study, f"trial-{number}", *tags]))
