"""``Repo`` and ``Selector``: a directory of archives queried through a SQLite index."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import re
import sqlite3
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

import forgeml
from forgeml.cli import cli
from forgeml.objects import (
    Object,
    ObjectDef,
    ObjectError,
    Repo,
    RepoEntry,
    Selector,
    _repo,
    _selector,
)
from repo_objects import Pair, Point, Point3, Weights, add_points


class Data(Object):
    def __init__(self, value: Any) -> None:
        self.value = value


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path / "repo", create=True)


def ids(items: list[Any]) -> list[str]:
    return [item.dry_id for item in items]


# --------------------------------------------------------------------------- the spec


def test_the_issue_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    repo = Repo(directory="./test", create=True)
    for _ in range(5):
        repo.add_object(ObjectDef(Data, 1).build())
    for _ in range(5):
        repo.add_object(ObjectDef(Data, 2).build())
    assert len(repo) == 10
    selected = repo.get(Selector(Data, args=(2,)))
    assert len(selected) == 5
    assert all(isinstance(obj, Data) and obj.value == 2 for obj in selected)
    assert (tmp_path / "test" / "index.sqlite").is_file()
    assert len(list((tmp_path / "test" / "objects").glob("*.dry"))) == 10
    assert forgeml.Repo is Repo
    assert forgeml.Selector is Selector


def test_a_missing_directory_needs_create(tmp_path: Path) -> None:
    with pytest.raises(ObjectError, match=r"does not exist.*create=True"):
        Repo(tmp_path / "nope")
    assert not (tmp_path / "nope").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ObjectError, match=r"has no index.sqlite.*create=True"):
        Repo(tmp_path / "empty")
    Repo(tmp_path / "nope", create=True)
    assert len(Repo(tmp_path / "nope")) == 0


def test_the_index_schema(repo: Repo) -> None:
    point = Point3(1, 2, z=3)
    repo.add_object(point, tags=["a"])
    with sqlite3.connect(repo.directory / "index.sqlite") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (_repo.SCHEMA_VERSION,)
        row = db.execute("SELECT dry_id, cls, definition, tags, file FROM objects").fetchone()
        classes = db.execute("SELECT cls FROM object_classes ORDER BY cls").fetchall()
    assert row[0] == point.dry_id
    assert row[1] == "repo_objects:Point3"
    assert json.loads(row[2]) == point.definition().to_dict()
    assert json.loads(row[3]) == ["a"]
    assert row[4] == f"objects/{point.dry_id}.dry"
    assert classes == [
        ("forgeml.objects._object:Object",),
        ("repo_objects:Point",),
        ("repo_objects:Point3",),
    ]


def test_a_newer_schema_is_refused(repo: Repo) -> None:
    with sqlite3.connect(repo.directory / "index.sqlite") as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(ObjectError, match=r"schema version 99.*Upgrade forgeml"):
        Repo(repo.directory)


def test_a_file_that_is_not_an_index(tmp_path: Path) -> None:
    (tmp_path / "index.sqlite").write_text("not a database " * 100)
    with pytest.raises(ObjectError, match="not a usable forgeml repo index"):
        Repo(tmp_path)


# --------------------------------------------------------------------------- selection


@pytest.fixture
def filled(repo: Repo) -> dict[str, Object]:
    objects: dict[str, Object] = {
        "p1": Point(1),
        "p2": Point(2, y="b"),
        "p2b": Point(2, 7),
        "q2": Point3(2, 7, z=1.5),
        "pair": Pair(Point(5, y=(1, 2)), lr=0.5),
        "pair_def": Pair(ObjectDef(Point3, 6), second=np.arange(3)),
    }
    for name, obj in objects.items():
        repo.add_object(obj, tags=[name, "even" if name.endswith("2") else "other"])
    return objects


def test_subclass_selection(repo: Repo, filled: dict[str, Object]) -> None:
    assert ids(repo.get(Selector(Point), load_objects=False)) == ids(
        [filled["p1"], filled["p2"], filled["p2b"], filled["q2"]]
    )
    assert ids(repo.get(Selector(Point3), load_objects=False)) == [filled["q2"].dry_id]
    assert len(repo.get(Selector(Object), load_objects=False)) == 6
    assert len(repo.get(Selector(), load_objects=False)) == 6
    # A class path is never imported; a bare name matches any module.
    assert len(repo.get(Selector("repo_objects:Point"), load_objects=False)) == 4
    assert len(repo.get(Selector("Point3"), load_objects=False)) == 1
    assert len(repo.get(Selector("point3"), load_objects=False)) == 0
    assert repo.get(Selector("not_imported.module:Point"), load_objects=False) == []
    assert len(repo.get(Point, load_objects=False)) == 4


def test_positional_prefix(repo: Repo, filled: dict[str, Object]) -> None:
    assert ids(repo.get(Selector(Point, args=(2,)))) == ids(
        [filled["p2"], filled["p2b"], filled["q2"]]
    )
    assert ids(repo.get(Selector(Point, args=(2, 7)))) == ids([filled["p2b"], filled["q2"]])
    assert repo.get(Selector(Point, args=(2, 7, 0))) == []  # longer than any stored args
    assert ids(repo.get(Selector(Point, args=(2.0,)))) == ids(
        [filled["p2"], filled["p2b"], filled["q2"]]
    )  # 2 == 2.0
    assert repo.get(Selector(Point, args=("2",))) == []


def test_partial_kwargs(repo: Repo, filled: dict[str, Object]) -> None:
    assert ids(repo.get(Selector(Point, kwargs={"y": "b"}))) == [filled["p2"].dry_id]
    assert ids(repo.get(Selector(Point, args=(2,), kwargs={"z": 1.5}))) == [filled["q2"].dry_id]
    # A default the constructor did not receive is not recorded.
    assert repo.get(Selector(Point, kwargs={"y": 0})) == []
    dry_id = filled["p1"].dry_id
    assert ids(repo.get(Selector(kwargs={"dry_id": dry_id}))) == [dry_id]
    assert repo.get(Selector(Point3, kwargs={"dry_id": dry_id})) == []


def test_nested_selectors_and_definitions(repo: Repo, filled: dict[str, Object]) -> None:
    pair, pair_def = filled["pair"], filled["pair_def"]
    assert ids(repo.get(Selector(Pair, args=(Selector(Point),)))) == ids([pair, pair_def])
    assert ids(repo.get(Selector(Pair, args=(Selector(Point3),)))) == [pair_def.dry_id]
    nested = Selector(Point, kwargs={"y": (1, 2)})
    assert ids(repo.get(Selector(Pair, args=(nested,)))) == [pair.dry_id]
    assert repo.get(Selector(Pair, args=(Selector(Point, kwargs={"y": [1, 2]}),))) == []
    # An ObjectDef matches by class and arguments; its dry_id counts only if it has one.
    assert ids(repo.get(Selector(Pair, args=(ObjectDef(Point, 5, y=(1, 2)),)))) == [pair.dry_id]
    assert ids(repo.get(Selector(Pair, args=(ObjectDef(Point3, 6),)))) == [pair_def.dry_id]
    assert repo.get(Selector(Pair, args=(ObjectDef(Point, 6),))) == []  # not a subclass match
    assert repo.get(Selector(Pair, args=(ObjectDef(Point, 5),))) == []  # y missing
    inner = pair.first  # type: ignore[attr-defined]
    exact = ObjectDef(Point, 5, y=(1, 2), dry_id=inner.dry_id)
    assert ids(repo.get(Selector(Pair, args=(exact,)))) == [pair.dry_id]
    other_id = ObjectDef(Point, 5, y=(1, 2), dry_id="someone-else")
    assert repo.get(Selector(Pair, args=(other_id,))) == []
    assert ids(repo.get(Selector(Pair, args=(inner,)))) == [pair.dry_id]  # an Object: by id


def test_values_compare_as_decoded(repo: Repo, filled: dict[str, Object]) -> None:
    pair_def = filled["pair_def"]
    sel = Selector(Pair, kwargs={"second": np.arange(3, dtype=np.float32)})
    assert ids(repo.get(sel)) == [pair_def.dry_id]
    assert repo.get(Selector(Pair, kwargs={"second": np.arange(4)})) == []
    assert repo.get(Selector(Pair, kwargs={"second": [0, 1, 2]})) == []
    assert ids(repo.get(Selector(Pair, kwargs={"lr": 0.5}))) == [filled["pair"].dry_id]
    assert repo.get(Selector(Pair, kwargs={"lr": "0.5"})) == []
    # SQL narrows scalars; the Python check has the last word (a string is not a list).
    repo.add_object(Point(x=[1]))
    repo.add_object(Point("[1]"))
    assert [p.dry_args for p in repo.get(Selector(Point, args=("[1]",)))] == [("[1]",)]
    assert [p.dry_kwargs["x"] for p in repo.get(Selector(Point, kwargs={"x": [1]}))] == [[1]]
    repo.add_object(Point({"a": (1, 2), "b": None}, y={3, 4}))
    assert len(repo.get(Selector(Point, args=({"b": None, "a": (1.0, 2)},)))) == 1
    assert len(repo.get(Selector(Point, args=({"a": (1, 2)},)))) == 0
    assert len(repo.get(Selector(Point, kwargs={"y": {4, 3}}))) == 1
    assert len(repo.get(Selector(Point, kwargs={"y": frozenset({4})}))) == 0
    repo.add_object(Point('é😀"', y=1e-3 * 3))
    assert len(repo.get(Selector(Point, args=('é😀"',), kwargs={"y": 0.003}))) == 1
    assert len(repo.get(Selector(Point, kwargs={"y": 0.003 + 1e-15}))) == 0
    assert len(repo.get(Selector(Point, kwargs={"y": True}))) == 0


def test_the_selector_matches_objects_the_way_the_repo_does(
    repo: Repo, filled: dict[str, Object]
) -> None:
    selectors = [
        Selector(Point),
        Selector(Point, args=(2,)),
        Selector(Point, kwargs={"y": "b"}),
        Selector("Point3"),
        Selector(Pair, args=(Selector(Point3),)),
        Selector(Pair, args=(ObjectDef(Point, 5, y=(1, 2)),), kwargs={"lr": 0.5}),
        Selector(Pair, kwargs={"second": np.arange(3)}),
    ]
    for sel in selectors:
        expected = [o.dry_id for o in filled.values() if sel(o)]
        assert ids(repo.get(sel, load_objects=False)) == expected, sel
        assert [sel(o.definition()) for o in filled.values()] == [sel(o) for o in filled.values()]
        assert [sel(e) for e in repo.get(load_objects=False)] == [sel(o) for o in filled.values()]
    assert Selector(Point, args=(1,))(ObjectDef(Point, 1.0, y=3))
    assert not Selector(Point, args=((1, 2),))(Point([1, 2]))
    assert Selector(Point, args=((1, 2),))(Point((1, 2)))


def test_selector_match_on_a_manifest(repo: Repo, filled: dict[str, Object]) -> None:
    from forgeml.objects import read_manifest

    entry = repo.entry(filled["q2"].dry_id)
    manifest = read_manifest(entry.file)
    assert Selector(Point, args=(2, 7)).match(manifest["object"])
    assert not Selector(Pair).match(manifest["object"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((int,), "subclass of forgeml.Object"),
        (("no such class!",), "Invalid class for a Selector"),
        ((3,), "needs a class"),
        ((Point, 2), "args must be a tuple.*args=\\(2,\\)"),
        ((Point, "ab"), "args must be a tuple"),
        ((Point, None, [1]), "kwargs must be a dict"),
    ],
)
def test_selector_errors(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ObjectError, match=message):
        Selector(*args)


def test_selector_repr_and_bad_targets() -> None:
    sel = Selector(Point, args=(1,), kwargs={"y": 2})
    assert repr(sel) == "Selector(repo_objects:Point, args=(1,), kwargs={'y': 2})"
    assert repr(Selector("Point")) == "Selector('Point')"
    with pytest.raises(ObjectError, match="matches Objects, ObjectDefs and RepoEntry"):
        sel(3)


def test_tags(repo: Repo, filled: dict[str, Object]) -> None:
    assert ids(repo.get(tags="even")) == ids([filled["p2"], filled["q2"]])
    assert ids(repo.get(Selector(Point3), tags=["even"])) == [filled["q2"].dry_id]
    assert repo.get(tags=["even", "p1"]) == []
    assert ids(repo.get(tags=["other", "p1"])) == [filled["p1"].dry_id]
    assert repo.entry(filled["p1"].dry_id).tags == ("p1", "other")
    with pytest.raises(ObjectError, match="Tags must be strings"):
        repo.add_object(Point(1), tags=[1])  # type: ignore[list-item]


# --------------------------------------------------------------------------- writing


def test_add_objects_from_a_definition_or_a_function(repo: Repo) -> None:
    built = repo.add_objects(ObjectDef(Point, 3, dry_id="fixed"), 4, tags=["batch"])
    assert len({p.dry_id for p in built}) == 4
    assert "fixed" not in repo
    counter = iter(range(10))
    repo.add_objects(lambda: Point(next(counter)), 3)
    assert len(repo) == 7
    assert [p.x for p in repo.get(Selector(Point, args=(3,)), tags="batch")] == [3, 3, 3, 3]
    assert repo.add_objects(ObjectDef(Point, 1), 0) == []
    with pytest.raises(ObjectError, match="number of objects >= 0"):
        repo.add_objects(ObjectDef(Point, 1), -1)
    with pytest.raises(ObjectError, match="ObjectDef or a function"):
        repo.add_objects(3, 1)  # type: ignore[arg-type]
    with pytest.raises(ObjectError, match=r"stores forgeml\.Object"):
        repo.add_objects(lambda: 3, 1)  # type: ignore[arg-type, return-value]
    assert len(repo) == 7


def test_adding_an_existing_id_replaces_it(repo: Repo) -> None:
    repo.add_object(Point(1, dry_id="same"), tags=["old"])
    repo.add_object(Point(2), tags=["x"])
    repo.add_object(Point3(9, dry_id="same"), tags=["new"])
    assert len(repo) == 2
    first = repo.get(load_objects=False)[0]  # the position (and creation time) is kept
    assert (first.dry_id, first.cls, first.tags) == ("same", "repo_objects:Point3", ("new",))
    assert repo.get(Selector(Point3))[0].x == 9
    assert repo.get(Selector(Point, args=(1,))) == []


def test_save_after_changing_state(repo: Repo) -> None:
    weights = Weights(3)
    repo.add_object(weights, tags=["run"])
    weights.w += np.array([1.0, 2.0, 3.0])
    repo.save(weights)
    (loaded,) = repo.get(Selector(Weights, args=(3,)))
    assert loaded.dry_id == weights.dry_id
    np.testing.assert_array_equal(loaded.w, [1.0, 2.0, 3.0])
    assert repo.entry(weights.dry_id).tags == ("run",)
    repo.save(weights, tags=["trained"])
    assert repo.entry(weights.dry_id).tags == ("trained",)
    assert len(repo) == 1
    with pytest.raises(ObjectError, match=r"not in repo .*add_object"):
        repo.save(Weights(2))


def test_delete(repo: Repo, filled: dict[str, Object]) -> None:
    files = {e.dry_id: e.file for e in repo.get(load_objects=False)}
    assert repo.delete(filled["p1"]) == 1
    assert not files[filled["p1"].dry_id].exists()
    assert repo.delete(filled["p2"].dry_id) == 1
    assert repo.delete(filled["p2"].dry_id) == 0
    assert repo.delete(repo.entry(filled["pair"].dry_id)) == 1
    assert repo.delete(Selector(Point, args=(2,))) == 2
    assert ids(repo.get(load_objects=False)) == [filled["pair_def"].dry_id]
    assert [p.name for p in (repo.directory / "objects").iterdir()] == [
        files[filled["pair_def"].dry_id].name
    ]
    with pytest.raises(ObjectError, match="takes an Object, a RepoEntry, an id or a Selector"):
        repo.delete(3)  # type: ignore[arg-type]
    with sqlite3.connect(repo.directory / "index.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM object_classes").fetchone() == (2,)


def test_unsafe_ids_get_safe_file_names(repo: Repo) -> None:
    for dry_id in ("../../escape", "a/b", ".hidden", "x" * 300):
        repo.add_object(Point(1, dry_id=dry_id))
    names = [p.name for p in (repo.directory / "objects").iterdir()]
    assert len(names) == 4
    assert all(len(n) == 64 + 4 and n.endswith(".dry") for n in names)
    assert [p.dry_id for p in repo.get(Selector(kwargs={"dry_id": "../../escape"}))] == [
        "../../escape"
    ]


# --------------------------------------------------------------------------- reading


def test_len_iter_contains_apply_and_getitem(repo: Repo, filled: dict[str, Object]) -> None:
    assert len(repo) == 6
    assert ids(list(repo)) == ids(list(filled.values()))
    assert filled["p1"] in repo
    assert filled["p1"].dry_id in repo
    assert Point(1) not in repo
    assert 3 not in repo
    assert repo.apply(lambda p: p.x * 10, Selector(Point, args=(2,))) == [20, 20, 20]
    assert repo[filled["q2"].dry_id].z == 1.5
    assert repo[filled["q2"].dry_id[:8]].dry_id == filled["q2"].dry_id
    with pytest.raises(ObjectError, match="has no object with id 'zzzz'"):
        repo.entry("zzzz")


def test_entry_prefixes_must_be_unique(repo: Repo) -> None:
    repo.add_object(Point(1, dry_id="abcd-1"))
    repo.add_object(Point(1, dry_id="abcd-2"))
    with pytest.raises(ObjectError, match="matches several objects"):
        repo.entry("abcd")
    assert repo.entry("abcd-2").dry_id == "abcd-2"
    with pytest.raises(ObjectError, match="has no object"):
        repo.entry("abc")  # prefixes need 4 characters


def test_entries_open_no_archive_and_import_no_class(
    repo: Repo, filled: dict[str, Object], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("get(load_objects=False) must not open or import anything")

    monkeypatch.setattr(_repo, "load_object", refuse)
    monkeypatch.setattr(zipfile, "ZipFile", refuse)
    monkeypatch.setattr(_selector, "class_map", refuse)
    monkeypatch.setattr("forgeml.objects._codec.import_class", refuse)
    sel = Selector(Pair, args=(Selector("Point3"),), kwargs={"second": np.arange(3)})
    (entry,) = repo.get(sel, load_objects=False)
    assert isinstance(entry, RepoEntry)
    assert entry.dry_id == filled["pair_def"].dry_id
    assert entry.cls == "repo_objects:Pair"
    assert entry.mro == ("repo_objects:Pair", "forgeml.objects._object:Object")
    assert entry.encoded == filled["pair_def"].definition().to_dict()
    assert entry.created.tzinfo is not None
    assert entry.file == repo.directory / "objects" / f"{entry.dry_id}.dry"
    monkeypatch.undo()
    assert entry.definition() == filled["pair_def"].definition()
    assert entry.load().dry_id == entry.dry_id


def test_an_index_row_whose_file_is_missing(repo: Repo, filled: dict[str, Object]) -> None:
    entry = repo.entry(filled["p1"].dry_id)
    assert entry.local_file() == entry.file
    entry.file.unlink()
    with pytest.raises(ObjectError, match="file is missing"):
        entry.local_file()
    assert len(repo.get(Selector(Point, args=(1,)), load_objects=False)) == 1
    with pytest.raises(ObjectError, match=r"file is missing.*repo.delete"):
        repo.get(Selector(Point, args=(1,)))
    with pytest.raises(ObjectError, match="file is missing"):
        list(repo)
    assert repo.delete(filled["p1"].dry_id) == 1
    assert len(repo.get(Point)) == 3


def test_an_index_row_pointing_outside_the_repo(
    repo: Repo, filled: dict[str, Object], tmp_path: Path
) -> None:
    victim = tmp_path / "victim.dry"
    victim.write_bytes(b"keep me")
    dry_id = filled["p1"].dry_id
    with sqlite3.connect(repo.directory / "index.sqlite") as db:
        db.execute("UPDATE objects SET file = '../victim.dry' WHERE dry_id = ?", (dry_id,))
    with pytest.raises(ObjectError, match="outside its objects/ folder"):
        repo[dry_id]
    with pytest.raises(ObjectError, match="outside its objects/ folder"):
        repo.entry(dry_id).local_file()  # what forgeml.eval resolves repo weights with
    assert repo.delete(dry_id) == 1
    assert victim.read_bytes() == b"keep me"


def test_an_archive_with_another_id(repo: Repo, filled: dict[str, Object]) -> None:
    first, second = repo.entry(filled["p1"].dry_id), repo.entry(filled["p2"].dry_id)
    second.file.replace(first.file)
    with pytest.raises(ObjectError, match="modified by hand"):
        first.load()


def test_a_repo_pickles_and_reopens(repo: Repo, filled: dict[str, Object]) -> None:
    copy = pickle.loads(pickle.dumps(repo))
    assert copy.directory == repo.directory
    assert len(copy) == 6
    with copy:
        assert ids(copy.get(Point3)) == [filled["q2"].dry_id]
    assert len(copy) == 6  # reopens after close


@pytest.mark.slow
def test_concurrent_writers(tmp_path: Path) -> None:
    directory = str(tmp_path / "shared")
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    workers = [ctx.Process(target=add_points, args=(directory, w, 25, start)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0, 0, 0]
    repo = Repo(directory)
    assert len(repo) == 100
    for w in range(4):
        assert len(repo.get(Selector(Point, args=(w,)), load_objects=False)) == 25
        assert len(repo.get(tags=f"worker{w}", load_objects=False)) == 25
    with sqlite3.connect(Path(directory) / "index.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM object_classes").fetchone() == (200,)
    assert len(list((Path(directory) / "objects").glob("*.dry"))) == 100


# --------------------------------------------------------------------------- the CLI


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="forgeml", input=input)


def test_cli_ls(repo: Repo, filled: dict[str, Object]) -> None:
    result = invoke("repo", "ls", str(repo.directory))
    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == ["ID", "CLASS", "ARGS", "TAGS", "CREATED"]
    assert len(rows) == 6
    q2 = filled["q2"].dry_id
    row = rf"{q2}\s+repo_objects:Point3\s+2, 7, z=1\.5\s+q2,even\s+\d{{4}}-\d\d-\d\d "
    assert re.search(row, result.output), result.output
    assert "Point(5, y=(1, 2)), lr=0.5" in result.output
    assert "Point3(6), second=array(int64, shape=(3,))" in result.output
    result = invoke("repo", "ls", str(repo.directory), "--class", "Point3", "--json")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.output)
    assert record["dry_id"] == q2
    assert record["cls"] == "repo_objects:Point3"
    assert record["args"] == [2, 7]
    assert record["kwargs"] == {"z": 1.5}
    assert record["tags"] == ["q2", "even"]
    result = invoke("repo", "ls", str(repo.directory), "--class", "repo_objects:Pair", "--tag", "x")
    assert result.output == f"No objects of class repo_objects:Pair in {repo.directory}.\n"


def test_cli_show(repo: Repo) -> None:
    weights = Weights(4)
    repo.add_object(weights, tags=["best"])
    result = invoke("repo", "show", str(repo.directory), weights.dry_id[:8])
    assert result.exit_code == 0, result.output
    assert f"id:       {weights.dry_id}\n" in result.output
    assert "class:    repo_objects:Weights\n" in result.output
    assert "args:     4\n" in result.output
    assert "tags:     best\n" in result.output
    assert "custom/root/w.bin" in result.output
    assert "32 B" in result.output
    result = invoke("repo", "show", str(repo.directory), weights.dry_id, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["manifest"]["object"]["args"] == [4]
    assert record["manifest"]["object"]["dry_id"] == weights.dry_id
    sizes = {m["name"]: m["size"] for m in record["members"]}
    assert sizes["custom/root/w.bin"] == 32
    assert record["size"] == Path(record["file"]).stat().st_size


def test_cli_rm_by_id_and_by_class(repo: Repo, filled: dict[str, Object]) -> None:
    directory = str(repo.directory)
    result = invoke("repo", "rm", directory, filled["p1"].dry_id, filled["p2"].dry_id[:6])
    assert result.exit_code == 0, result.output
    assert result.output == "removed 2 object(s)\n"
    result = invoke("repo", "rm", directory, "--class", "Point")
    assert result.exit_code == 1
    assert "Remove 2 object(s) of class Point" in result.output
    assert "Aborted" in result.output
    assert len(repo) == 4
    result = invoke("repo", "rm", directory, "--class", "Point", input="y\n")
    assert result.exit_code == 0, result.output
    assert result.output.endswith("removed 2 object(s)\n")
    result = invoke("repo", "rm", directory, "--class", "Pair", "--tag", "pair", "--yes")
    assert result.output == "removed 1 object(s)\n"
    assert ids(repo.get(load_objects=False)) == [filled["pair_def"].dry_id]


def test_cli_errors(repo: Repo, tmp_path: Path) -> None:
    result = invoke("repo", "ls", str(tmp_path / "missing"))
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: Repo directory ")
    assert "create=True" in result.stderr
    result = invoke("repo", "rm", str(repo.directory))
    assert result.exit_code == 2
    assert "Give object IDs to remove, or --class CLASS." in result.stderr
    repo.add_object(Point(1, dry_id="kept"))
    result = invoke("repo", "rm", str(repo.directory), "kept", "ghost")
    assert result.exit_code == 1
    assert "has no object with id 'ghost'" in result.stderr
    assert "kept" in repo
    result = invoke("repo", "show", str(repo.directory), "ghost")
    assert result.exit_code == 1
    assert "forgeml repo ls" in result.stderr
    repo.entry("kept").file.unlink()
    result = invoke("repo", "show", str(repo.directory), "kept")
    assert result.exit_code == 1
    assert "file is missing" in result.stderr


def test_cli_help_has_examples() -> None:
    for command in ("ls", "show", "rm"):
        result = invoke("repo", command, "--help")
        assert result.exit_code == 0
        assert "Examples:" in result.output
    assert "forgeml repo ls runs/models" in invoke("repo", "--help").output
