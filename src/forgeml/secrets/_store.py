"""The encrypted secrets file and its key.

File format (UTF-8 JSON, mode 0600)::

    {"format": "forgeml-secrets", "version": 1, "cipher": "fernet", "token": "gAAAAA..."}

``token`` is the Fernet token (AES-128-CBC + HMAC-SHA256, from ``cryptography``)
of the JSON object ``{"NAME": "value", ...}``. The key is a urlsafe-base64
Fernet key taken from ``FORGEML_SECRETS_KEY``, or else from the OS keyring
(service ``forgeml``, user ``secrets-key``), where the first ``set`` creates it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from forgeml._core._errors import SecretsError, did_you_mean
from forgeml.secrets._mask import KEY_VAR, NAMES_VAR, add_mask

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

log = logging.getLogger("forgeml.secrets")


#: Environment variable naming the secrets file.
FILE_VAR = "FORGEML_SECRETS_FILE"
#: Where the key lives in the OS keyring.
KEYRING_SERVICE, KEYRING_USER = "forgeml", "secrets-key"
FORMAT, VERSION, CIPHER = "forgeml-secrets", 1, "fernet"

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = {KEY_VAR, FILE_VAR, NAMES_VAR}
_KEYGEN_HINT = (
    "On a machine without a desktop keyring (a server, CI, a container), keep the key in "
    f"an environment variable: `export {KEY_VAR}=$(forgeml secrets keygen)` once, and keep "
    "that key somewhere safe (a CI secret, a password manager): it is the only way to "
    "read the file."
)


def secrets_file() -> Path:
    """The secrets file: ``$FORGEML_SECRETS_FILE``, or ``~/.config/forgeml/secrets.enc``."""
    given = os.environ.get(FILE_VAR)
    if given:
        return Path(given).expanduser().absolute()
    return Path.home() / ".config" / "forgeml" / "secrets.enc"


def generate_key() -> str:
    """A new random key (urlsafe base64, 44 characters), as ``forgeml secrets keygen`` prints."""
    return _fernet_class().generate_key().decode("ascii")


def check_name(name: str) -> str:
    """``name`` if it is a valid environment variable name for a secret, else SecretsError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SecretsError(
            f"A secret's name must be an environment variable name (letters, digits and "
            f"'_', not starting with a digit), such as DB_PASSWORD. Got {name!r}."
        )
    if name in _RESERVED:
        raise SecretsError(f"'{name}' is used by forgeml itself; pick another name for a secret.")
    return name


def _fernet_class() -> type[Fernet]:
    try:
        from cryptography.fernet import Fernet
    except ImportError as exc:
        raise SecretsError(
            "forgeml.secrets needs the 'cryptography' package. HINT: pip install 'forgeml[secrets]'"
        ) from exc
    return Fernet


