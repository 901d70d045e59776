"""forgeml.config on real files: includes, imports, YAML-1.2 floats, safety, Config, overrides."""

from __future__ import annotations

import copy
import json
import os
import pickle
import textwrap
from pathlib import Path

import pytest
import yaml

from forgeml.config import Config, ConfigError, is_override, load, loads, parse_override


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture
def app(tmp_path: Path) -> Path:
    base = '{name: Little Planet Branch, location: "St. Louis, MO", template: XXX}'
    site = '{name: site1, location: "Santa Clara, CA", note: Welcome to CA}'
    write(tmp_path / "configs/defaults.yml", base)
    write(tmp_path / "configs/sites/site1.yml", site)
    return write(
        tmp_path / "configs/app.yml",
        """
        import:
          defaults:
            app_site: !include defaults.yml
          app_site: !include sites/site1.yml
        app_platform: Apple M1
        app_OS: MacOSX
        """,
    )


SITE = {"name": "site1", "location": "Santa Clara, CA", "note": "Welcome to CA", "template": "XXX"}


@pytest.mark.parametrize("loader", [load, Config.load])
def test_spec_example(app: Path, loader) -> None:
    cfg = loader(str(app))
    assert cfg == {
        "app_site": SITE,
        "app_platform": "Apple M1",
        "app_OS": "MacOSX",
        "__file__": str(app),
    }
    assert type(cfg) is Config
    assert type(cfg.app_site) is Config
    assert cfg.app_site.name == "site1"


def test_file_is_the_path_as_given(app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(app.parent.parent)
    assert load(Path("configs/app.yml")).__file__ == "configs/app.yml"


def test_include_is_relative_to_the_including_file_recursively(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "configs/a.yml", "sub: !include sub/b.yml\n")
    write(tmp_path / "configs/sub/b.yml", "c: !include c.yml\n")
    write(tmp_path / "configs/sub/c.yml", "v: inner\n")
    write(tmp_path / "configs/c.yml", "v: decoy\n")  # next to the top file: must not be picked
    write(tmp_path / "elsewhere/c.yml", "v: cwd\n")  # next to the cwd: must not be picked
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert load(tmp_path / "configs/a.yml").sub == {"c": {"v": "inner"}}


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("d.json", '{"a": [1, 2], "b": "1e5", "c": null}', {"a": [1, 2], "b": "1e5", "c": None}),
        ("d.JSON", '{"x": 1.5}', {"x": 1.5}),
        ("d.yaml", "a: 1e5\nb: !include d.txt\n", {"a": 100000.0, "b": "text\n"}),
        ("d.yml", "[1, .5]\n", [1, 0.5]),
        ("notes.txt", "x: 1\n!!python/object:os.system\n", "x: 1\n!!python/object:os.system\n"),
        ("README", "plain", "plain"),
    ],
)
def test_include_format_follows_suffix(tmp_path: Path, name: str, content: str, expected) -> None:
    write(tmp_path / "d.txt", "text\n")
    (tmp_path / name).write_text(content, encoding="utf-8")
    top = write(tmp_path / "top.yml", f"value: !include {name}\n")
    assert load(top).value == expected


def test_import_merge_rules(tmp_path: Path) -> None:
    write(tmp_path / "base.yml", "a: {x: 1, y: 1, deep: {p: 1, q: 1}}\nlst: [1, 2]\nonly_base: b\n")
    write(tmp_path / "mid.yml", "x: 2\ndeep: {q: 2}\n")
    top = write(
        tmp_path / "top.yml",
        """
        import:
          defaults: !include base.yml
          a: !include mid.yml
          inline: {k: imported, keep: kept}
        a: {y: 3}
        lst: [9]
        inline: {k: local}
        """,
    )
    expected = {
        "a": {"x": 2, "y": 3, "deep": {"p": 1, "q": 2}},
        "lst": [9],  # lists are replaced, not concatenated
        "only_base": "b",
        "inline": {"k": "local", "keep": "kept"},
        "__file__": str(top),
    }
    assert load(top) == expected
    empty = write(tmp_path / "empty.yml", "import:\na: 1\n")
    assert load(empty) == {"a": 1, "__file__": str(empty)}


