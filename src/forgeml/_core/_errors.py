"""The exception hierarchy: one root, one subclass per area.

Messages say what was wrong, the value received and the fix.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ForgeMLError(Exception):
    """Root of every error forgeml raises on purpose."""


class ConfigError(ForgeMLError, ValueError):
    """A configuration file, include or override is invalid."""


class ArgumentError(ForgeMLError, ValueError):
    """A command-line option or a function signature cannot be turned into options."""


class AppError(ForgeMLError):
    """The launcher could not start, daemonize or distribute a run."""


class RegistryError(ForgeMLError, LookupError):
    """A name is not registered at an extension point, or its module cannot be loaded."""


class FormatError(ForgeMLError, ValueError):
    """A file cannot be saved or loaded in the format its suffix names (``forgeml.io``)."""


class ObjectError(ForgeMLError):
    """An object cannot be defined, saved, loaded or found (``forgeml.objects``)."""


class DataError(ForgeMLError, ValueError):
    """A dataset cannot be built, transformed or converted (``forgeml.data``)."""


class StoreError(ForgeMLError):
    """Storage, file fetchers or the cache failed (``forgeml.store``)."""


class HubError(ForgeMLError):
    """A checkpoint cannot be resolved, downloaded or verified (``forgeml.hub``)."""


class EvalError(ForgeMLError):
    """A model, agent, task, dataset or evaluation is invalid (``forgeml.eval``)."""


class ExportError(ForgeMLError):
    """A model cannot be exported, or its export fails the parity check (``forgeml.export``)."""


class NotifyError(ForgeMLError, ValueError):
    """A notification cannot be configured (``forgeml.notify``); failed posts never raise."""


class SecretsError(ForgeMLError):
    """A secret cannot be stored, read or decrypted, or its key is missing (``forgeml.secrets``)."""


class TrackError(ForgeMLError):
    """A run cannot be started, logged to, resumed, queried or synced (``forgeml.track``)."""


class ServeError(ForgeMLError):
    """A model cannot be served, or a serving option or backend is invalid (``forgeml.serve``)."""


ServeError.__module__ = "forgeml"


class PackageError(ForgeMLError):
    """A build context cannot be written, or a packaging option is invalid (``forgeml.package``)."""


PackageError.__module__ = "forgeml"


class TuneError(ForgeMLError):
    """A search space, study, sampler, pruner or trial cannot be set up (``forgeml.tune``)."""


TuneError.__module__ = "forgeml"


class JobsError(ForgeMLError):
    """A Slurm job cannot be launched, found, queried, stopped or relaunched (``forgeml.jobs``)."""


JobsError.__module__ = "forgeml"


class ContextError(ForgeMLError):
    """A compute context cannot be requested, started or run in (``forgeml.context``)."""


class ContextIncompatibilityError(ContextError):
    """The active compute context does not satisfy a request (``forgeml.context``)."""


class ContextResourceError(ContextError):
    """A resource pool cannot grant a request: too few CPUs or GPUs free (``forgeml.context``)."""


class ContextChildError(ContextError):
    """A function run in a compute context raised; carries the child's traceback."""

    #: the qualified name of the exception's type in the child, e.g. ``"builtins.ValueError"``
    child_type: str = ""
    #: the traceback formatted in the child process
    child_traceback: str = ""


for _context_error in (
    ContextError,
    ContextIncompatibilityError,
    ContextResourceError,
    ContextChildError,
):
    _context_error.__module__ = "forgeml"


class TemplateError(ForgeMLError):
    """A project cannot be created from the template, or updated from it (``forgeml new``)."""


TemplateError.__module__ = "forgeml"


class TraceError(ForgeMLError):
    """A trace level, exporter, endpoint or trace file is invalid (``forgeml.trace``)."""


TraceError.__module__ = "forgeml"


class TrainError(ForgeMLError, ValueError):
    """A model cannot be built, trained or scored (``forgeml.train``, ``forgeml.metrics``)."""


class CLIError(ForgeMLError):
    """A command of the ``forgeml`` CLI failed in a way the user can fix."""


for _error in (
    ForgeMLError,
    ConfigError,
    ArgumentError,
    AppError,
    RegistryError,
    FormatError,
    ObjectError,
    DataError,
    StoreError,
    HubError,
    EvalError,
    ExportError,
    NotifyError,
    SecretsError,
    TrackError,
    TrainError,
    CLIError,
):
    _error.__module__ = "forgeml"  # tracebacks read forgeml.ConfigError


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest known name, or ``""``."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" Did you mean '{matches[0]}'?" if matches else ""
