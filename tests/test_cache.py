"""The two-level cache: localize_cached, read_cached and the memory LRU, on a real S3 server."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest

import forgeml.store._cache as cache_mod
from forgeml import StoreError
from forgeml.store import (
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


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh persistent cache per test, no ephemeral cache, an empty memory LRU."""
    root = tmp_path / "cache"
    monkeypatch.setenv("FORGEML_CACHE", str(root))
    monkeypatch.delenv("FORGEML_EPHEMERAL_CACHE", raising=False)
    memory_cache().clear()
    yield root
    memory_cache().clear()


@pytest.fixture
def fetches(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """URLs actually read from their source (not served from a cache), in order."""
    seen: list[str] = []
    real = cache_mod._fs_fetcher

    def counting(fs: Any, path: str, url: str, size: int | None) -> Callable[..., Any]:
        inner = real(fs, path, url, size)

        def fetch(out: Any, progress: Any) -> int | None:
            seen.append(url)
            return inner(out, progress)

        return fetch

    monkeypatch.setattr(cache_mod, "_fs_fetcher", counting)
    return seen


def put(client: Any, bucket: str, key: str, data: bytes) -> str:
    client.put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}/{key}"


def entry_files(root: Path) -> list[Path]:
    """Data files of complete entries under a cache root."""
    return sorted(
        p
        for p in (root / "objects").glob("*/*/*/*")
        if not p.parent.name.startswith(".") and p.name != ".entry.json"
    )


# ----------------------------------------------------------------------------- local paths


def test_local_paths_and_file_urls_return_themselves(tmp_path: Path) -> None:
    f = tmp_path / "weights.bin"
    f.write_bytes(b"abc")
    assert localize_cached(f) == f
    assert localize_cached(str(f)) == f
    assert localize_cached(f"file://{f}") == f
    assert localize_cached(f, sha256=sha(b"abc")) == f
    assert not (cache_dir() / "objects").exists()  # nothing was copied


def test_local_path_errors_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"'.*nope\.bin' does not exist\. Check the path"):
        localize_cached(tmp_path / "nope.bin")
    f = tmp_path / "w.bin"
    f.write_bytes(b"abc")
    with pytest.raises(
        StoreError, match=f"expected sha256 {'0' * 64}: its sha256 is {sha(b'abc')}"
    ):
        localize_cached(f, sha256="0" * 64)
    with pytest.raises(StoreError, match=r"sha256= must be 64 hexadecimal digits.*Got 'xyz'"):
        localize_cached(f, sha256="xyz")
    with pytest.raises(StoreError, match="names host 'elsewhere'"):
        localize_cached("file://elsewhere/w.bin")


def test_cache_dirs_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FORGEML_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "forgeml"
    assert ephemeral_cache_dir() is None
    monkeypatch.setenv("FORGEML_EPHEMERAL_CACHE", str(tmp_path / "scratch"))
    assert ephemeral_cache_dir() == tmp_path / "scratch"


# ----------------------------------------------------------------------------- S3: hit, miss, stale


def test_miss_then_hit(s3_env: str, s3_server: Any, fetches: list[str], cache_root: Path) -> None:
    url = put(s3_server.client(), s3_env, "models/a.bin", b"A" * 1000)
    first = localize_cached(url)
    assert first.read_bytes() == b"A" * 1000
    assert first.name == "a.bin"
    assert first.is_relative_to(cache_root)
    assert localize_cached(url) == first
    assert fetches == [url]
    meta = json.loads((first.parent / ".entry.json").read_text())
    assert meta["url"] == url
    assert meta["size"] == 1000
    assert meta["sha256"] == sha(b"A" * 1000)
    assert meta["version"]["etag"]
    info = cache_info()
    assert isinstance(info, CacheInfo)
    assert (info.entries, info.bytes, info.ephemeral_root) == (1, 1000, None)


def test_a_changed_object_is_fetched_again(s3_env: str, s3_server: Any, fetches: list[str]) -> None:
    client = s3_server.client()
    url = put(client, s3_env, "a.bin", b"old")
    old = localize_cached(url)
    put(client, s3_env, "a.bin", b"new content")
    new = localize_cached(url)
    assert new.read_bytes() == b"new content"
    assert fetches == [url, url]
    assert not old.exists()  # the stale entry is gone
    assert cache_info().entries == 1


def test_lookups_are_exact(s3_env: str, s3_server: Any, fetches: list[str]) -> None:
    client = s3_server.client()
    short = put(client, s3_env, "model", b"short")
    longer = put(client, s3_env, "model.pt", b"longer")
    assert localize_cached(short).read_bytes() == b"short"
    assert localize_cached(longer).read_bytes() == b"longer"
    assert localize_cached(short).read_bytes() == b"short"
    assert len(fetches) == 2
    with pytest.raises(StoreError, match=r"No object at 's3://.*/mod'.*lookups are exact"):
        localize_cached(f"s3://{s3_env}/mod")
    put(client, s3_env, "dir/x", b"x")
    with pytest.raises(StoreError, match="is a folder"):
        localize_cached(f"s3://{s3_env}/dir")


