"""Storage: fsspec URLs with S3 settings, file fetchers over folders/archives/prefixes, copies.

``get_file_fetcher(path)`` reads the files in a folder, a zip or tar archive, or
an ``s3://`` prefix by name; ``ls``, ``get``, ``put``, ``rm`` and ``du`` work on
any fsspec URL. S3 settings come from ``configure()`` or the standard env vars.
``localize_cached(url)`` copies a remote object into a persistent (and, with
``$FORGEML_EPHEMERAL_CACHE``, a node-local) cache and returns the local path;
``read_cached(url)`` serves small objects from an in-memory LRU.
"""

from __future__ import annotations

from forgeml._core._errors import StoreError
from forgeml.store._cache import (
    CacheInfo,
    MemoryCache,
    cache_dir,
    cache_info,
    clear_cache,
    ephemeral_cache_dir,
    localize_cached,
    memory_cache,
    read_cached,
)
from forgeml.store._fetchers import (
    DirectoryFetcher,
    FileFetcher,
    PrefixFetcher,
    TarFetcher,
    ZipFetcher,
    get_file_fetcher,
    register_fetcher,
)
from forgeml.store._fs import configure, get_filesystem, protocol_of, s3_options
from forgeml.store._ops import FileInfo, du, get, ls, put, rm

__all__ = [
    "CacheInfo",
    "DirectoryFetcher",
    "FileFetcher",
    "FileInfo",
    "MemoryCache",
    "PrefixFetcher",
    "StoreError",
    "TarFetcher",
    "ZipFetcher",
    "cache_dir",
    "cache_info",
    "clear_cache",
    "configure",
    "du",
    "ephemeral_cache_dir",
    "get",
    "get_file_fetcher",
    "get_filesystem",
    "localize_cached",
    "ls",
    "memory_cache",
    "protocol_of",
    "put",
    "read_cached",
    "register_fetcher",
    "rm",
    "s3_options",
]
