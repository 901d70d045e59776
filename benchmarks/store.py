"""Reading objects through forgeml's cache against reading them from S3, in the same run.

A local S3 server (SeaweedFS ``weed mini`` on 127.0.0.1, started with
``tests/s3server.py``) holds the objects. Headline figures, one JSON line each:

- ``store_s3_cached_read``: a 50 MB object. ``cold_ms`` is the first read
  through ``localize_cached`` (empty cache: download, hash, fsync, rename);
  ``cached_ms`` is a later read through the cache (the object's version is
  asked of S3 with one HEAD, then the local path is ready to open or map, as
  ``.safetensors`` loaders do); ``direct_get_ms`` is a boto3 ``get_object``
  reading the body into memory. ``ratio`` is direct_get ÷ cached, target at
  least 20. ``cached_read_bytes_ms`` and ``ratio_read_bytes`` also copy the
  whole file into a ``bytes`` object, as the GET does.
- ``store_lru_small_reads``: 10,000 reads of 1 KB objects (100 objects, 100
  rounds) through ``read_cached`` and its in-memory LRU against the same reads
  through the disk cache alone (a HEAD to S3 and a file read per read);
  ``ratio`` is disk ÷ LRU, target at least 20.

Times are medians over ``--runs`` alternating runs (the small-object figure
times each side once: ``--small-reads`` reads). Run with
``python benchmarks/store.py [--runs N] [--small-reads N] [--only NAME ...]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _bench import Benchmarks, Record, timed
from _bench import ms as bench_ms
from forgeml.store import MemoryCache, clear_cache, localize_cached, read_cached
from s3server import S3Server, start_s3


@dataclass
class Context:
    """What every benchmark gets: runs, a scratch directory and the S3 server."""

    runs: int
    small_reads: int
    workdir: Path
    server: S3Server
    bucket: str


BENCHMARKS: Benchmarks[Context] = Benchmarks()
benchmark = BENCHMARKS


def ms(seconds: float) -> float:
    return bench_ms(seconds, 3)


def use_cache(ctx: Context, name: str) -> None:
    """Point forgeml at a fresh cache folder and the S3 server, for this process."""
    os.environ["FORGEML_CACHE"] = str(ctx.workdir / f"cache-{name}")
    os.environ.pop("FORGEML_EPHEMERAL_CACHE", None)


@benchmark("store_s3_cached_read")
def s3_cached_read(ctx: Context) -> Record:
    use_cache(ctx, "read")
    client = ctx.server.client()
    size = 50 * 1000 * 1000
    data = os.urandom(size)
    client.put_object(Bucket=ctx.bucket, Key="big.bin", Body=data)
    client.put_object(Bucket=ctx.bucket, Key="warm.bin", Body=b"w")
    url = f"s3://{ctx.bucket}/big.bin"
    # Warm both clients (connections, credentials) so no side pays for its setup.
    localize_cached(f"s3://{ctx.bucket}/warm.bin")
    client.get_object(Bucket=ctx.bucket, Key="warm.bin")["Body"].read()

    def direct() -> None:
        body = client.get_object(Bucket=ctx.bucket, Key="big.bin")["Body"].read()
        assert len(body) == size

    def cached() -> None:
        localize_cached(url)

    def cached_bytes() -> None:
        assert len(localize_cached(url).read_bytes()) == size

    cold: list[float] = []
    samples: dict[str, list[float]] = {"direct": [], "cached": [], "bytes": []}
    for _ in range(ctx.runs):
        clear_cache(url)
        cold.append(timed(lambda: localize_cached(url)))
    assert localize_cached(url).read_bytes() == data
    for _ in range(ctx.runs + 1):  # the first round warms the page cache and is not counted
        for key, fn in (("direct", direct), ("cached", cached), ("bytes", cached_bytes)):
            samples[key].append(timed(fn))
    direct_s, cached_s, bytes_s = (statistics.median(samples[k][1:]) for k in samples)
    ratio = direct_s / cached_s
    return {
        "name": "store_s3_cached_read",
        "ratio": round(ratio, 2),
        "target": 20,
        "within_target": ratio >= 20,
        "baseline": "boto3 get_object + read of the body",
        "mb": size / 1e6,
        "cold_ms": ms(statistics.median(cold)),
        "cached_ms": ms(cached_s),
        "direct_get_ms": ms(direct_s),
        "cached_read_bytes_ms": ms(bytes_s),
        "ratio_read_bytes": round(direct_s / bytes_s, 2),
        "ratio_cold": round(direct_s / statistics.median(cold), 2),
        "runs": ctx.runs,
        "cached_includes": "a HEAD to S3 (is the entry stale?) and a stat of the entry",
    }


@benchmark("store_lru_small_reads")
def lru_small_reads(ctx: Context) -> Record:
    use_cache(ctx, "small")
    client = ctx.server.client()
    objects = 100
    urls = []
    for i in range(objects):
        client.put_object(Bucket=ctx.bucket, Key=f"small/{i:03d}.json", Body=os.urandom(1000))
        urls.append(f"s3://{ctx.bucket}/small/{i:03d}.json")
    lru = MemoryCache()  # 64 MiB, objects up to 1 MiB
    disk_only = MemoryCache(max_object_bytes=0)  # keeps nothing: every read goes to disk
    expected = {url: read_cached(url, memory=lru) for url in urls}  # fills both caches
    for url in urls:
        assert read_cached(url, memory=disk_only) == expected[url]
    order = [urls[i % objects] for i in range(ctx.small_reads)]

    def through(memory: MemoryCache) -> Callable[[], None]:
        def run() -> None:
            for url in order:
                read_cached(url, memory=memory)

        return run

    lru_s = timed(through(lru))
    disk_s = timed(through(disk_only))
    ratio = disk_s / lru_s
    return {
        "name": "store_lru_small_reads",
        "ratio": round(ratio, 1),
        "target": 20,
        "within_target": ratio >= 20,
        "baseline": "read_cached through the disk cache only (HEAD + file read)",
        "reads": ctx.small_reads,
        "objects": objects,
        "object_bytes": 1000,
        "lru_ms": ms(lru_s),
        "disk_ms": ms(disk_s),
        "lru_us_per_read": round(lru_s / ctx.small_reads * 1e6, 2),
        "disk_us_per_read": round(disk_s / ctx.small_reads * 1e6, 1),
        "lru_hits": lru.hits,
    }


def main(argv: list[str] | None = None) -> int:
    parser = BENCHMARKS.parser(__doc__)
    parser.add_argument(
        "--small-reads", type=int, default=10_000, help="reads in store_lru_small_reads"
    )
    args = parser.parse_args(argv)
    selected = BENCHMARKS.selected(parser, args, "small_reads")

    with tempfile.TemporaryDirectory(prefix="forgeml-bench-") as tmp, start_s3(tmp) as server:
        os.environ.update(server.env())
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
            os.environ.pop(name, None)
        bucket = server.make_bucket("forgeml-bench")
        return BENCHMARKS.run(
            selected,
            Path(tmp),
            lambda workdir: Context(args.runs, args.small_reads, workdir, server, bucket),
        )


if __name__ == "__main__":
    sys.exit(main())