def test_nested_include_with_its_own_import(tmp_path: Path) -> None:
    write(tmp_path / "configs/common.yml", "site: {tz: UTC, name: common, port: 80}\n")
    write(
        tmp_path / "configs/sites/site1.yml",
        "import:\n  defaults: !include ../common.yml\nsite: {name: site1}\n",
    )
    top = write(
        tmp_path / "configs/app.yml",
        "import:\n  defaults: !include sites/site1.yml\nsite: {port: 8080}\n",
    )
    assert load(top).site == {"tz": "UTC", "name": "site1", "port": 8080}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("import: [a, b]\n", "'import' must be a mapping"),
        ("import: {defaults: [1]}\n", "'import.defaults'"),
    ],
)
def test_bad_import_block(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path / "a.yml", text)
    with pytest.raises(ConfigError, match=needle) as info:
        load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1e-3", 0.001), ("1e5", 100000.0), ("5E+2", 500.0), (".5", 0.5), ("-1.5e3", -1500.0),
        ("+.5", 0.5), ("1.", 1.0), ("10", 10), ("-7", -7), ("'1e5'", "1e5"), ("!!str 1e5", "1e5"),
        ("1.2.3", "1.2.3"), ("1e", "1e"), ("e5", "e5"), ("1e5x", "1e5x"),
        ("[1e5, .5e1]", [1e5, 5.0]),
    ],
)  # fmt: skip
def test_yaml12_floats(text: str, expected) -> None:
    value = loads(f"v: {text}\n").v
    assert value == expected
    assert type(value) is type(expected)


def test_pyyaml_is_left_unchanged(app: Path) -> None:
    load(app)
    loads("a: 1e5\n")
    assert yaml.safe_load("a: 1e5") == {"a": "1e5"}
    assert yaml.load("a: 1e5", Loader=yaml.FullLoader) == {"a": "1e5"}
    assert yaml.safe_dump({"a": "1e5"}) == "a: 1e5\n"
    assert "!include" not in yaml.SafeLoader.yaml_constructors
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load("a: !include x.yml")


UNSAFE = [
    "!!python/object/apply:os.mkdir [PWNED]",
    "!!python/object/new:os.mkdir [PWNED]",
    "!!python/object:collections.OrderedDict {}",
    "!!python/name:os.system ''",
    "!!python/module:os ''",
    "!!python/tuple [1, 2]",
    "!custom 1",
]


@pytest.mark.parametrize("tagged", UNSAFE)
def test_unsafe_tags_are_rejected(tmp_path: Path, tagged: str) -> None:
    pwned = tmp_path / "pwned"
    tagged = tagged.replace("PWNED", json.dumps(str(pwned)))
    inner = write(tmp_path / "inner.yml", f"ok: 1\nbad: {tagged}\n")
    outer = write(tmp_path / "outer.yml", "x: 1\ny: !include inner.yml\n")
    for target in (inner, outer):
        with pytest.raises(ConfigError, match="unsafe or unknown tag") as info:
            load(target)
        assert f"{inner}, line 2" in str(info.value)
    with pytest.raises(ConfigError, match="unsafe or unknown tag"):
        loads(f"bad: {tagged}\n")
    with pytest.raises(ConfigError):
        parse_override(f"bad={tagged}")
    assert not pwned.exists()


@pytest.mark.parametrize("spelling", ["a.yml", "./a.yml", "../configs/a.yml", "link.yml"])
def test_self_include_is_a_cycle(tmp_path: Path, spelling: str) -> None:
    path = write(tmp_path / "configs/a.yml", f"x: 1\nme: !include {spelling}\n")
    (tmp_path / "configs/link.yml").symlink_to(path)
    with pytest.raises(ConfigError, match="include cycle") as info:
        load(path)
    assert f"{path}, line 2" in str(info.value)


