"""Objects, definitions and the safe archive, including hostile archives."""

from __future__ import annotations

import enum
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import forgeml
from forgeml import Object, ObjectDef, ObjectError, load_object, save_object
from forgeml.objects import Archive, read_manifest


class Data(Object):
    def __init__(self, data):
        pass


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Holder(Object):
    def __init__(self, inner, *rest, scale=1.0, **options):
        self.inner = inner
        self.options = options


class Stateful(Object):
    """Keeps an array as custom state through the archive hooks."""

    def __init__(self, size: int):
        self.weights = np.zeros(size)

    def save_object_imp(self, archive: Archive) -> None:
        archive.save("weights.npy", self.weights)
        archive.write_text("note.txt", "trained")

    def load_object_imp(self, archive: Archive) -> None:
        self.weights = archive.load("weights.npy")
        assert archive.read_text("note.txt") == "trained"
        assert archive.names() == ["note.txt", "weights.npy"]


class Parent(Object):
    def __init__(self, size: int):
        self.child = Stateful(size)
        self.children = [Stateful(1), Stateful(2)]


class NoLoadHook(Object):
    def __init__(self):
        pass

    def save_object_imp(self, archive: Archive) -> None:
        archive.write_bytes("x.bin", b"x")


def test_dryml_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    data_obj = Data([1, 2, 3, 4, 5])
    assert data_obj.dry_args == ([1, 2, 3, 4, 5],)
    assert list(data_obj.dry_kwargs) == ["dry_id"]
    assert len(data_obj.dry_kwargs["dry_id"]) == 36
    assert save_object(data_obj, "test.dry") is True
    new_obj = load_object("test.dry")
    assert type(new_obj) is Data
    assert new_obj.dry_args == data_obj.dry_args
    assert new_obj.dry_id == data_obj.dry_id
    obj_def = data_obj.definition()
    new_obj_2 = obj_def.build()
    assert type(new_obj_2) is Data
    assert new_obj_2.dry_args == data_obj.dry_args
    assert ObjectDef(Data, 3).build().dry_args == (3,)


def test_arguments_and_ids_are_recorded() -> None:
    a = Holder(1, 2, 3, scale=2.0, color=Color.RED)
    assert a.dry_args == (1, 2, 3)
    assert a.dry_kwargs["scale"] == 2.0
    assert a.dry_kwargs["color"] is Color.RED
    assert a.options == {"color": Color.RED}
    given = Data(1, dry_id="fixed")
    assert given.dry_id == "fixed"
    assert Data(1).dry_id != Data(1).dry_id


def test_definition_equality_hashing_and_category() -> None:
    one = ObjectDef(Data, 1)
    assert one == ObjectDef(Data, 1)
    assert hash(one) == hash(ObjectDef(Data, 1))
    assert one != ObjectDef(Data, 2)
    assert one != ObjectDef(Holder, 1)
    assert len({one, ObjectDef(Data, 1), ObjectDef(Data, [1, 2])}) == 2
    obj = Data(7)
    assert obj.definition().build().dry_id == obj.dry_id
    assert obj.definition().category().build().dry_id != obj.dry_id
    assert obj.definition().category() == ObjectDef(Data, 7)
    assert repr(ObjectDef(Data, 3)) == "ObjectDef(Data, 3)"


def test_nested_definitions_build_and_compare() -> None:
    nested = ObjectDef(Holder, ObjectDef(Data, 1), scale=0.5)
    built = nested.build()
    assert built.inner == ObjectDef(Data, 1)
    assert nested.build(scale=2.0).dry_kwargs["scale"] == 2.0
    holder = Holder(Data(1))
    rebuilt = ObjectDef.from_dict(holder.definition().to_dict()).build()
    assert isinstance(rebuilt.inner, Data)
    assert rebuilt.inner.dry_id == holder.inner.dry_id
    assert ObjectDef(Holder, ObjectDef(Data, 1)) == ObjectDef(Holder, ObjectDef(Data, 1))
    assert ObjectDef(Holder, ObjectDef(Data, 1)) != ObjectDef(Holder, ObjectDef(Data, 2))
    again = ObjectDef.from_dict(built.definition().to_dict())
    assert again == built.definition()