class SecretStore:
    """The encrypted file of named secrets.

    ``path`` defaults to :func:`secrets_file`; ``key`` (a Fernet key) defaults to
    ``$FORGEML_SECRETS_KEY``, else the OS keyring. Every value read is also
    registered with the masker (:func:`forgeml.secrets.mask`).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *, key: str | None = None):
        self.path = Path(path).expanduser().absolute() if path is not None else secrets_file()
        self._key = key.strip() if key is not None else None
        self._key_source = "the key passed to SecretStore" if key is not None else ""

    def __repr__(self) -> str:
        return f"SecretStore({str(self.path)!r})"

    # ------------------------------------------------------------------ reading

    def load(self) -> dict[str, str]:
        """Every secret, ``{name: value}``; empty when the file does not exist yet."""
        if not self.path.exists():
            return {}
        secrets = self._decrypt(self._read_token(), self._fernet(create=False))
        add_mask(*secrets.values())
        return secrets

    def names(self) -> list[str]:
        """The names of the stored secrets, sorted."""
        return sorted(self.load())

    def get(self, name: str) -> str:
        """The value of secret ``name``."""
        check_name(name)
        secrets = self.load()
        if name not in secrets:
            raise self._unknown(name, secrets)
        return secrets[name]

    def select(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """The secrets named (all when ``names`` is None); an unknown name is an error."""
        secrets = self.load()
        if names is None:
            return secrets
        chosen = [check_name(n) for n in names]
        for name in chosen:
            if name not in secrets:
                raise self._unknown(name, secrets)
        return {n: secrets[n] for n in chosen}

    # ------------------------------------------------------------------ writing

    def set(self, name: str, value: str) -> None:
        """Store ``value`` under ``name`` (replacing any previous value)."""
        check_name(name)
        if not isinstance(value, str) or value == "":
            raise SecretsError(f"The value of secret {name} is empty; nothing was stored.")
        if "\0" in value:
            raise SecretsError(
                f"The value of secret {name} contains a NUL character, which an environment "
                f"variable cannot hold; nothing was stored."
            )
        with self._locked():
            # A new key only for a new file: one made for an existing file could never read it.
            exists = self.path.exists()
            fernet = self._fernet(create=not exists)
            secrets = self._decrypt(self._read_token(), fernet) if exists else {}
            secrets[name] = value
            self._write(secrets, fernet)
        add_mask(value)

    def remove(self, *names: str) -> None:
        """Remove these secrets; if any is unknown, nothing is removed."""
        for name in names:
            check_name(name)
        if not names:
            return
        with self._locked():
            if not self.path.exists():
                raise self._unknown(names[0], {})
            fernet = self._fernet(create=False)
            secrets = self._decrypt(self._read_token(), fernet)
            for name in names:
                if name not in secrets:
                    raise self._unknown(name, secrets)
            for name in names:
                del secrets[name]
            self._write(secrets, fernet)

    # ------------------------------------------------------------------ internals

    def _unknown(self, name: str, secrets: dict[str, str]) -> SecretsError:
        known = ", ".join(sorted(secrets)) or "none"
        hint = did_you_mean(name, secrets) or f" Add it with `forgeml secrets set {name}`."
        return SecretsError(f"No secret named '{name}' in {self.path}. Known: {known}.{hint}")

    def _read_token(self) -> bytes:
        try:
            raw = self.path.read_bytes()
        except OSError as exc:
            raise SecretsError(f"Cannot read the secrets file {self.path}: {exc}.") from exc
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            log.warning(
                "the secrets file %s has mode %o; others may read it. Fix: chmod 600 %s",
                self.path,
                mode,
                self.path,
            )
        try:
            header = json.loads(raw)
            ok = (
                isinstance(header, dict)
                and header.get("format") == FORMAT
                and isinstance(header.get("token"), str)
            )
        except ValueError:
            ok = False
        if not ok:
            raise SecretsError(
                f"{self.path} is not a forgeml secrets file (expected JSON with "
                f'"format": "{FORMAT}"). Point {FILE_VAR} at the right file, or move this one '
                f"away."
            )
        if header.get("version") != VERSION or header.get("cipher") != CIPHER:
            raise SecretsError(
                f"{self.path} is a forgeml secrets file version {header.get('version')!r} "
                f"(cipher {header.get('cipher')!r}); this forgeml reads version {VERSION} "
                f"({CIPHER}). Upgrade forgeml."
            )
        token: str = header["token"]
        return token.encode("ascii", "replace")

    def _decrypt(self, token: bytes, fernet: Fernet) -> dict[str, str]:
        from cryptography.fernet import InvalidToken

        try:
            plain = fernet.decrypt(token)
        except InvalidToken:
            raise SecretsError(
                f"Cannot decrypt {self.path} with this key ({self._key_source}): the file was "
                f"written with another key, or was changed since. Use the key it was written "
                f"with, or remove the file to start a new one (its secrets are then lost)."
            ) from None
        try:
            secrets = json.loads(plain)
        except ValueError:
            secrets = None
        if not isinstance(secrets, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in secrets.items()
        ):
            raise SecretsError(f"{self.path} decrypted, but its content is not a map of names.")
        return secrets

    def _write(self, secrets: dict[str, str], fernet: Fernet) -> None:
        token = fernet.encrypt(json.dumps(secrets, sort_keys=True).encode("utf-8"))
        header = {"format": FORMAT, "version": VERSION, "cipher": CIPHER}
        data = json.dumps({**header, "token": token.decode("ascii")}) + "\n"
        _write_private(self.path, data.encode("utf-8"))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize read-modify-write cycles of processes sharing the file's folder."""
        import fcntl  # POSIX; imported here so that masking works everywhere

        _make_private_dir(self.path.parent)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _fernet(self, *, create: bool) -> Fernet:
        fernet_class = _fernet_class()
        key = self._key
        if key is None:
            key, self._key_source = _resolve_key(create=create, file=self.path)
            self._key = key
        try:
            return fernet_class(key.encode("ascii", "replace"))
        except (ValueError, TypeError):
            raise SecretsError(
                f"The secrets key ({self._key_source}) is not a valid key: expected 44 "
                f"characters of urlsafe base64, as `forgeml secrets keygen` prints. Got a value "
                f"of {len(key)} characters."
            ) from None


