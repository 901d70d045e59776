"""Credentials: an encrypted file of named secrets, handed to jobs as environment variables.

The file (``$FORGEML_SECRETS_FILE``, else ``~/.config/forgeml/secrets.enc``) is
encrypted with a key from ``$FORGEML_SECRETS_KEY`` or the OS keyring. Loaded
secrets are masked (``***``) in logs, tracebacks and anything passed through
:func:`mask` or :func:`mask_tree`. The ``forgeml secrets`` command manages the file.
"""

from forgeml._core._errors import SecretsError
from forgeml.secrets._env import inject
from forgeml.secrets._mask import (
    MASK,
    MIN_LENGTH,
    MaskingFilter,
    add_mask,
    install_log_masking,
    mask,
    mask_tree,
)
from forgeml.secrets._store import SecretStore, check_name, generate_key, secrets_file

__all__ = [
    "MASK",
    "MIN_LENGTH",
    "MaskingFilter",
    "SecretStore",
    "SecretsError",
    "add_mask",
    "check_name",
    "generate_key",
    "inject",
    "install_log_masking",
    "mask",
    "mask_tree",
    "secrets_file",
]
