"""Where runs are recorded: tracking URIs, MLflow clients, experiments, reachability."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from forgeml._core._env import forgeml_home
from forgeml._core._errors import TrackError

log = logging.getLogger("forgeml.track")

#: Seconds a reachability check of a tracking server may take.
PROBE_TIMEOUT = 5.0
#: MLflow's HTTP retry settings when the user set none: a dead server is noticed in
#: seconds, not after MLflow's default of 7 retries with exponential backoff (minutes).
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def embedded_uri() -> str:
    """The embedded store: ``sqlite:///<forgeml home>/mlruns.db`` (see ``forgeml_home()``)."""
    return f"sqlite:///{forgeml_home() / 'mlruns.db'}"


def tracking_uri(uri: str | None = None, cfg: Mapping[str, Any] | None = None) -> str:
    """The tracking URI in effect: ``uri``, else ``cfg.tracking.uri``, else the
    ``MLFLOW_TRACKING_URI`` environment variable, else the embedded SQLite store."""
    if not uri and cfg is not None:
        section = cfg.get("tracking")
        if isinstance(section, Mapping):
            uri = section.get("uri")
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or embedded_uri()
    return normalize_uri(str(uri))


def normalize_uri(uri: str) -> str:
    """Make ``sqlite:///relative.db`` absolute, so the store does not move with the cwd."""
    if uri.startswith("sqlite:///"):
        path = unquote(uri[len("sqlite:///") :])
        if path and not path.startswith("/") and path != ":memory:":
            return f"sqlite:///{Path(path).absolute()}"
    return uri


def is_remote(uri: str) -> bool:
    """True for a tracking server reached over HTTP(S)."""
    return urlsplit(uri).scheme in ("http", "https")


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(unquote(uri[len("sqlite:///") :]))


def artifact_root(uri: str) -> Path | None:
    """Where a SQLite store keeps artifacts: ``mlartifacts/`` next to its database.

    MLflow's own default (``./mlruns`` in the working directory) would scatter
    artifacts across every folder a program is started from.
    """
    path = sqlite_path(uri)
    return None if path is None else path.parent / "mlartifacts"


def store_exists(uri: str) -> bool:
    """False for a SQLite store whose file does not exist yet (reading it would create it)."""
    path = sqlite_path(uri)
    return path is None or path.is_file()


@contextlib.contextmanager
def _quiet_store_setup() -> Iterator[None]:
    """Hide MLflow's and Alembic's INFO lines while a new SQLite database is created."""
    loggers = [logging.getLogger(n) for n in ("mlflow.store.db.utils", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def http_defaults() -> None:
    """Apply :data:`HTTP_DEFAULTS` for settings the user left unset."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)


def client(uri: str) -> Any:
    """An ``mlflow.MlflowClient`` for ``uri`` (tracking and model registry), one per URI."""
    with _clients_lock:
        found = _clients.get(uri)
        if found is not None:
            return found
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as exc:
            raise TrackError(
                "forgeml.track needs MLflow, which is not installed. "
                "HINT: pip install 'forgeml[tracking]'"
            ) from exc
        path = sqlite_path(uri)
        if path is not None and not path.exists():
            _new_sqlite_store(path)
        if is_remote(uri):
            http_defaults()
        try:
            with _quiet_store_setup():
                made = MlflowClient(tracking_uri=uri, registry_uri=uri)
                if path is not None:
                    made.search_experiments(max_results=1)  # create the tables now, quietly
        except Exception as exc:
            raise TrackError(f"Cannot open the tracking store {uri}: {exc}") from exc
        _clients[uri] = made
        return made


def _template_store() -> Path:
    """An empty store with MLflow's current schema, made once per MLflow version.

    Creating a SQLite store runs every MLflow schema migration (seconds); copying
    this one takes milliseconds. It lives in ``$FORGEML_CACHE`` (``~/.cache/forgeml``).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from forgeml.store import cache_dir

    cache = cache_dir()
    template = cache / f"mlflow-{mlflow.__version__}-empty.db"
    if template.is_file():
        return template
    cache.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".mlflow-template-", dir=cache))
    try:
        with _quiet_store_setup():
            MlflowClient(tracking_uri=f"sqlite:///{folder / 'empty.db'}").search_experiments()
        os.replace(folder / "empty.db", template)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return template


def _new_sqlite_store(path: Path) -> None:
    """Create the SQLite store ``path`` from :func:`_template_store` (else MLflow makes it).

    MLflow's ``Default`` experiment (id 0) gets its artifact folder next to the
    database (``mlartifacts/0``), where a store made by MLflow would point at the
    working directory of the process that created it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        template = _template_store()
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        try:
            shutil.copyfile(template, tmp)
            root = path.parent / "mlartifacts" / "0"
            with contextlib.closing(sqlite3.connect(tmp)) as db, db:
                db.execute(
                    "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                    (str(root),),
                )
            with contextlib.suppress(FileExistsError):  # another process made it meanwhile
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    except Exception as exc:  # MLflow creates the store itself, only slower
        log.debug("could not copy a template MLflow store to %s: %s", path, exc)


def probe(uri: str, timeout: float = PROBE_TIMEOUT) -> str | None:
    """Why the tracking server at ``uri`` cannot be reached, or None when it answers.

    Any HTTP answer counts as reachable (a 401 or 404 means a server is there);
    only local stores and HTTP(S) servers are checked.
    """
    if not is_remote(uri):
        return None
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return (
            f"{type(reason).__name__}: {reason}" if isinstance(reason, Exception) else str(reason)
        )


_CONNECTION_WORDS = re.compile(
    r"Max retries exceeded|Connection refused|ConnectionError|ConnectTimeout|ReadTimeout|"
    r"timed out|Failed to establish a new connection|RemoteDisconnected|Connection aborted|"
    r"Connection reset|Name or service not known|failed with timeout exception"
)


def is_connection_error(exc: BaseException) -> bool:
    """True when ``exc`` means the server could not be reached (not that it said no)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionError | TimeoutError):
            return True
        module = type(current).__module__
        if module.startswith(("requests", "urllib3")) and (
            "Connection" in type(current).__name__
            or "Timeout" in type(current).__name__
            or "MaxRetry" in type(current).__name__
        ):
            return True
        if type(current).__name__ == "MlflowException" and str(current).startswith(
            "API request to"
        ):
            return bool(_CONNECTION_WORDS.search(str(current)))
        current = current.__cause__ or current.__context__
    return False


def describe_error(exc: BaseException) -> str:
    """A one-line account of ``exc`` for messages (MLflow's can run to pages)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def slug(name: str) -> str:
    """A folder name for an experiment: letters, digits, ``-_.`` only."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    return cleaned or "experiment"


def experiment_id(client_: Any, uri: str, name: str) -> str:
    """The id of the experiment called ``name``, created (with a tidy artifact folder) if new."""
    found = client_.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise TrackError(
                f"Experiment '{name}' at {uri} is deleted. Restore it (mlflow experiments "
                f"restore) or use another name."
            )
        return str(found.experiment_id)
    root = artifact_root(uri)
    location = None if root is None else str(root / slug(name))
    try:
        return str(client_.create_experiment(name, artifact_location=location))
    except Exception as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
        return str(client_.get_experiment_by_name(name).experiment_id)  # created meanwhile


class Target(NamedTuple):
    """Where a run's records go now: a client, its URI and the run's id in that store."""

    client: Any
    uri: str
    run_id: str
