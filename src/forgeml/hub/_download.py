"""``download``: a checkpoint from a URL or a path, cached and sha256-verified."""

from __future__ import annotations

import http.client
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from forgeml._core._errors import HubError, StoreError
from forgeml._core._files import atomic_open
from forgeml._core._hashing import sha256_file
from forgeml._version import __version__
from forgeml.hub._urls import Source, is_loopback, source_of
from forgeml.store._cache import (
    Fetcher,
    Writable,
    cache_dir,
    check_sha256,
    copy_stream,
    localize_entry,
)
from forgeml.store._progress import ProgressArg, TransferProgress

#: Seconds to wait for an HTTP server to connect or send the next bytes
#: (``$FORGEML_HUB_TIMEOUT`` overrides it).
TIMEOUT = 30.0
#: Bytes read at a time from an HTTP response.
HTTP_CHUNK = 1 << 20


def download(
    url: str | os.PathLike[str],
    path: str | os.PathLike[str] | None = None,
    sha256: str | None = None,
    progress: ProgressArg = None,
    *,
    force_reload: bool = False,
) -> Path:
    """Fetch a file into the cache, verify it, and return its local path.

    ``url`` is an ``https://`` URL (``http://`` only to this machine, or with
    ``sha256``), an ``s3://`` URL (or any fsspec URL), ``gdrive://FILE_ID[/NAME]``
    (through gdown), ``github://OWNER/REPO@TAG/ASSET`` (a release asset), or a
    local path / ``file://`` URL (returned as it is). Downloads land in the cache
    of :func:`forgeml.store.localize_cached` (``$FORGEML_CACHE``): hashed as they
    arrive and renamed into place only when complete, so a killed download
    leaves nothing that is served later. A ``sha256`` that does not match
    deletes the download and raises :class:`~forgeml.HubError` naming both
    digests. With ``path``, the verified file is also copied there (atomically;
    into it when ``path`` is a folder) and that path is returned.
    ``force_reload=True`` downloads again even when the cache holds the file.
    """
    cached = fetch(os.fspath(url), sha256=sha256, progress=progress, force=force_reload)
    if path is None:
        return cached
    target = Path(path).expanduser()
    if target.is_dir() or str(path).endswith(("/", os.sep)):
        target = target / cached.name
    if target.resolve() != cached.resolve():
        with open(cached, "rb") as source, atomic_open(target, binary=True) as out:
            shutil.copyfileobj(source, out, HTTP_CHUNK)
    return target


def fetch(
    url: str,
    *,
    sha256: str | None = None,
    sha256_prefix: str | None = None,
    progress: ProgressArg = None,
    force: bool = False,
    root: Path | None = None,
    name: str | None = None,
) -> Path:
    """The verified local path of ``url`` (see :func:`download`); ``root`` replaces the cache."""
    try:
        sha256 = check_sha256(sha256)
        source = source_of(url, name=name)
        if source.kind == "local":
            return _local(source, sha256, sha256_prefix)
        fetcher: Fetcher | None = None
        if source.kind == "http":
            if source.url.startswith("http://") and sha256 is None and not is_loopback(url):
                raise HubError(
                    f"Refusing to download {url!r} over plain http:// without sha256=: anyone "
                    f"on the network path could change the file. Use https://, or pass "
                    f"sha256= (the file's SHA-256) so the download is verified."
                )
            fetcher = _http_fetcher(source.url)
        elif source.kind == "gdrive":
            fetcher = _gdrive_fetcher(source, progress, root or cache_dir())
            if not callable(progress):
                progress = False  # gdown shows its own bar
        path, _ = localize_entry(
            source.key,
            fetch=fetcher,
            version={} if fetcher is not None else None,
            name=source.name,
            sha256=sha256,
            sha256_prefix=sha256_prefix,
            progress=progress,
            root=root,
            force=force,
            source=source.url,
        )
        return path
    except StoreError as exc:
        raise HubError(str(exc)) from exc


