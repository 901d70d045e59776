"""Checkpoint URLs: ``github://`` and ``gdrive://`` resolution, and hash prefixes in names."""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from dataclasses import dataclass

from forgeml._core._errors import HubError
from forgeml.store._cache import entry_name, is_local, local_path

#: torch.hub's convention, ``name-<first hex digits of the sha256>.ext``; 8 to 64 digits here.
HASH_PREFIX = re.compile(r"-([a-f0-9]{8,64})\.")
_GDRIVE_ID = re.compile(r"[A-Za-z0-9_-]+")
_GITHUB_NAME = re.compile(r"[A-Za-z0-9_.-]+")
GITHUB_FORM = "github://OWNER/REPO@TAG/ASSET"
GDRIVE_FORM = "gdrive://FILE_ID or gdrive://FILE_ID/NAME"


@dataclass(frozen=True)
class Source:
    """Where a checkpoint comes from and how forgeml reads it.

    ``kind`` is ``"local"``, ``"http"``, ``"gdrive"`` or ``"fsspec"``; ``url`` is
    what is fetched (a path, an https:// URL, a Drive file id or an fsspec URL);
    ``key`` identifies the cache entry; ``name`` is the file name it gets.
    """

    kind: str
    url: str
    key: str
    name: str


def hash_prefix(name: str) -> str | None:
    """The sha256 prefix a file name carries (``resnet18-f37072fd.pth`` -> ``f37072fd``), if any.

    This is torch.hub's convention: ``-`` then 8 to 64 lowercase hex digits, then ``.``.
    """
    found = HASH_PREFIX.search(name)
    return found.group(1) if found else None


def parse_github(url: str) -> tuple[str, str, str, str]:
    """``github://OWNER/REPO@TAG/ASSET`` as ``(owner, repo, tag, asset)``."""
    rest = url.split("://", 1)[1]
    owner, _, rest = rest.partition("/")
    repo, at, rest = rest.partition("@")
    tag, _, asset = rest.rpartition("/")
    if not (at and owner and repo and tag and asset):
        raise HubError(
            f"github:// URLs name a release asset as {GITHUB_FORM} (for example "
            f"github://pytorch/vision@v0.17.0/weights.pt). Got {url!r}."
        )
    for what, value in (("owner", owner), ("repository", repo)):
        if not _GITHUB_NAME.fullmatch(value):
            raise HubError(
                f"The GitHub {what} in {url!r} is {value!r}; it may contain only letters, "
                f"digits, '-', '_' and '.'. Check the URL ({GITHUB_FORM})."
            )
    return owner, repo, tag, asset


def github_url(url: str) -> str:
    """The https:// download URL of a ``github://OWNER/REPO@TAG/ASSET`` release asset."""
    owner, repo, tag, asset = parse_github(url)
    quote = urllib.parse.quote
    return (
        f"https://github.com/{owner}/{repo}/releases/download/"
        f"{quote(tag, safe='/')}/{quote(asset, safe='')}"
    )


def parse_gdrive(url: str) -> tuple[str, str | None]:
    """``gdrive://FILE_ID[/NAME]`` as ``(file_id, name or None)``."""
    rest = url.split("://", 1)[1]
    file_id, _, name = rest.partition("/")
    if not _GDRIVE_ID.fullmatch(file_id) or "/" in name:
        raise HubError(
            f"gdrive:// URLs look like {GDRIVE_FORM}, where FILE_ID is the id in the file's "
            f"share link (drive.google.com/file/d/FILE_ID/view). Got {url!r}."
        )
    return file_id, urllib.parse.unquote(name) or None


def resolve_url(url: str) -> str:
    """The URL a checkpoint URL stands for, without touching the network.

    ``github://OWNER/REPO@TAG/ASSET`` becomes
    ``https://github.com/OWNER/REPO/releases/download/TAG/ASSET``;
    ``gdrive://FILE_ID`` becomes ``https://drive.google.com/uc?id=FILE_ID``;
    ``file://`` URLs become paths; anything else is returned as it is.
    """
    scheme = _scheme(url)
    if scheme == "github":
        return github_url(url)
    if scheme == "gdrive":
        file_id, _ = parse_gdrive(url)
        return f"https://drive.google.com/uc?id={file_id}"
    if scheme in ("", "file"):
        return str(local_path(url))
    return url


def source_of(url: str, *, name: str | None = None) -> Source:
    """How to fetch ``url``: its kind, what to fetch, its cache key and its file name."""
    scheme = _scheme(url)
    if scheme in ("", "file", "local"):
        path = local_path(url)
        return Source("local", str(path), str(path), path.name)
    if scheme == "github":
        resolved = github_url(url)
        return Source("http", resolved, resolved, name or parse_github(url)[3])
    if scheme == "gdrive":
        file_id, given = parse_gdrive(url)
        return Source("gdrive", file_id, f"gdrive://{file_id}", name or given or file_id)
    if scheme in ("http", "https"):
        return Source("http", url, url, name or entry_name(url))
    return Source("fsspec", url, url, name or entry_name(url))


def is_loopback(url: str) -> bool:
    """True when an http(s) URL's host is this machine (localhost, 127.0.0.0/8, ::1)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _scheme(url: str) -> str:
    if is_local(url) and "://" not in str(url):
        return ""
    return str(url).partition("://")[0].lower()