def test_two_file_cycle(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yml", "b: !include b.yml\n")
    b = write(tmp_path / "b.yml", "x: 1\ny: 2\na: !include a.yml\n")
    with pytest.raises(ConfigError, match="include cycle") as info:
        load(a)
    assert f"{b}, line 3" in str(info.value)
    assert f"{a} -> {b} -> {a}" in str(info.value)


def test_same_file_twice_is_not_a_cycle(tmp_path: Path) -> None:
    write(tmp_path / "s.yml", "v: 1\n")
    top = write(tmp_path / "top.yml", "a: !include s.yml\nb: {c: !include s.yml}\n")
    assert load(top).b.c == load(top).a == {"v": 1}


def test_missing_include(tmp_path: Path) -> None:
    top = write(tmp_path / "top.yml", "a: 1\nb: !include nope/missing.yml\n")
    with pytest.raises(ConfigError, match="not found") as info:
        load(top)
    assert f"{top}, line 2" in str(info.value)
    assert "nope/missing.yml" in str(info.value)


@pytest.mark.parametrize(
    "text", ["a: !include\n", "a: !include ''\n", "a: !include [x.yml]\n", "a: !include {f: x}\n"]
)
def test_include_needs_one_path(tmp_path: Path, text: str) -> None:
    top = write(tmp_path / "top.yml", text)
    with pytest.raises(ConfigError, match="!include") as info:
        load(top)
    assert f"{top}, line 1" in str(info.value)


@pytest.fixture
def rooted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write(tmp_path / "outside.yml", "secret: 1\n")
    write(tmp_path / "configs_evil/x.yml", "secret: 2\n")
    write(tmp_path / "configs/ok.yml", "fine: 1\n")
    (tmp_path / "configs/sub").mkdir()
    (tmp_path / "configs/link.yml").symlink_to(tmp_path / "outside.yml")
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path / "configs"


@pytest.mark.parametrize(
    "include", ["../outside.yml", "OUTSIDE", "~/outside.yml", "../configs_evil/x.yml", "link.yml"]
)
@pytest.mark.parametrize("as_str", [True, False])
def test_include_escaping_root(rooted: Path, include: str, as_str: bool) -> None:
    include = include.replace("OUTSIDE", json.dumps(str(rooted.parent / "outside.yml")))
    top = write(rooted / "top.yml", f"ok: !include sub/../ok.yml\nbad: !include {include}\n")
    root = str(rooted) if as_str else rooted
    with pytest.raises(ConfigError, match="outside the config root") as info:
        load(top, root=root)
    assert f"{top}, line 2" in str(info.value)
    assert load(top).bad.secret in (1, 2)  # without a root the same include loads


def test_root_allows_inside_and_rejects_outside_top_file(rooted: Path) -> None:
    top = write(rooted / "top.yml", "ok: !include sub/../ok.yml\n")
    assert load(top, root=rooted).ok == {"fine": 1}
    with pytest.raises(ConfigError, match="outside the config root"):
        load(rooted.parent / "outside.yml", root=rooted)


@pytest.mark.parametrize(
    "quoted", ['"my dir/it\'s \\"quoted\\".yml"', "'my dir/it''s \"quoted\".yml'"]
)
def test_paths_with_spaces_and_quotes(tmp_path: Path, quoted: str) -> None:
    base = tmp_path / "top dir"
    write(base / 'my dir/it\'s "quoted".yml', "q: !include 'other file.json'\n")
    (base / "my dir/other file.json").write_text('{"ok": true}', encoding="utf-8")
    top = write(base / "app's.yml", f"x: !include {quoted}\n")
    cfg = load(top)
    assert cfg.x.q.ok is True
    assert cfg.__file__ == str(top)


@pytest.mark.parametrize(
    ("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int")]
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    path = write(tmp_path / "a.yml", text)
    with pytest.raises(ConfigError, match=f"mapping at the top level. Got {kind}") as info:
        load(path)
    assert str(path) in str(info.value)
    with pytest.raises(ConfigError, match="mapping"):
        loads(text)


def test_top_level_missing_text_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope.yml")
    with pytest.raises(ConfigError, match="mapping"):
        load(write(tmp_path / "a.txt", "a: 1\n"))
    empty = write(tmp_path / "empty.yml", "# nothing\n")
    assert load(empty) == {"__file__": str(empty)}
    assert loads("") == Config()


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("a: 1\nb: [1, 2\nc: 3\n", 3),
        ("a: 1\n\tb: 2\n", 2),
        ("a: 1\nb: *undefined\n", 2),
        ("a: 1\n  b: 2\n", 2),
        ("a: 1\nb: 'x\n", 3),
    ],
)
def test_invalid_yaml_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    bad = write(tmp_path / "bad.yml", text)
    top = write(tmp_path / "top.yml", "x: !include bad.yml\n")
    for target in (bad, top):
        with pytest.raises(ConfigError, match="invalid YAML") as info:
            load(target)
        assert f"{bad}, line {line}" in str(info.value)
    with pytest.raises(ConfigError, match=f"line {line}"):
        loads(text)