def _local(source: Source, sha256: str | None, sha256_prefix: str | None) -> Path:
    path = Path(source.url)
    if not path.is_file():
        reason = "is not a file" if path.exists() else "does not exist"
        raise HubError(f"The checkpoint path '{path}' {reason}. Check the path.")
    if sha256 is None and sha256_prefix is None:
        return path
    actual = sha256_file(path)
    if sha256 is not None and actual != sha256:
        raise HubError(
            f"'{path}' does not have the expected sha256 {sha256}: its sha256 is {actual}. "
            f"Check the checksum you passed, or the file (it was left in place)."
        )
    if sha256_prefix is not None and not actual.startswith(sha256_prefix):
        raise HubError(
            f"'{path}' does not have the sha256 prefix its name carries ({sha256_prefix}): "
            f"its sha256 is {actual}. The file is damaged or misnamed; pass "
            f"check_hash=False to load it anyway."
        )
    return path


def _timeout() -> float:
    value = os.environ.get("FORGEML_HUB_TIMEOUT")
    if not value:
        return TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise HubError(f"FORGEML_HUB_TIMEOUT must be a positive number of seconds. Got {value!r}.")
    return seconds


def _http_problem(url: str, code: int, reason: str) -> str:
    what = f"HTTP {code} {reason}".strip()
    if code == 404:
        hint = (
            "Check the URL; for a GitHub release asset, the owner, repository, tag and asset "
            "name, and that the release is published."
        )
    elif code in (401, 403):
        hint = (
            "The file is private or needs credentials: download it yourself and pass its "
            "path, or publish it."
        )
    elif code == 429 or code >= 500:
        hint = "The server is busy or failing; try again later."
    else:
        hint = "Check the URL."
    return f"Downloading {url!r} failed: {what}. {hint}"


def _http_fetcher(url: str) -> Fetcher:
    def fetch(out: Writable, progress: TransferProgress) -> int | None:
        request = urllib.request.Request(
            url, headers={"User-Agent": f"forgeml/{__version__}", "Accept-Encoding": "identity"}
        )
        timeout = _timeout()
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            raise HubError(_http_problem(url, exc.code, str(exc.reason))) from None
        except urllib.error.URLError as exc:
            raise HubError(
                f"Cannot reach {url!r}: {exc.reason}. Check the address and the network "
                f"(a proxy is taken from HTTPS_PROXY/HTTP_PROXY)."
            ) from None
        except (TimeoutError, OSError) as exc:
            raise HubError(
                f"Cannot reach {url!r}: {exc or type(exc).__name__} (timeout {timeout:g} s, "
                f"set FORGEML_HUB_TIMEOUT to wait longer)."
            ) from None
        done = 0
        with response:
            length = response.headers.get("Content-Length", "")
            total = int(length) if length.strip().isdigit() else None
            progress.start(total)
            try:
                while chunk := response.read(HTTP_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    progress.advance(len(chunk))
            except (TimeoutError, OSError, http.client.HTTPException) as exc:
                raise HubError(
                    f"The download of {url!r} broke off after {done} bytes "
                    f"({type(exc).__name__}: {exc or 'no data within the timeout'}). Nothing "
                    f"was cached; try again (FORGEML_HUB_TIMEOUT={timeout:g} s)."
                ) from None
        return total

    return fetch


def _gdrive_fetcher(source: Source, progress_spec: ProgressArg, scratch: Path) -> Fetcher:
    def fetch(out: Writable, progress: TransferProgress) -> int | None:
        try:
            import gdown
        except ImportError:
            raise HubError(
                "gdrive:// URLs are downloaded with gdown, which is not installed. "
                "HINT: pip install 'forgeml[hub]'"
            ) from None
        quiet = (
            progress_spec is False
            or callable(progress_spec)
            or (progress_spec is None and not sys.stderr.isatty())
        )
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".gdrive-", dir=scratch) as tmp:
            target = Path(tmp) / source.name
            try:
                result = gdown.download(id=source.url, output=str(target), quiet=quiet)
            except Exception as exc:
                raise HubError(
                    f"Downloading gdrive://{source.url} from Google Drive failed: "
                    f"{type(exc).__name__}: {exc}. Check the file id, and that the file is "
                    f"shared with 'Anyone with the link'."
                ) from exc
            if result is None or not target.is_file():
                raise HubError(
                    f"Google Drive sent no file for gdrive://{source.url}. Check the file id, "
                    f"and that the file is shared with 'Anyone with the link'."
                )
            size = target.stat().st_size
            progress.start(size)
            with open(target, "rb") as f:
                copy_stream(f, out, progress)
        return size

    return fetch