def _resolve_key(*, create: bool, file: Path) -> tuple[str, str]:
    """The key and where it came from: ``$FORGEML_SECRETS_KEY``, else the OS keyring."""
    from_env = os.environ.get(KEY_VAR)
    if from_env is not None and from_env.strip():
        return from_env.strip(), KEY_VAR
    try:
        import keyring
        import keyring.errors
    except ImportError:
        raise SecretsError(
            f"No key for the secrets file {file}: {KEY_VAR} is not set and the 'keyring' "
            f"package is not installed (pip install 'forgeml[secrets]'). {_KEYGEN_HINT}"
        ) from None
    backend = keyring.get_keyring()
    source = f"the OS keyring ({type(backend).__name__})"
    try:
        key = keyring.get_password(KEYRING_SERVICE, KEYRING_USER)
    except Exception as exc:
        raise SecretsError(
            f"{KEY_VAR} is not set and no OS keyring is available to hold the secrets key "
            f"(keyring: {type(exc).__name__}: {exc}). {_KEYGEN_HINT}"
        ) from None
    if key:
        return key, source
    if not create:
        raise SecretsError(
            f"No key for the secrets file {file}: {KEY_VAR} is not set and the OS keyring "
            f"({type(backend).__name__}) holds no '{KEYRING_SERVICE}/{KEYRING_USER}' entry, and "
            f"a new key could not read the file. Set {KEY_VAR} to the key the file was written "
            f"with, or move the file away to start a new one (its secrets are then lost)."
        )
    key = generate_key()
    try:
        keyring.set_password(KEYRING_SERVICE, KEYRING_USER, key)
        stored = keyring.get_password(KEYRING_SERVICE, KEYRING_USER) == key
    except Exception as exc:
        raise SecretsError(
            f"{KEY_VAR} is not set and the OS keyring cannot store a new secrets key "
            f"(keyring: {type(exc).__name__}: {exc}). {_KEYGEN_HINT}"
        ) from None
    if not stored:
        raise SecretsError(
            f"{KEY_VAR} is not set and the OS keyring ({type(backend).__name__}) did not keep "
            f"a new secrets key. {_KEYGEN_HINT}"
        )
    log.info("created a new secrets key in %s", source)
    return key, source


def _make_private_dir(directory: Path) -> None:
    """Create ``directory`` (and missing parents) with mode 0700; existing ones are kept."""
    missing = []
    for folder in [directory, *directory.parents]:
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``path`` atomically with mode 0600 (temp file in the same folder, fsync, rename)."""
    _make_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