@pytest.mark.parametrize(
    "text", ["d: !!timestamp 2001-13-45\n", "x: !!int abc\n", "x: !!float abc\n"]
)
def test_bad_scalar_for_its_tag(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "a.yml", text)
    with pytest.raises(ConfigError, match="invalid value") as info:
        load(path)
    assert f"{path}, line 1" in str(info.value)


def test_dates_stay_strings_as_in_yaml_12(tmp_path: Path) -> None:
    cfg = load(write(tmp_path / "a.yml", "day: 2001-12-14\nstamp: 2001-12-14 21:59:43\n"))
    assert cfg == {
        "day": "2001-12-14",
        "stamp": "2001-12-14 21:59:43",
        "__file__": str(tmp_path / "a.yml"),
    }
    assert eval(repr(cfg), {"Config": Config}) == cfg


def test_bad_json_include(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 1,\n}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid JSON") as info:
        load(write(tmp_path / "top.yml", "x: !include bad.json\n"))
    assert f"{bad}, line 3" in str(info.value)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "a.yml"
    path.write_bytes(b"a: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load(path)
    assert str(path) in str(info.value)


def test_loads(tmp_path: Path) -> None:
    write(tmp_path / "inc.yml", "v: 1e-3\n")
    cfg = loads("a: .5\nb: !include inc.yml\n", "b.w=2", "c=x=y", base_dir=tmp_path)
    assert cfg == {"a": 0.5, "b": {"v": 0.001, "w": 2}, "c": "x=y"}
    assert type(cfg) is Config
    assert type(cfg.b) is Config
    assert "__file__" not in cfg


@pytest.mark.parametrize(
    ("text", "keys", "value"),
    [
        ("log.priority=2", ["log", "priority"], 2),
        ("key=1e9", ["key"], 1e9),
        ("L=[a,1,c,1e4]", ["L"], ["a", 1, "c", 10000.0]),
        ("name.number=0.34", ["name", "number"], 0.34),
        ("url=http://h/?a=b", ["url"], "http://h/?a=b"),
        ("eq===", ["eq"], "=="),
        ("s='1e5'", ["s"], "1e5"),
        ("empty=", ["empty"], ""),
        ("m={a: 1, b: [x]}", ["m"], {"a": 1, "b": ["x"]}),
        (" a . b = 3", ["a", "b"], 3),
    ],
)
def test_parse_override(text: str, keys: list[str], value) -> None:
    assert is_override(text)
    got_keys, got = parse_override(text)
    assert got_keys == keys
    assert got == value
    assert type(got) is type(value)


def test_overrides_on_load(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yml", "log: {level: info}\nname: plain string\nL: [z]\nkey: 1\n")
    overrides = ["log.priority=2", "key=1e9", "L=[a,1,c,1e4]", "name.number=0.34", "new.deep.x=1"]
    cfg = load(path, *overrides, "key=3")
    assert cfg.log == {"level": "info", "priority": 2}
    assert cfg.L == ["a", 1, "c", 10000.0]
    assert cfg.name == {"number": 0.34}
    assert type(cfg.name) is Config
    assert cfg.new.deep.x == 1
    assert cfg.key == 3  # later overrides win


@pytest.mark.parametrize("text", ["novalue", "=1", "a..b=1", ".a=1", "a.=1", "", " =1", "a. .b=1"])
def test_invalid_override_strings(tmp_path: Path, text: str) -> None:
    assert not is_override(text)
    with pytest.raises(ConfigError, match="must look like 'key=value'"):
        parse_override(text)
    with pytest.raises(ConfigError):
        load(write(tmp_path / "a.yml", "a: 1\n"), text)


@pytest.mark.parametrize("text", ["x=[1, 2", "x={a: 1", "x='open", "x=a: b: c"])
def test_override_with_invalid_yaml_value(text: str) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_override(text)


def test_attribute_access_and_missing_key(app: Path) -> None:
    cfg = load(app)
    cfg.extra = {"deep": {"k": 1}}
    assert cfg["extra"].deep.k == 1
    assert type(cfg.extra.deep) is Config
    with pytest.raises(AttributeError, match=r"'app_sit'.*Did you mean 'app_site'"):
        cfg.app_sit  # noqa: B018
    with pytest.raises(AttributeError, match=r"'nmae'.*Did you mean 'name'"):
        cfg.app_site.nmae  # noqa: B018
    assert not hasattr(cfg, "missing")
    assert getattr(cfg, "missing", 7) == 7
    del cfg.extra
    with pytest.raises(AttributeError):
        del cfg.extra


HOSTILE = Config(
    {
        "nested": {"list": [{"a": 1}, [1e-3, -2]], "t": (1, "x")},
        "quotes": 'it\'s "q" \\ back',
        "unicode": "héllo ✓",
        "float_like": ["1e5", ".5", "5E+2", "1.5e5"],
        "yaml_like": ["yes", "null", "~", "true", "#hash", "a: b", "- x", "!include x.yml"],
        "multi": "line1\nline2\n",
        "none": None,
        "flags": [True, False],
    }
)


def test_repr_pickle_deepcopy_copy_round_trip() -> None:
    back = eval(repr(HOSTILE), {"__builtins__": {}}, {"Config": Config})
    assert back == HOSTILE
    assert type(back.nested.list[0]) is Config
    for clone in (pickle.loads(pickle.dumps(HOSTILE)), copy.deepcopy(HOSTILE)):
        assert clone == HOSTILE
        assert type(clone) is Config
        assert type(clone.nested) is Config
        clone.nested.list[0].a = 99
        assert HOSTILE.nested.list[0].a == 1
    shallow = copy.copy(HOSTILE)
    assert type(shallow) is Config
    assert shallow.nested is HOSTILE.nested


@pytest.mark.parametrize("suffix", [".yml", ".yaml", ".json"])
def test_save_and_load_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"out dir/saved{suffix}"
    assert HOSTILE.save(path) == path
    expected = {**HOSTILE.to_dict(), "__file__": str(path)}
    assert load(path) == expected
    assert Config.load(path) == expected
    assert os.listdir(path.parent) == [path.name]  # no temp file left behind


def test_dump_formats() -> None:
    assert yaml.safe_load(HOSTILE.dump()) == HOSTILE.to_dict()  # plain YAML, no python tags
    assert "!!" not in HOSTILE.dump()
    assert json.loads(HOSTILE.dump("json")) == HOSTILE.to_dict()
    assert json.loads(Config(p=Path("/x")).dump("json")) == {"p": "/x"}
    with pytest.raises(ConfigError, match="'toml'"):
        HOSTILE.dump("toml")


def test_save_rejects_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\.yml, \.yaml or \.json"):
        HOSTILE.save(tmp_path / "a.toml")
    assert not list(tmp_path.iterdir())


def _disk_full(*args: object) -> None:
    raise OSError("disk full")


@pytest.mark.parametrize("fail", ["fsync", "replace", "unrepresentable"])
def test_failing_save_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: str
) -> None:
    path = tmp_path / "cfg.yml"
    Config(old=1).save(path)
    if fail == "unrepresentable":
        with pytest.raises((ConfigError, yaml.YAMLError)):
            Config(bad=object()).save(path)
    else:
        monkeypatch.setattr(os, fail, _disk_full)
        with pytest.raises(OSError, match="disk full"):
            Config(new=2).save(path)
        monkeypatch.undo()
    assert load(path).old == 1
    assert os.listdir(tmp_path) == ["cfg.yml"]
