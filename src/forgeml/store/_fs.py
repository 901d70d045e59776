"""fsspec filesystems for any URL, with S3/MinIO settings from the environment or config."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from forgeml._core._errors import StoreError

if TYPE_CHECKING:
    import fsspec

#: Config keys (``store.s3.*``) and the environment variables they default to.
S3_ENV = {
    "key": ("AWS_ACCESS_KEY_ID",),
    "secret": ("AWS_SECRET_ACCESS_KEY",),
    "token": ("AWS_SESSION_TOKEN",),
    "endpoint_url": ("S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "region_name": ("AWS_REGION", "AWS_DEFAULT_REGION"),
}

_config: dict[str, Any] = {}


def configure(settings: Mapping[str, Any] | None = None, **s3: Any) -> None:
    """Set S3 options for this process (e.g. from ``cfg.store.s3``); env vars fill the rest."""
    merged = {**(settings or {}), **s3}
    unknown = sorted(set(merged) - set(S3_ENV))
    if unknown:
        raise StoreError(f"Unknown S3 setting(s) {unknown}. Known: {', '.join(sorted(S3_ENV))}.")
    _config.clear()
    _config.update({k: v for k, v in merged.items() if v is not None})


def s3_options() -> dict[str, Any]:
    """Options for s3fs/boto3: configured values first, then the standard env vars."""
    options: dict[str, Any] = {}
    for key, names in S3_ENV.items():
        value = _config.get(key)
        if value is None:
            value = next((os.environ[n] for n in names if os.environ.get(n)), None)
        if value is not None:
            options[key] = value
    return options


def protocol_of(url: str) -> str:
    """``"s3"`` for ``s3://b/k``, ``"file"`` for plain paths."""
    scheme, sep, _ = str(url).partition("://")
    return scheme.lower() if sep else "file"


def get_filesystem(url: str, **storage_options: Any) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``url`` and the path inside it.

    ``s3://`` URLs get the S3 settings of :func:`s3_options` (path-style
    addressing when an endpoint is set, as MinIO/SeaweedFS need).
    """
    import fsspec

    protocol = protocol_of(url)
    options = dict(storage_options)
    if protocol in ("s3", "s3a"):
        s3 = s3_options()
        endpoint = s3.pop("endpoint_url", None)
        region = s3.pop("region_name", None)
        client_kwargs = dict(options.pop("client_kwargs", {}) or {})
        if endpoint:
            client_kwargs.setdefault("endpoint_url", endpoint)
        if region:
            client_kwargs.setdefault("region_name", region)
        config_kwargs = dict(options.pop("config_kwargs", {}) or {})
        if endpoint:
            config_kwargs.setdefault("s3", {"addressing_style": "path"})
        options = {**s3, **options, "client_kwargs": client_kwargs, "config_kwargs": config_kwargs}
    try:
        fs, path = fsspec.core.url_to_fs(url, **options)
    except ImportError as exc:
        hint = " HINT: pip install 'forgeml[s3]'" if protocol in ("s3", "s3a") else ""
        raise StoreError(f"Cannot open {url!r}: {exc}.{hint}") from exc
    except ValueError as exc:
        raise StoreError(f"Cannot open {url!r}: {exc}.") from exc
    return fs, path
