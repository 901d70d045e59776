"""The settings of a server: options, their environment variables, typed parsing and checks.

Every option can come from the command line / the Python call, or else from an
environment variable ``FORGEML_SERVE_<OPTION>`` (what a container sets), or
else its default. Booleans are typed: ``true/1/yes/on`` and ``false/0/no/off``
(any case); anything else is an error that says so, never a silent ``True``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from forgeml._core._env import parse_bool
from forgeml._core._errors import ConfigError, ServeError, did_you_mean

#: The prefix of the environment variables that set serving options.
ENV_PREFIX = "FORGEML_SERVE_"
#: The environment variable the settings travel in to uvicorn's worker processes.
SETTINGS_ENV = "FORGEML_SERVE_SETTINGS_JSON"


@dataclass(frozen=True)
class ServeSettings:
    """What ``forgeml serve`` runs: the model, where, and how it batches.

    ``model`` is a model name (``forgeml models ls``) or a manifest ``.yml`` path;
    ``framework`` picks among a name's manifests; ``agent`` is the agent that runs
    it (default: the manifest's framework).
    """

    model: str
    framework: str | None = None
    agent: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    #: The most samples one model call gets.
    max_batch_size: int = 32
    #: How long the first request of a batch waits for others (milliseconds).
    max_latency_ms: float = 5.0
    #: The most requests waiting for the model; more get 429 Too Many Requests. A request
    #: with more than ``max_batch_size`` samples counts once per batch it needs.
    max_queue: int = 4096
    #: The largest request body, in MiB; larger ones get 413.
    max_request_mb: float = 16.0
    #: Off: every request runs alone (the baseline dynamic batching is compared with).
    batching: bool = True
    #: Run the model elsewhere: a forgeml server or any KServe-v2 endpoint at ``backend_url``.
    external: bool = False
    backend_url: str | None = None
    #: The name the model has on the backend (default: the model's name).
    backend_model: str | None = None
    #: Seconds a call to the backend may take.
    backend_timeout: float = 30.0
    #: Seconds the server waits for the backend to be ready before it gives up (the
    #: model then counts as failed: /readyz says why). 0: wait forever.
    backend_start_timeout: float = 300.0
    device: str = "cpu"
    threads: int | None = None
    log_level: str = "info"

    def __post_init__(self) -> None:
        def positive(name: str, value: Any, kind: type = int) -> None:
            ok = not isinstance(value, bool) and isinstance(value, int | float)
            if kind is int:
                ok = ok and float(value).is_integer()
            if not ok or value <= 0:
                what = "a positive integer" if kind is int else "a positive number"
                raise ServeError(f"The '{name}' option of serve must be {what}. Got {value!r}.")

        for name in ("port", "workers", "max_batch_size", "max_queue"):
            positive(name, getattr(self, name))
        for name in (
            "max_latency_ms",
            "max_request_mb",
            "backend_timeout",
            "backend_start_timeout",
        ):
            if name in ("max_latency_ms", "backend_start_timeout") and getattr(self, name) == 0:
                continue  # no waiting (a batch is whatever is queued) / wait forever
            positive(name, getattr(self, name), float)
        if self.threads is not None:
            positive("threads", self.threads)
        if self.port > 65535:
            raise ServeError(f"The 'port' option of serve must be 1-65535. Got {self.port}.")
        if self.external and not self.backend_url:
            raise ServeError(
                "External backend mode (--external, FORGEML_SERVE_EXTERNAL=true) needs the "
                "backend's URL: --backend_url http://HOST:PORT (or FORGEML_SERVE_BACKEND_URL)."
            )
        if self.backend_url and not self.backend_url.startswith(("http://", "https://")):
            raise ServeError(
                f"The backend URL must start with http:// or https://. Got {self.backend_url!r}."
            )

    @property
    def effective_batch_size(self) -> int:
        """``max_batch_size``, or 1 with batching off."""
        return self.max_batch_size if self.batching else 1

    @classmethod
    def resolve(
        cls, model: str, *, environ: Mapping[str, str] | None = None, **options: Any
    ) -> ServeSettings:
        """Settings from ``options`` (None: not given), else ``FORGEML_SERVE_*``, else defaults.

        ``backend_url`` without ``external`` turns external mode on, unless
        ``external`` is explicitly false (option or ``FORGEML_SERVE_EXTERNAL=false``).
        """
        env = os.environ if environ is None else environ
        known = {f.name: f for f in fields(cls) if f.name != "model"}
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise ServeError(
                f"Unknown serve option '{unknown[0]}'. Known: {', '.join(sorted(known))}."
                + did_you_mean(unknown[0], known)
            )
        values: dict[str, Any] = {}
        for name, spec in known.items():
            value = options.get(name)
            if value is None:
                text = env.get(ENV_PREFIX + name.upper())
                if text is not None and text.strip() != "":
                    value = _parse_env(ENV_PREFIX + name.upper(), text, spec.type)
            if value is not None:
                values[name] = value
        if values.get("backend_url") and "external" not in values:
            values["external"] = True
        return cls(model=model, **values)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))


def _parse_env(name: str, text: str, kind: Any) -> Any:
    kind = str(kind)
    if kind.startswith("bool"):
        try:
            return parse_bool(text, name=f"The environment variable {name}")
        except ConfigError as exc:
            raise ServeError(str(exc)) from None
    try:
        if kind.startswith("int"):
            return int(text)
        if kind.startswith("float"):
            return float(text)
    except ValueError:
        what = "an integer" if kind.startswith("int") else "a number"
        raise ServeError(f"The environment variable {name} must be {what}. Got {text!r}.") from None
    return text
