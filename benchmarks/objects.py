"""Saving and loading objects: forgeml.io against the libraries underneath, in the same run.

Headline figures, one JSON line each:

- ``io_safetensors``: save + load of a 100 MB float32 state dict (25 arrays of
  1M float32) through ``forgeml.io`` ``.safetensors`` (atomic write, fsync and
  a sha256 sidecar included) against raw ``safetensors.numpy.save_file`` /
  ``load_file``; ``ratio`` is raw ÷ ours, target at least 0.8. forgeml maps
  the file (copy-on-write) and reads values only when they are used.
- ``io_safetensors_read_all``: the same, with both loads followed by reading
  every value (a sum), so the lazy map gets no credit for data never read.
- ``io_safetensors_vs_torch``: the same state as torch tensors, through
  ``forgeml.io`` ``.safetensors`` (``framework="torch"``) against
  ``torch.save`` / ``torch.load``; ``ratio`` is torch ÷ ours, no target. The
  loads include reading every value (a sum), because ``safetensors.torch``
  maps the file lazily where ``torch.load`` reads it all.
- ``io_h5_sparse``: the size of a 20000 x 1000 uint8 sparse binary feature matrix
  (1% ones) in ``.h5`` with the default Zstd compression; ``ratio`` is raw
  bytes ÷ file size (higher is better), no target.
- ``repo_get_10k``: ``Repo.get(Selector, load_objects=False)`` over 10,000
  stored objects against reading every archive's manifest (``read_manifest``)
  and matching it with the same selector; ``ratio`` is scan ÷ get, target at
  least 20, and the query under 50 ms.

Times are medians over ``--runs`` alternating runs of ours and the baseline.
Run with ``python benchmarks/objects.py [--runs N] [--only NAME ...]``.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

import forgeml.io as fio
from _bench import Benchmarks, Record, ms, timed
from forgeml.io import sha256_file
from forgeml.objects import Object, Repo, Selector, read_manifest


@dataclass
class Context:
    """What every benchmark gets: how many runs, and a scratch directory."""

    runs: int
    workdir: Path


BENCHMARKS: Benchmarks[Context] = Benchmarks()
benchmark = BENCHMARKS


def compare(
    runs: int,
    ours: tuple[Callable[[], Any], Callable[[], Any]],
    base: tuple[Callable[[], Any], Callable[[], Any]],
) -> dict[str, dict[str, float]]:
    """Median save, load and total seconds of ours and the baseline, alternating runs."""
    samples: dict[str, dict[str, list[float]]] = {
        who: {"save": [], "load": [], "total": []} for who in ("ours", "base")
    }
    for _ in range(runs + 1):  # the first round warms caches and is not counted
        for who, (save, load) in (("ours", ours), ("base", base)):
            save_s, load_s = timed(save), timed(load)
            for key, value in (("save", save_s), ("load", load_s), ("total", save_s + load_s)):
                samples[who][key].append(value)
    return {
        who: {key: statistics.median(values[1:]) for key, values in parts.items()}
        for who, parts in samples.items()
    }


@cache
def state_dict() -> dict[str, np.ndarray[Any, Any]]:
    """25 arrays of 1M float32: 100 MB."""
    rng = np.random.default_rng(0)
    return {f"layer{i}.weight": rng.standard_normal(1_000_000, np.float32) for i in range(25)}


def speed_record(
    name: str,
    times: dict[str, dict[str, float]],
    runs: int,
    baseline: str,
    target: float | None,
) -> Record:
    ours, base = times["ours"], times["base"]
    ratio = base["total"] / ours["total"]
    record: Record = {
        "name": name,
        "ratio": round(ratio, 3),
        "target": target,
        "baseline": baseline,
        "mb": round(sum(a.nbytes for a in state_dict().values()) / 1e6, 1),
        "ours_ms": ms(ours["total"]),
        "ours_save_ms": ms(ours["save"]),
        "ours_load_ms": ms(ours["load"]),
        "baseline_ms": ms(base["total"]),
        "baseline_save_ms": ms(base["save"]),
        "baseline_load_ms": ms(base["load"]),
        "runs": runs,
        "ours_includes": "atomic write (temp file, fsync, rename) and a sha256 sidecar",
    }
    if target is not None:
        record["within_target"] = ratio >= target
    return record


@benchmark("io_safetensors")
def io_safetensors(ctx: Context) -> Record:
    import safetensors.numpy

    state = state_dict()
    ours_path = ctx.workdir / "ours.safetensors"
    raw_path = ctx.workdir / "raw.safetensors"
    times = compare(
        ctx.runs,
        ours=(lambda: fio.save(state, ours_path), lambda: fio.load(ours_path)),
        base=(
            lambda: safetensors.numpy.save_file(state, raw_path),
            lambda: safetensors.numpy.load_file(raw_path),
        ),
    )
    loaded = fio.load(ours_path, verify=True)
    assert all(np.array_equal(loaded[k], v) for k, v in state.items())
    record = speed_record(
        "io_safetensors", times, ctx.runs, "safetensors.numpy save_file/load_file", 0.8
    )
    # What the sidecar costs by itself: hashing the file once (part of ours_save_ms).
    record["sha256_ms"] = ms(
        statistics.median(timed(lambda: sha256_file(ours_path)) for _ in range(3))
    )
    return record


def read_all(loaded: dict[str, Any]) -> float:
    return sum(float(t.sum()) for t in loaded.values())


@benchmark("io_safetensors_read_all")
def io_safetensors_read_all(ctx: Context) -> Record:
    import safetensors.numpy

    state = state_dict()
    ours_path = ctx.workdir / "ours_all.safetensors"
    raw_path = ctx.workdir / "raw_all.safetensors"
    times = compare(
        ctx.runs,
        ours=(lambda: fio.save(state, ours_path), lambda: read_all(fio.load(ours_path))),
        base=(
            lambda: safetensors.numpy.save_file(state, raw_path),
            lambda: read_all(safetensors.numpy.load_file(raw_path)),
        ),
    )
    return speed_record(
        "io_safetensors_read_all", times, ctx.runs, "safetensors.numpy, every value read", None
    )


@benchmark("io_safetensors_vs_torch")
def io_safetensors_vs_torch(ctx: Context) -> Record:
    import torch

    tensors = {key: torch.from_numpy(value) for key, value in state_dict().items()}
    ours_path = ctx.workdir / "ours_torch.safetensors"
    torch_path = ctx.workdir / "torch.pt"
    times = compare(
        ctx.runs,
        ours=(
            lambda: fio.save(tensors, ours_path),
            lambda: read_all(fio.load(ours_path, framework="torch")),
        ),
        base=(
            lambda: torch.save(tensors, torch_path),
            lambda: read_all(torch.load(torch_path, weights_only=True)),
        ),
    )
    loaded = fio.load(ours_path, framework="torch")
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    return speed_record(
        "io_safetensors_vs_torch", times, ctx.runs, "torch.save/torch.load(weights_only)", None
    )


@benchmark("io_h5_sparse")
def io_h5_sparse(ctx: Context) -> Record:
    rng = np.random.default_rng(0)
    features = (rng.random((20_000, 1_000), dtype=np.float32) < 0.01).astype(np.uint8)
    path = ctx.workdir / "features.h5"
    save_s = min(timed(lambda: fio.save({"x": features}, path)) for _ in range(3))
    load_s = min(timed(lambda: fio.load(path)) for _ in range(3))
    assert np.array_equal(fio.load(path)["x"], features)
    compressed = path.stat().st_size
    gzip_path = fio.save({"x": features}, ctx.workdir / "gzip.h5", compression="gzip")
    npz_path = fio.save({"x": features}, ctx.workdir / "deflate.npz", compressed=True)
    return {
        "name": "io_h5_sparse",
        "ratio": round(features.nbytes / compressed, 2),
        "target": None,
        "raw_bytes": features.nbytes,
        "h5_zstd_bytes": compressed,
        "h5_gzip_bytes": gzip_path.stat().st_size,
        "npz_deflate_bytes": npz_path.stat().st_size,
        "shape": list(features.shape),
        "density": round(float(features.mean()), 4),
        "save_ms": ms(save_s),
        "load_ms": ms(load_s),
    }


class RepoTrial(Object):
    """A hyperparameter trial: what a repo of many small objects typically holds."""

    def __init__(
        self,
        seed: int,
        lr: float = 0.1,
        optimizer: str = "sgd",
        layers: tuple[int, ...] = (64, 32),
    ) -> None:
        self.seed = seed
        self.lr = lr


@benchmark("repo_get")
def repo_get(ctx: Context) -> Record:
    count = 10_000
    repo = Repo(ctx.workdir / "repo", create=True)
    counter = itertools.count()

    def make() -> RepoTrial:
        i = next(counter)
        optimizer = ("sgd", "adam", "rmsprop")[i % 3]
        return RepoTrial(i % 100, lr=10.0 ** -(i % 5), optimizer=optimizer, layers=(64, i % 7))

    build_s = timed(lambda: repo.add_objects(make, count))  # archives, then one transaction
    selector = Selector(RepoTrial, args=(7,), kwargs={"optimizer": "adam"})
    files = sorted((ctx.workdir / "repo" / "objects").glob("*.dry"))
    assert len(files) == count

    def get() -> list[str]:
        return [entry.dry_id for entry in repo.get(selector, load_objects=False)]

    def scan() -> list[str]:
        found = []
        for file in files:
            definition = read_manifest(file)["object"]
            if selector.match(definition):
                found.append(definition["dry_id"])
        return found

    matches = get()
    assert sorted(matches) == sorted(scan())
    assert len(matches) == sum(1 for i in range(count) if i % 100 == 7 and i % 3 == 1)
    get_s: list[float] = []
    scan_s: list[float] = []
    for _ in range(ctx.runs + 1):  # the first round warms caches and is not counted
        get_s.append(timed(get))
        scan_s.append(timed(scan))
    get_median = statistics.median(get_s[1:])
    scan_median = statistics.median(scan_s[1:])
    loaded_s = statistics.median(timed(lambda: repo.get(selector)) for _ in range(3))
    return {
        "name": "repo_get_10k",
        "ratio": round(scan_median / get_median, 1),
        "target": 20,
        "get_ms": round(get_median * 1000, 2),
        "manifest_scan_ms": ms(scan_median),
        "under_50ms": get_median < 0.05,
        "within_target": scan_median / get_median >= 20 and get_median < 0.05,
        "baseline": "read_manifest on every archive + Selector.match",
        "objects": count,
        "matches": len(matches),
        "get_loaded_ms": ms(loaded_s),
        "build_s": round(build_s, 1),
        "runs": ctx.runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = BENCHMARKS.parser(__doc__)
    args = parser.parse_args(argv)
    selected = BENCHMARKS.selected(parser, args)
    with tempfile.TemporaryDirectory(prefix="forgeml-bench-") as tmp:
        return BENCHMARKS.run(selected, Path(tmp), lambda workdir: Context(args.runs, workdir))


if __name__ == "__main__":
    sys.exit(main())