def test_objectdef_needs_an_object_class() -> None:
    with pytest.raises(ObjectError, match=r"subclass of forgeml\.Object"):
        ObjectDef(dict, 1)


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        3,
        2.5,
        float("inf"),
        "text",
        [1, [2, "x"]],
        (1, (2, 3)),
        {"a": 1, 2: (3,)},
        {1, 2},
        b"\x00\xff",
        Path("/tmp/x y"),
        Color.BLUE,
        Data,
        np.float32(1.5),
    ],
    ids=repr,
)
def test_arguments_round_trip_through_archives(value, tmp_path: Path) -> None:
    obj = Holder(value, value, scale=value)
    save_object(obj, tmp_path / "o.dry")
    loaded = load_object(tmp_path / "o.dry")
    assert loaded.dry_args == (value, value)
    assert loaded.dry_kwargs["scale"] == value
    assert type(loaded.dry_args[0]) is type(value)


def test_array_and_object_arguments_round_trip(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    obj = Holder(Data("inner"), array, spec=ObjectDef(Data, 5))
    save_object(obj, tmp_path / "o.dry")
    loaded = load_object(tmp_path / "o.dry")
    assert isinstance(loaded.inner, Data)
    assert loaded.inner.dry_id == obj.inner.dry_id
    np.testing.assert_array_equal(loaded.dry_args[1], array)
    assert loaded.dry_args[1].dtype == np.int16
    assert loaded.dry_kwargs["spec"] == ObjectDef(Data, 5)


def test_unrecordable_argument_is_refused_at_save(tmp_path: Path) -> None:
    obj = Holder(object())
    with pytest.raises(ObjectError, match="Cannot record a constructor argument of type object"):
        save_object(obj, tmp_path / "o.dry")
    assert not (tmp_path / "o.dry").exists()


def test_local_classes_cannot_be_saved(tmp_path: Path) -> None:
    class Local(Object):
        pass

    with pytest.raises(ObjectError, match="defined inside a function"):
        save_object(Local(), tmp_path / "o.dry")


def test_custom_state_hooks_and_nested_objects(tmp_path: Path) -> None:
    parent = Parent(3)
    parent.child.weights[:] = [1, 2, 3]
    parent.children[1].weights[:] = [7, 8]
    save_object(parent, tmp_path / "p.dry")
    loaded = load_object(tmp_path / "p.dry")
    np.testing.assert_array_equal(loaded.child.weights, [1, 2, 3])
    np.testing.assert_array_equal(loaded.children[1].weights, [7, 8])
    manifest = read_manifest(tmp_path / "p.dry")
    assert "custom/root/child/weights.npy" in manifest["members"]


def test_custom_state_without_load_hook_is_an_error(tmp_path: Path) -> None:
    save_object(NoLoadHook(), tmp_path / "o.dry")
    with pytest.raises(ObjectError, match="no load_object_imp"):
        load_object(tmp_path / "o.dry")


def test_file_objects(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    obj = Data({"k": [1, 2]})
    assert save_object(obj, buffer) is True
    buffer.seek(0)
    assert load_object(buffer).dry_args == ({"k": [1, 2]},)
    with (tmp_path / "o.dry").open("wb") as f:
        save_object(obj, f)
    with (tmp_path / "o.dry").open("rb") as f:
        assert load_object(f).dry_id == obj.dry_id


def test_manifest_is_documented_json(tmp_path: Path) -> None:
    save_object(Stateful(2), tmp_path / "o.dry")
    with zipfile.ZipFile(tmp_path / "o.dry") as zf:
        manifest = json.loads(zf.read("manifest.json"))
        assert manifest["format"] == "forgeml.object"
        assert manifest["format_version"] == forgeml.objects.FORMAT_VERSION
        assert manifest["object"]["cls"] == "test_objects:Stateful"
        assert manifest["object"]["args"] == [2]
        assert "test_objects:Stateful" in manifest["object"]["mro"]
        assert set(manifest["members"]) == {n for n in zf.namelist() if n != "manifest.json"}


def test_allowlist_restricts_classes(tmp_path: Path) -> None:
    save_object(Holder(Color.RED), tmp_path / "o.dry")
    assert load_object(tmp_path / "o.dry", allow=["test_objects"]).dry_args == (Color.RED,)
    with pytest.raises(ObjectError, match="outside the allowlist"):
        load_object(tmp_path / "o.dry", allow=["forgeml."])


# ------------------------------------------------------------------ hostile archives


def _rewrite(path: Path, edit) -> None:
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    manifest = json.loads(members.pop("manifest.json"))
    extra = edit(manifest, members) or []
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        for name, data in members.items():
            zf.writestr(name, data)
        for info, data in extra:
            zf.writestr(info, data)


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "o.dry"
    save_object(Stateful(4), path)
    return path


def test_zip_slip_names_are_refused(archive: Path) -> None:
    def edit(manifest, members):
        members["../evil.txt"] = b"x"
        manifest["members"]["../evil.txt"] = "0" * 64

    _rewrite(archive, edit)
    with pytest.raises(ObjectError, match="escapes the archive root"):
        load_object(archive)
    assert not (archive.parent.parent / "evil.txt").exists()


@pytest.mark.parametrize("name", ["/abs/path", "a\\..\\b", "custom/../../x"])
def test_unsafe_names_are_refused(archive: Path, name: str) -> None:
    def edit(manifest, members):
        members[name] = b"x"
        manifest["members"][name] = "0" * 64

    _rewrite(archive, edit)
    with pytest.raises(ObjectError, match="Unsafe archive member name"):
        load_object(archive)


def test_symlink_members_are_refused(archive: Path) -> None:
    def edit(manifest, members):
        info = zipfile.ZipInfo("custom/root/link")
        info.external_attr = (0o120777 << 16) | 0
        manifest["members"]["custom/root/link"] = "0" * 64
        return [(info, b"/etc/passwd")]

    _rewrite(archive, edit)
    with pytest.raises(ObjectError, match="link or folder"):
        load_object(archive)


def test_unlisted_members_are_refused(archive: Path) -> None:
    _rewrite(archive, lambda manifest, members: members.update({"extra.bin": b"x"}))
    with pytest.raises(ObjectError, match="unlisted"):
        load_object(archive)


def test_bad_checksums_are_refused(archive: Path) -> None:
    def edit(manifest, members):
        name = "custom/root/weights.npy"
        members[name] = members[name][:-1] + b"\x01"

    _rewrite(archive, edit)
    with pytest.raises(ObjectError, match="corrupted"):
        load_object(archive)


def test_zip_bombs_are_refused(archive: Path) -> None:
    def edit(manifest, members):
        manifest["members"]["custom/root/bomb.bin"] = "0" * 64
        info = zipfile.ZipInfo("custom/root/bomb.bin")
        info.compress_type = zipfile.ZIP_DEFLATED
        return [(info, b"\x00" * 20_000_000)]

    _rewrite(archive, edit)
    with pytest.raises(ObjectError, match="zip bomb"):
        load_object(archive)


@pytest.mark.parametrize("version", [2, 0, "1"])
def test_unknown_format_versions_are_refused(archive: Path, version) -> None:
    _rewrite(archive, lambda manifest, members: manifest.update(format_version=version))
    with pytest.raises(ObjectError, match="format version"):
        load_object(archive)


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "x.dry").write_text("hello")
    with pytest.raises(ObjectError, match="not a zip"):
        load_object(tmp_path / "x.dry")
    with pytest.raises(ObjectError, match="not found"):
        load_object(tmp_path / "missing.dry")
    with zipfile.ZipFile(tmp_path / "y.dry", "w") as zf:
        zf.writestr("other.txt", "x")
    with pytest.raises(ObjectError, match=r"no manifest\.json"):
        load_object(tmp_path / "y.dry")


def test_tampered_definition_cannot_reach_arbitrary_callables(archive: Path) -> None:
    _rewrite(archive, lambda manifest, members: manifest["object"].update(cls="os:system"))
    with pytest.raises(ObjectError, match="not a class"):
        load_object(archive)
    _rewrite(archive, lambda manifest, members: manifest["object"].update(cls="builtins:dict"))
    with pytest.raises(ObjectError, match=r"subclass of forgeml\.Object"):
        load_object(archive)


def test_encoded_enums_must_be_enum_classes(archive: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = {"__enum__": ["subprocess:Popen", ["touch", str(marker)]]}
    _rewrite(archive, lambda manifest, members: manifest["object"].update(args=[payload]))
    with pytest.raises(ObjectError, match="not an Enum class"):
        load_object(archive)
    assert not marker.exists()


def test_interrupted_save_leaves_the_old_file_loadable(tmp_path: Path) -> None:
    target = tmp_path / "o.dry"
    save_object(Data("old"), target)
    script = textwrap.dedent(
        f"""
        import os, signal, numpy as np
        from test_objects import Stateful
        from forgeml import save_object

        class Killer(Stateful):
            def save_object_imp(self, archive):
                archive.save("weights.npy", self.weights)
                os.kill(os.getpid(), signal.SIGKILL)

        save_object(Killer(1_000_000), {str(target)!r})
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, check=False)
    assert proc.returncode == -9
    assert load_object(target).dry_args == ("old",)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.dry"]


def test_save_object_refuses_non_objects(tmp_path: Path) -> None:
    with pytest.raises(ObjectError, match=r"forgeml\.io\.save"):
        save_object({"a": 1}, tmp_path / "o.dry")  # type: ignore[arg-type]
