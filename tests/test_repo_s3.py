"""A Repo on the real S3 server: remote archives and index records, local mirrors."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from forgeml import ObjectError, Selector
from forgeml.cli import cli
from forgeml.objects import Repo
from forgeml.objects._remote import RemoteRepo
from repo_objects import Point, Point3, Weights, add_points


@pytest.fixture
def url(s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FORGEML_CACHE", str(tmp_path / "cache-a"))
    return f"s3://{s3_env}/experiments"


def test_a_url_makes_a_remote_repo(url: str) -> None:
    with pytest.raises(ObjectError, match="not a forgeml repo"):
        Repo(url)
    repo = Repo(url, create=True)
    assert isinstance(repo, RemoteRepo)
    assert repr(repo) == f"Repo({url!r})"
    assert len(repo) == 0
    assert isinstance(Repo(url), RemoteRepo)  # it exists now


def test_writers_on_two_machines_see_each_other(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = Repo(url, create=True)
    for x in range(3):
        first.add_object(Point(x), tags=["a"])
    monkeypatch.setenv("FORGEML_CACHE", str(tmp_path / "cache-b"))  # another machine's cache
    second = Repo(url)
    assert second.directory != first.directory
    assert len(second) == 3
    second.add_object(Point3(7, z=1), tags=["b"])
    assert len(first) == 4
    found = first.get(Selector(Point3, args=(7,)))
    assert [type(o) for o in found] == [Point3]
    assert found[0].z == 1
    assert {e.dry_id for e in first.get(Point, tags="a", load_objects=False)} == {
        e.dry_id for e in second.get(Point, tags="a", load_objects=False)
    }
    (zero,) = second.get(Selector(Point, args=(0,)), load_objects=False)
    assert second.delete(zero) == 1
    assert len(first) == 3
    assert zero.dry_id not in first


def test_state_round_trips_and_saves_replace(url: str) -> None:
    repo = Repo(url, create=True)
    weights = Weights(3)
    repo.add_object(weights)
    weights.w[:] = [1, 2, 3]
    repo.save(weights)
    (loaded,) = repo.get(Weights)
    assert loaded.w.tolist() == [1.0, 2.0, 3.0]
    assert repo[weights.dry_id].w.tolist() == [1.0, 2.0, 3.0]
    assert len(repo) == 1


def test_damaged_record_is_reported(url: str) -> None:
    repo = Repo(url, create=True)
    repo.add_object(Point(1))
    fs, root = repo._fs, repo._root
    (record,) = fs.ls(f"{root}/index")
    fs.pipe_file(record, b"{not json")
    with pytest.raises(ObjectError, match="is damaged"):
        len(Repo(url))


def test_concurrent_writers_on_s3(url: str, s3_server, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    env = {**os.environ}
    workers = [
        ctx.Process(target=_writer, args=(url, w, 10, start, env, str(tmp_path / f"c{w}")))
        for w in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0]
    repo = Repo(url)
    assert len(repo) == 30
    for w in range(3):
        assert len(repo.get(Selector(Point, args=(w,)), load_objects=False)) == 10


def _writer(url: str, worker: int, count: int, start, env: dict[str, str], cache: str) -> None:
    os.environ.update(env)
    os.environ["FORGEML_CACHE"] = cache
    add_points(url, worker, count, start)


def test_cli_lists_a_remote_repo(url: str) -> None:
    repo = Repo(url, create=True)
    repo.add_object(Point(5), tags=["cli"])
    result = CliRunner().invoke(cli, ["repo", "ls", url], prog_name="forgeml")
    assert result.exit_code == 0, result.output
    assert "repo_objects:Point" in result.output
    assert "cli" in result.output