def test_a_damaged_entry_is_not_served(s3_env: str, s3_server: Any, fetches: list[str]) -> None:
    url = put(s3_server.client(), s3_env, "a.bin", b"0123456789")
    path = localize_cached(url)
    path.write_bytes(b"01234")  # truncated behind the cache's back
    assert localize_cached(url).read_bytes() == b"0123456789"
    assert len(fetches) == 2


def test_sha256_mismatch_is_refused_and_nothing_is_cached(
    s3_env: str, s3_server: Any, fetches: list[str]
) -> None:
    data = b"weights"
    url = put(s3_server.client(), s3_env, "w.bin", data)
    wrong = "ab" * 32
    with pytest.raises(StoreError) as caught:
        localize_cached(url, sha256=wrong)
    message = str(caught.value)
    assert f"expected sha256 {wrong}" in message
    assert f"its sha256 is {sha(data)}" in message
    assert "not cached" in message
    assert cache_info().entries == 0
    assert not list((cache_dir() / "objects").glob("*/*/.*tmp*"))  # no leftovers
    path = localize_cached(url, sha256=sha(data).upper())  # any case
    assert path.read_bytes() == data
    with pytest.raises(StoreError, match="The cached copy of"):
        localize_cached(url, sha256=wrong)  # a hit that does not match is dropped too
    assert cache_info().entries == 0


def test_progress_callback_sees_every_byte(s3_env: str, s3_server: Any) -> None:
    url = put(s3_server.client(), s3_env, "p.bin", b"x" * 5000)
    calls: list[tuple[int, int | None]] = []
    localize_cached(url, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (5000, 5000)


def test_ephemeral_copy(
    s3_env: str,
    s3_server: Any,
    fetches: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cache_root: Path,
) -> None:
    scratch = tmp_path / "node-local"
    monkeypatch.setenv("FORGEML_EPHEMERAL_CACHE", str(scratch))
    url = put(s3_server.client(), s3_env, "e.bin", b"E" * 2048)
    near = localize_cached(url)
    assert near.is_relative_to(scratch)
    assert near.read_bytes() == b"E" * 2048
    (far,) = entry_files(cache_root)
    assert far.read_bytes() == b"E" * 2048
    assert localize_cached(url) == near
    info = cache_info()
    assert (info.entries, info.ephemeral_entries, info.ephemeral_bytes) == (1, 1, 2048)
    # A new node (empty scratch) copies from the persistent cache, not from S3.
    shutil.rmtree(scratch)
    again = localize_cached(url)
    assert again.is_relative_to(scratch)
    assert again.read_bytes() == b"E" * 2048
    assert fetches == [url]


def test_clear_cache_for_one_url_or_all(s3_env: str, s3_server: Any) -> None:
    client = s3_server.client()
    a = put(client, s3_env, "a", b"a")
    b = put(client, s3_env, "b", b"bb")
    localize_cached(a)
    localize_cached(b)
    read_cached(a)
    assert clear_cache(a) == 1
    assert a not in memory_cache()
    assert cache_info().entries == 1
    assert clear_cache() == 1
    assert cache_info().entries == 0
    assert len(memory_cache()) == 0


# ----------------------------------------------------------------------------- memory LRU


def test_lru_evicts_least_recently_used_by_bytes() -> None:
    lru = MemoryCache(max_bytes=100, max_object_bytes=60)
    assert lru.put("a", b"a" * 40)
    assert lru.put("b", b"b" * 40)
    assert lru.get("a") == b"a" * 40  # a is now the most recently used
    assert lru.put("c", b"c" * 40)  # 120 > 100: b goes
    assert "b" not in lru
    assert ("a" in lru, "c" in lru) == (True, True)
    assert lru.nbytes == 80
    assert not lru.put("big", b"x" * 61)  # over max_object_bytes: not kept
    assert "big" not in lru
    assert lru.put("a", b"A" * 10)  # replacing an entry frees its bytes
    assert lru.nbytes == 50
    stats = lru.stats()
    assert (stats["entries"], stats["evictions"], stats["hits"]) == (2, 1, 1)
    lru.discard("a")
    lru.clear()
    assert (len(lru), lru.nbytes) == (0, 0)
    with pytest.raises(StoreError, match="at least 0 bytes"):
        MemoryCache(max_bytes=-1)


def test_read_cached_serves_small_objects_from_memory(
    s3_env: str, s3_server: Any, fetches: list[str]
) -> None:
    client = s3_server.client()
    url = put(client, s3_env, "small.json", b'{"a": 1}')
    lru = MemoryCache(max_bytes=1000, max_object_bytes=100)
    assert read_cached(url, memory=lru) == b'{"a": 1}'
    client.delete_object(Bucket=s3_env, Key="small.json")
    assert read_cached(url, memory=lru) == b'{"a": 1}'  # within max_age: no request
    with pytest.raises(StoreError, match="No object at"):
        read_cached(url, memory=lru, max_age=0)  # asks the source: gone
    assert fetches == [url]


def test_read_cached_revalidates_after_max_age(s3_env: str, s3_server: Any) -> None:
    client = s3_server.client()
    url = put(client, s3_env, "s.txt", b"one")
    lru = MemoryCache()
    assert read_cached(url, memory=lru) == b"one"
    put(client, s3_env, "s.txt", b"two!")
    assert read_cached(url, memory=lru) == b"one"
    assert read_cached(url, memory=lru, max_age=0) == b"two!"


def test_read_cached_keeps_only_small_objects_in_memory(s3_env: str, s3_server: Any) -> None:
    url = put(s3_server.client(), s3_env, "big.bin", b"b" * 300)
    lru = MemoryCache(max_bytes=1000, max_object_bytes=100)
    assert read_cached(url, memory=lru) == b"b" * 300
    assert len(lru) == 0
    assert cache_info().entries == 1  # served through the disk cache


def test_read_cached_local_files(tmp_path: Path) -> None:
    f = tmp_path / "labels.txt"
    f.write_bytes(b"cat")
    assert read_cached(f, sha256=sha(b"cat")) == b"cat"
    f.write_bytes(b"dogs")
    assert read_cached(f, max_age=0) == b"dogs"
    with pytest.raises(StoreError, match="expected sha256"):
        read_cached(f, sha256=sha(b"cat"), max_age=0)


def test_read_cached_keys_relative_paths_by_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "labels.txt").write_text(name)
    monkeypatch.chdir(tmp_path / "one")
    assert read_cached("labels.txt") == b"one"
    monkeypatch.chdir(tmp_path / "two")
    assert read_cached("labels.txt") == b"two"
    clear_cache("labels.txt", disk=False)
    assert str(tmp_path / "two" / "labels.txt") not in memory_cache()
    assert str(tmp_path / "one" / "labels.txt") in memory_cache()


