"""Secrets as environment variables of the jobs forgeml launches."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from forgeml.secrets._mask import NAMES_VAR, with_names
from forgeml.secrets._store import SecretStore


def inject(
    env: Mapping[str, str] | None = None,
    *,
    names: Iterable[str] | None = None,
    store: SecretStore | None = None,
) -> dict[str, str]:
    """A copy of ``env`` (default ``os.environ``) with the secrets added, for launching a job.

    ``names`` picks secrets (default: all of them). ``FORGEML_SECRET_NAMES`` lists
    their names, so the job masks their values in its logs and tracebacks
    (``app.run`` does that by itself; other programs call
    :func:`install_log_masking`). The values are masked in this process too.
    """
    result = dict(os.environ if env is None else env)
    secrets = (store if store is not None else SecretStore()).select(names)
    result.update(secrets)
    if secrets:
        result[NAMES_VAR] = with_names(result, secrets)
    return result