def test_read_cached_from_any_fsspec_filesystem() -> None:
    fs = fsspec.filesystem("memory")
    path = f"/forgeml-test-{uuid.uuid4().hex}/x.txt"
    fs.pipe(path, b"in memory")
    assert read_cached(f"memory://{path}") == b"in memory"
    assert cache_info().entries == 1


# ----------------------------------------------------------------------------- processes

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    import forgeml.store._cache as cache_mod

    cache_mod.REMOTE_CHUNK = 64 << 10  # many small ranged GETs: a slow source
    real = cache_mod._fs_fetcher
    marker = Path(sys.argv[2])

    def counting(fs, path, url, size):
        inner = real(fs, path, url, size)
        def fetch(out, progress):
            with open(marker, "a") as f:
                f.write(f"{os.getpid()}\\n")
            return inner(out, progress)
        return fetch

    cache_mod._fs_fetcher = counting
    barrier = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    if barrier is not None:  # wait until every child is ready, then go at once
        (barrier / f"ready-{os.getpid()}").touch()
        while len(list(barrier.glob("ready-*"))) < int(sys.argv[4]):
            time.sleep(0.005)
    start = time.time()
    path = cache_mod.localize_cached(sys.argv[1])
    print(json.dumps({"path": str(path), "start": start, "end": time.time()}))
    """
)


def child_env(s3_server: Any) -> dict[str, str]:
    return {**os.environ, **s3_server.env()}


@pytest.mark.slow
def test_two_processes_filling_one_entry_download_once(
    s3_env: str, s3_server: Any, tmp_path: Path
) -> None:
    data = os.urandom(16 << 20)
    url = put(s3_server.client(), s3_env, "shared.bin", data)
    marker, barrier = tmp_path / "downloads", tmp_path / "barrier"
    barrier.mkdir()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, url, str(marker), str(barrier), "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_env(s3_server),
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        results.append(json.loads(out))
    assert len(marker.read_text().split()) == 1  # one download
    assert results[0]["path"] == results[1]["path"]
    first, second = sorted(results, key=lambda r: r["end"])
    assert second["start"] < first["end"]  # they really ran at once: the second waited
    assert sha(Path(results[0]["path"]).read_bytes()) == sha(data)
    assert cache_info().entries == 1


def test_a_download_killed_midway_is_never_served(
    s3_env: str, s3_server: Any, tmp_path: Path, cache_root: Path, fetches: list[str]
) -> None:
    data = os.urandom(16 << 20)
    url = put(s3_server.client(), s3_env, "big.bin", data)
    marker = tmp_path / "downloads"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=child_env(s3_server),
    )
    try:
        deadline = time.monotonic() + 30
        partial: list[Path] = []
        while time.monotonic() < deadline and child.poll() is None:
            partial = [
                p for p in (cache_root / "objects").glob("*/*/.*.tmp-*/big.bin") if p.is_file()
            ]
            if partial and partial[0].stat().st_size > (1 << 20):
                break
            time.sleep(0.01)
        assert child.poll() is None, "the child finished before it could be killed"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    assert partial
    assert partial[0].exists()  # the partial file is still there, aside
    assert 0 < partial[0].stat().st_size < len(data)
    assert cache_info().entries == 0  # ... and is not an entry
    path = localize_cached(url)  # the next call fetches again (the lock died with the child)
    assert fetches == [url]
    assert sha(path.read_bytes()) == sha(data)
    assert not partial[0].exists()  # the leftover was cleaned up
