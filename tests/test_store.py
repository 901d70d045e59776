"""forgeml.store: file fetchers, ls/get/put/rm/du on file://, memory:// and a real S3 server."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import stat
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import fsspec
import pytest
from click.testing import CliRunner, Result

from forgeml import StoreError
from forgeml.cli import cli
from forgeml.store import (
    DirectoryFetcher,
    FileFetcher,
    PrefixFetcher,
    TarFetcher,
    ZipFetcher,
    _fetchers,
    _fs,
    configure,
    du,
    get,
    get_file_fetcher,
    get_filesystem,
    ls,
    protocol_of,
    put,
    register_fetcher,
    rm,
    s3_options,
)
from s3server import S3Server

#: The files of the sample tree, by member name.
FILES = {
    "a.txt": b"alpha\n",
    "b/c.txt": b"gamma " * 100,
    "b/d/e.bin": bytes(range(256)) * 4,
    "z.txt": b"zed",
}
NAMES = sorted(FILES)
ARCHIVES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")


def make_tree(root: Path, files: dict[str, bytes] = FILES) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def make_archive(path: Path, files: dict[str, bytes] = FILES) -> Path:
    """A zip or tar archive of ``files`` (shuffled order, with folder entries)."""
    order = sorted(files, reverse=True)
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("b/", b"")
            for name in order:
                zf.writestr(name, files[name])
        return path
    mode = {".tar": "w", ".gz": "w:gz", ".tgz": "w:gz", ".bz2": "w:bz2", ".xz": "w:xz"}
    with tarfile.open(path, mode[path.suffix]) as tf:  # type: ignore[call-overload]
        folder = tarfile.TarInfo("b")
        folder.type = tarfile.DIRTYPE
        tf.addfile(folder)
        for name in order:
            add_tar_member(tf, name, files[name])
    return path


def add_tar_member(
    tf: tarfile.TarFile, name: str, data: bytes = b"", *, kind: bytes = tarfile.REGTYPE, link=""
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.fixture(params=["dir", *ARCHIVES])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """The sample tree as a folder or as each kind of archive."""
    if request.param == "dir":
        return make_tree(tmp_path / "tree")
    return make_archive(tmp_path / f"tree{request.param}")


# --------------------------------------------------------------------------- fetchers


def test_fetcher_lists_and_reads_every_member(source: Path) -> None:
    with get_file_fetcher(source) as fetcher:
        assert isinstance(fetcher, FileFetcher)
        assert len(fetcher) == len(NAMES)
        assert list(fetcher) == NAMES == fetcher.names
        assert [fetcher[i] for i in range(len(fetcher))] == NAMES
        assert fetcher[-1] == "z.txt"
        assert fetcher[1:3] == NAMES[1:3]
        assert "b/c.txt" in fetcher
        assert "b" not in fetcher  # folders are not members
        for name in reversed(NAMES):  # random access, any order
            with fetcher.open_member(name) as f:
                assert f.read() == FILES[name]
        assert fetcher.read_member("b/d/e.bin") == FILES["b/d/e.bin"]
        assert repr(fetcher).endswith("4 members)")


def test_fetcher_kind_follows_the_path(tmp_path: Path) -> None:
    expected: dict[str, type[FileFetcher]] = {
        "dir": DirectoryFetcher,
        **{suffix: ZipFetcher if suffix == ".zip" else TarFetcher for suffix in ARCHIVES},
    }
    for kind, cls in expected.items():
        path = make_tree(tmp_path / "t") if kind == "dir" else make_archive(tmp_path / f"t{kind}")
        with get_file_fetcher(path) as fetcher:
            assert type(fetcher) is cls
    upper = make_archive(tmp_path / "T.ZIP")
    with get_file_fetcher(f"file://{upper}") as fetcher:
        assert isinstance(fetcher, ZipFetcher)
        assert list(fetcher) == NAMES


def test_is_member_filters_names(source: Path) -> None:
    with get_file_fetcher(source, is_member=lambda name: name.endswith(".txt")) as fetcher:
        assert list(fetcher) == ["a.txt", "b/c.txt", "z.txt"]
        with pytest.raises(StoreError, match=r"No member 'b/d/e\.bin'"):
            fetcher.open_member("b/d/e.bin")


def test_unknown_member_suggests_the_closest(source: Path) -> None:
    with get_file_fetcher(source) as fetcher, pytest.raises(StoreError) as info:
        fetcher.open_member("b/c.tx")
    assert "No member 'b/c.tx'" in str(info.value)
    assert "Did you mean 'b/c.txt'?" in str(info.value)


def test_closing_releases_the_archive(source: Path) -> None:
    with get_file_fetcher(source) as fetcher:
        handle = fetcher.open_member("a.txt")
    assert fetcher.closed
    assert "closed" in repr(fetcher)
    with pytest.raises(StoreError, match="is closed"):
        fetcher.open_member("a.txt")
    if isinstance(fetcher, ZipFetcher | TarFetcher):
        assert fetcher._file is None
    handle.close()
    fetcher.close()  # twice is fine


def test_order_is_stable_whatever_the_creation_order(tmp_path: Path) -> None:
    files = {f"{n:03d}.txt": b"x" for n in (5, 1, 30, 2, 100)}
    a = make_archive(tmp_path / "a.tar", files)
    b = make_archive(tmp_path / "b.tar", dict(reversed(files.items())))
    with get_file_fetcher(a) as fa, get_file_fetcher(b) as fb:
        assert list(fa) == list(fb) == sorted(files)


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".zip"])
def test_members_read_from_threads(tmp_path: Path, suffix: str) -> None:
    files = {f"m{i:02d}.bin": os.urandom(50_000) for i in range(20)}
    archive = make_archive(tmp_path / f"many{suffix}", files)
    with get_file_fetcher(archive) as fetcher, ThreadPoolExecutor(8) as pool:
        got = dict(zip(fetcher, pool.map(fetcher.read_member, fetcher), strict=True))
    assert got == files


def test_uncompressed_tar_members_are_seekable(tmp_path: Path) -> None:
    archive = make_archive(tmp_path / "t.tar")
    with get_file_fetcher(archive) as fetcher, fetcher.open_member("b/d/e.bin") as f:
        f.seek(256)
        assert f.read(3) == bytes([0, 1, 2])
        f.seek(-2, io.SEEK_END)
        assert f.read() == bytes([254, 255])
        assert f.read() == b""


def test_links_inside_the_root_are_members(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree")
    (root / "link.txt").symlink_to("b/c.txt")
    (root / "linkdir").symlink_to("b", target_is_directory=True)
    (root / "dangling").symlink_to("nowhere")
    (root / "b" / "loop").symlink_to("..", target_is_directory=True)
    with get_file_fetcher(root) as fetcher:
        assert "link.txt" in fetcher
        assert "linkdir/c.txt" in fetcher
        assert "dangling" not in fetcher
        assert fetcher.read_member("link.txt") == FILES["b/c.txt"]
    archive = tmp_path / "links.tar"
    with tarfile.open(archive, "w") as tf:
        add_tar_member(tf, "data/x.txt", b"x")
        add_tar_member(tf, "data/sym.txt", kind=tarfile.SYMTYPE, link="x.txt")
        add_tar_member(tf, "hard.txt", kind=tarfile.LNKTYPE, link="data/x.txt")
        add_tar_member(tf, "chain.txt", kind=tarfile.SYMTYPE, link="data/sym.txt")
        add_tar_member(tf, "dangling.txt", kind=tarfile.SYMTYPE, link="missing.txt")
    with get_file_fetcher(archive) as fetcher:
        assert list(fetcher) == ["chain.txt", "data/sym.txt", "data/x.txt", "hard.txt"]
        assert {fetcher.read_member(n) for n in fetcher} == {b"x"}


# --------------------------------------------------------------------------- hostile input


def _zip_with(tmp_path: Path, *names: str) -> Path:
    path = tmp_path / f"{uuid.uuid4().hex}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.txt", b"ok")
        for name in names:
            zf.writestr(name, b"evil")
    return path


@pytest.mark.parametrize(
    "name", ["../evil.txt", "/etc/evil.txt", "a/../../evil.txt", "C:/evil.txt", "..\\evil.txt"]
)
def test_zip_member_escaping_the_root_is_refused(tmp_path: Path, name: str) -> None:
    archive = _zip_with(tmp_path, name)
    with pytest.raises(StoreError) as info:
        get_file_fetcher(archive)
    assert repr(name) in str(info.value)
    assert "outside the root" in str(info.value)
    # ... also when is_member would not select it: the archive is refused whole.
    with pytest.raises(StoreError):
        get_file_fetcher(archive, is_member=lambda n: n == "ok.txt")


def test_zip_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "sym.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("passwd")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../etc/passwd")
    with pytest.raises(StoreError, match=r"'passwd' is a symlink to '\.\./\.\./etc/passwd'"):
        get_file_fetcher(archive)


@pytest.mark.parametrize(
    ("name", "kind", "link", "message"),
    [
        ("../evil.txt", tarfile.REGTYPE, "", "outside the root"),
        ("/abs/evil.txt", tarfile.REGTYPE, "", "outside the root"),
        ("passwd", tarfile.SYMTYPE, "/etc/passwd", "is a symlink to '/etc/passwd'"),
        ("sub/up", tarfile.SYMTYPE, "../../secret", "is a symlink to '../../secret'"),
        ("hard", tarfile.LNKTYPE, "../outside", "is a hard link to '../outside'"),
        ("hard-abs", tarfile.LNKTYPE, "/etc/shadow", "is a hard link to '/etc/shadow'"),
    ],
)
def test_tar_entry_escaping_the_root_is_refused(
    tmp_path: Path, name: str, kind: bytes, link: str, message: str
) -> None:
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        add_tar_member(tf, "ok.txt", b"ok")
        add_tar_member(tf, name, b"evil", kind=kind, link=link)
    with pytest.raises(StoreError) as info:
        get_file_fetcher(archive, is_member=lambda n: n == "ok.txt")
    assert repr(name) in str(info.value)
    assert message in str(info.value)
    assert "evil.tar.gz" in str(info.value)


def test_directory_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    root = make_tree(tmp_path / "tree")
    (root / "b" / "leak.txt").symlink_to(outside)
    with pytest.raises(StoreError, match=r"member 'b/leak\.txt' is a symlink to '.*secret\.txt'"):
        get_file_fetcher(root)
    (root / "b" / "leak.txt").unlink()
    (root / "etc").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(StoreError, match="member 'etc' is a symlink"):
        get_file_fetcher(root)


def test_directory_link_swapped_after_listing_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    root = make_tree(tmp_path / "tree")
    with get_file_fetcher(root) as fetcher:
        (root / "a.txt").unlink()
        (root / "a.txt").symlink_to(outside)
        with pytest.raises(StoreError, match="outside the folder"):
            fetcher.open_member("a.txt")


def test_prefix_key_escaping_the_root_is_refused() -> None:
    fs = fsspec.filesystem("memory")
    root = f"/hostile-{uuid.uuid4().hex}"
    fs.pipe(f"{root}/ok.txt", b"ok")
    fs.pipe(f"{root}/../evil.txt", b"evil")  # object stores allow such keys
    try:
        with pytest.raises(StoreError, match=r"member '\.\./evil\.txt' points outside"):
            get_file_fetcher(f"memory://{root}")
    finally:
        fs.rm(root, recursive=True)
        fs.store.pop(f"{root}/../evil.txt", None)


def test_bad_paths_say_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="No such file or folder"):
        get_file_fetcher(tmp_path / "missing")
    with pytest.raises(StoreError, match="No such file"):
        get_file_fetcher(tmp_path / "missing.zip")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(StoreError, match=r"neither a folder nor an archive .*\.tar\.gz"):
        get_file_fetcher(tmp_path / "notes.txt")
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(StoreError, match="as a zip archive"):
        get_file_fetcher(tmp_path / "broken.zip")
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(StoreError, match="as a tar archive"):
        get_file_fetcher(tmp_path / "broken.tar.gz")


# --------------------------------------------------------------------------- the registry

PLUGIN = '''
from forgeml.store import FileFetcher


class ListFetcher(FileFetcher):
    """Members named in the URL: list://a,b,c."""

    def _list(self):
        return self.url.partition("://")[2].split(",")

    def _open(self, name):
        import io
        return io.BytesIO(name.upper().encode())


class NotAFetcher:
    def __init__(self, url, is_member):
        pass
'''


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A private copy of the fetcher registry, and a plugin module on sys.path."""
    monkeypatch.setattr(_fetchers, "FETCHERS", copy.deepcopy(_fetchers.FETCHERS))
    (tmp_path / "forgeml_test_fetchers.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.usefixtures("registry")
def test_third_parties_register_schemes_and_suffixes(tmp_path: Path) -> None:
    register_fetcher("list", "forgeml_test_fetchers:ListFetcher")
    with get_file_fetcher("list://b,a,c", is_member=lambda n: n != "c") as fetcher:
        assert list(fetcher) == ["a", "b"]
        assert fetcher.read_member("b") == b"B"
    register_fetcher(".LIST", "forgeml_test_fetchers:ListFetcher")
    with get_file_fetcher("list://x,y.list") as fetcher:
        assert list(fetcher) == ["x", "y.list"]
    register_fetcher("bad", "forgeml_test_fetchers:NotAFetcher")
    with pytest.raises(StoreError, match=r"not a forgeml\.store\.FileFetcher"):
        get_file_fetcher("bad://x")
    with pytest.raises(StoreError, match=r"URL scheme like 's3' or a suffix like '\.zip'"):
        register_fetcher("no spaces", "forgeml_test_fetchers:ListFetcher")
    assert {"dir", "s3", ".zip", ".tar.gz", "fsspec"} <= set(_fetchers.FETCHERS.names())


def test_other_urls_are_read_as_prefixes() -> None:
    fs = fsspec.filesystem("memory")
    root = f"/prefix-{uuid.uuid4().hex}"
    for name, data in FILES.items():
        fs.pipe(f"{root}/{name}", data)
    try:
        with get_file_fetcher(f"memory://{root}/") as fetcher:
            assert isinstance(fetcher, PrefixFetcher)
            assert list(fetcher) == NAMES
            assert fetcher.read_member("b/d/e.bin") == FILES["b/d/e.bin"]
        fs.pipe(f"{root}.zip", make_archive_bytes(".zip"))
        with get_file_fetcher(f"memory://{root}.zip") as fetcher:
            assert isinstance(fetcher, ZipFetcher)
            assert fetcher.read_member("a.txt") == FILES["a.txt"]
        with get_file_fetcher(f"memory://{root}-nothing-here") as fetcher:
            assert len(fetcher) == 0
    finally:
        fs.rm(root, recursive=True)
        fs.rm(f"{root}.zip")


def make_archive_bytes(suffix: str, files: dict[str, bytes] = FILES) -> bytes:
    buffer = io.BytesIO()
    if suffix == ".zip":
        with zipfile.ZipFile(buffer, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz" if suffix == ".tar.gz" else "w") as tf:
            for name, data in files.items():
                add_tar_member(tf, name, data)
    return buffer.getvalue()


# --------------------------------------------------------------------------- S3 fetchers


def upload(server: S3Server, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    client = server.client()
    for name, data in files.items():
        client.put_object(Bucket=bucket, Key=f"{prefix}{name}", Body=data)


def test_s3_prefix_fetcher(s3_server: S3Server, s3_env: str) -> None:
    upload(s3_server, s3_env, "data/", FILES)
    upload(s3_server, s3_env, "data-other/", {"x.txt": b"not in data/"})
    for url in (f"s3://{s3_env}/data", f"s3://{s3_env}/data/"):
        with get_file_fetcher(url) as fetcher:
            assert isinstance(fetcher, PrefixFetcher)
            assert list(fetcher) == NAMES
            for name in NAMES:
                assert fetcher.read_member(name) == FILES[name]
    with get_file_fetcher(f"s3://{s3_env}/data", is_member=lambda n: "/" in n) as fetcher:
        assert list(fetcher) == ["b/c.txt", "b/d/e.bin"]
    with get_file_fetcher(f"s3://{s3_env}/nothing") as fetcher:
        assert len(fetcher) == 0


@pytest.mark.parametrize("suffix", [".zip", ".tar", ".tar.gz"])
def test_s3_archives_are_read_in_place(s3_server: S3Server, s3_env: str, suffix: str) -> None:
    upload(s3_server, s3_env, "", {f"arch{suffix}": make_archive_bytes(suffix)})
    with get_file_fetcher(f"s3://{s3_env}/arch{suffix}") as fetcher:
        assert list(fetcher) == NAMES
        assert [fetcher.read_member(n) for n in fetcher] == [FILES[n] for n in NAMES]


# --------------------------------------------------------------------------- ls/get/put/rm/du


@pytest.fixture(params=["path", "file-url", "memory", "s3"])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty folder URL on each kind of store (s3 only starts the server when used)."""
    if request.param == "path":
        yield str(tmp_path / "store")
    elif request.param == "file-url":
        yield f"file://{tmp_path / 'store'}"
    elif request.param == "memory":
        url = f"memory://store-{uuid.uuid4().hex}"
        yield url
        with contextlib.suppress(FileNotFoundError):
            fsspec.filesystem("memory").rm(url[len("memory://") :], recursive=True)
    else:
        yield f"s3://{request.getfixturevalue('s3_env')}/store"


def test_put_ls_du_get_rm(base: str, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    assert put(tree, base, recursive=True) == base
    assert put(tree / "a.txt", f"{base}/single.txt") == f"{base}/single.txt"
    assert put(tree / "z.txt", f"{base}/b/") == f"{base}/b/z.txt"

    top = ls(base)
    assert [(i.url, i.is_dir) for i in top] == [
        (f"{base}/a.txt", False),
        (f"{base}/b", True),
        (f"{base}/single.txt", False),
        (f"{base}/z.txt", False),
    ]
    assert top[0].size == len(FILES["a.txt"])
    assert top[1].size == 0
    assert top[0].to_json()["type"] == "file"
    files = ls(base, recursive=True)
    assert [i.url.removeprefix(base + "/") for i in files] == [
        "a.txt",
        "b/c.txt",
        "b/d/e.bin",
        "b/z.txt",
        "single.txt",
        "z.txt",
    ]
    assert all(not i.is_dir for i in files)
    assert ls(f"{base}/a.txt") == [top[0]]
    total = sum(map(len, FILES.values()))
    assert du(base) == total + len(FILES["a.txt"]) + len(FILES["z.txt"])
    assert du(f"{base}/b/c.txt") == len(FILES["b/c.txt"])

    out = tmp_path / "out"
    out.mkdir()
    assert get(f"{base}/b/c.txt", out) == out / "c.txt"
    assert (out / "c.txt").read_bytes() == FILES["b/c.txt"]
    assert get(f"{base}/a.txt", out / "renamed.txt") == out / "renamed.txt"
    assert (out / "renamed.txt").read_bytes() == FILES["a.txt"]
    with pytest.raises(StoreError, match=r"is a folder\. Pass recursive=True"):
        get(f"{base}/b", out / "copy")
    assert get(f"{base}/b", out / "copy", recursive=True) == out / "copy"
    assert sorted(p.relative_to(out / "copy").as_posix() for p in (out / "copy").rglob("*.*")) == [
        "c.txt",
        "d/e.bin",
        "z.txt",
    ]
    assert (out / "copy" / "d" / "e.bin").read_bytes() == FILES["b/d/e.bin"]

    assert rm(f"{base}/single.txt") == 1
    with pytest.raises(StoreError, match=r"is a folder\. Pass recursive=True"):
        rm(f"{base}/b")
    assert rm(f"{base}/b", recursive=True) == 3
    assert [i.url for i in ls(base)] == [f"{base}/a.txt", f"{base}/z.txt"]
    with pytest.raises(StoreError, match="No such file or folder"):
        ls(f"{base}/b")
    with pytest.raises(StoreError, match="No such file or folder"):
        rm(f"{base}/b/c.txt")
    with pytest.raises(StoreError, match="No such file or folder"):
        get(f"{base}/missing.txt", out)


def test_put_of_a_folder_needs_recursive(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    with pytest.raises(StoreError, match=r"is a folder\. Pass recursive=True"):
        put(tree, f"memory://{uuid.uuid4().hex}")
    with pytest.raises(StoreError, match="No such file or folder"):
        put(tmp_path / "missing", f"memory://{uuid.uuid4().hex}")


def test_listings_are_fresh_after_changes_elsewhere(s3_server: S3Server, s3_env: str) -> None:
    url = f"s3://{s3_env}/fresh"
    upload(s3_server, s3_env, "fresh/", {"one.txt": b"1"})
    assert [i.url for i in ls(url)] == [f"{url}/one.txt"]
    upload(s3_server, s3_env, "fresh/", {"two.txt": b"22"})  # behind fsspec's back
    assert [i.url for i in ls(url)] == [f"{url}/one.txt", f"{url}/two.txt"]
    assert du(url) == 3


def test_rm_of_a_bucket_empties_it(s3_server: S3Server, s3_env: str) -> None:
    upload(s3_server, s3_env, "", FILES)
    assert rm(f"s3://{s3_env}", recursive=True) == len(FILES)
    names = [b["Name"] for b in s3_server.client().list_buckets()["Buckets"]]
    assert s3_env in names
    assert ls(f"s3://{s3_env}") == []


BIG = 9 * 1024 * 1024  # over the 8 MB progress threshold


@pytest.mark.parametrize("progress", [True, None, False])
def test_progress_bar_for_large_transfers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], progress: bool | None
) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * BIG)
    url = f"memory://big-{uuid.uuid4().hex}/big.bin"
    put(big, url, progress=progress)
    get(url, tmp_path / "back.bin", progress=progress)
    err = capsys.readouterr().err
    put(tmp_path / "back.bin", url + ".2", progress=True)
    (tmp_path / "small.bin").write_bytes(b"\0" * (BIG // 2))
    put(tmp_path / "small.bin", url + ".3", progress=True)  # small transfers never show one
    assert capsys.readouterr().err.count("put memory://") == 1
    if progress:  # stderr is not a terminal here: only progress=True shows the bar
        assert f"put {url}" in err
        assert f"get {url}" in err
        assert "9.4" in err  # 9.4 MB transferred
    else:
        assert err == ""
    assert (tmp_path / "back.bin").stat().st_size == BIG


def test_large_transfer_to_s3(s3_env: str, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(BIG))
    url = f"s3://{s3_env}/big/big.bin"
    put(big, url, progress=False)
    assert du(url) == BIG
    assert get(url, tmp_path / "back.bin").read_bytes() == big.read_bytes()


def test_get_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"memory://atomic-{uuid.uuid4().hex}/x.bin"
    put(make_tree(tmp_path / "t") / "a.txt", url)
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    fs, _ = get_filesystem(url)

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("connection reset")

    monkeypatch.setattr(type(fs), "get_file", broken)
    with pytest.raises(StoreError, match="connection reset"):
        get(url, target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t", "x.bin"]


# --------------------------------------------------------------------------- S3 settings


def test_protocol_of() -> None:
    assert protocol_of("s3://b/k") == "s3"
    assert protocol_of("S3://b/k") == "s3"
    assert protocol_of("/data/x") == "file"
    assert protocol_of("file:///data/x") == "file"
    assert protocol_of("memory://x") == "memory"


def test_settings_from_env_and_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_fs, "_config", {})
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:1")
    assert s3_options() == {
        "key": "env-key",
        "secret": "env-secret",
        "endpoint_url": "http://127.0.0.1:1",
    }
    configure({"key": "cfg-key"}, endpoint_url="http://127.0.0.1:2", region_name="eu-west-1")
    assert s3_options() == {
        "key": "cfg-key",
        "secret": "env-secret",
        "endpoint_url": "http://127.0.0.1:2",
        "region_name": "eu-west-1",
    }
    fs, path = get_filesystem("s3://bucket/some/key")
    assert path == "bucket/some/key"
    assert fs.client_kwargs["endpoint_url"] == "http://127.0.0.1:2"
    assert fs.config_kwargs["s3"] == {"addressing_style": "path"}
    with pytest.raises(StoreError, match=r"Unknown S3 setting\(s\) \['endpoint'\]"):
        configure(endpoint="http://x")
    configure()
    assert s3_options()["key"] == "env-key"


def test_configure_reaches_the_server(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(_fs, "_config", {})
    bucket = s3_server.make_bucket()
    configure(key=s3_server.key, secret=s3_server.secret, endpoint_url=s3_server.endpoint)
    upload(s3_server, bucket, "", {"cfg.txt": b"configured"})
    assert [i.url for i in ls(f"s3://{bucket}")] == [f"s3://{bucket}/cfg.txt"]


def test_missing_credentials_give_a_hint(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_server.endpoint)
    monkeypatch.setattr(_fs, "_config", {})
    with pytest.raises(StoreError, match=r"HINT: set AWS_ACCESS_KEY_ID"):
        ls(f"s3://nocreds-{uuid.uuid4().hex[:8]}/x")


# --------------------------------------------------------------------------- CLI


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="forgeml")


def test_cli_on_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_tree(tmp_path / "data")
    result = invoke("store", "ls", "data")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["SIZE", "MODIFIED", "URL"]
    assert lines[1].split()[0:2] == ["6", "B"]
    assert lines[1].rstrip().endswith("data/a.txt")
    assert lines[2].split()[0] == "-"
    assert lines[2].rstrip().endswith("data/b/")
    records = json.loads(invoke("store", "ls", "-r", "data", "--json").output)
    assert [r["url"] for r in records] == [f"data/{n}" for n in NAMES]
    assert records[0] == {
        "url": "data/a.txt",
        "size": 6,
        "type": "file",
        "modified": records[0]["modified"],
    }
    usage = json.loads(invoke("store", "du", "data", "--json").output)
    assert usage == {"url": "data", "bytes": sum(map(len, FILES.values())), "files": 4}
    assert invoke("store", "du", "data").output.split("\t")[1] == "4 file(s)"
    result = invoke("store", "rm", "data/b")
    assert result.exit_code == 1
    assert "Error: 'data/b' is a folder. Pass recursive=True (CLI: --recursive)" in result.output
    assert invoke("store", "rm", "-r", "data/b").output == "removed 2 file(s)\n"
    assert invoke("store", "ls", "data/missing").output.startswith("Error: No such file")


def test_cli_round_trip_through_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_tree(tmp_path / "data")
    url = f"memory://cli-{uuid.uuid4().hex}"
    assert invoke("store", "put", "data", url).exit_code == 1
    result = invoke("store", "put", "--recursive", "data", url)
    assert result.output == f"data -> {url}\n"
    result = invoke("store", "get", "-r", f"{url}/b", "copy")
    assert result.output == f"{url}/b -> copy\n"
    assert (tmp_path / "copy" / "d" / "e.bin").read_bytes() == FILES["b/d/e.bin"]
    assert invoke("store", "get", f"{url}/a.txt").output == f"{url}/a.txt -> a.txt\n"
    assert (tmp_path / "a.txt").read_bytes() == FILES["a.txt"]
    assert invoke("store", "rm", "-r", url).output == "removed 4 file(s)\n"


def test_cli_on_s3(s3_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    make_tree(tmp_path / "data")
    url = f"s3://{s3_env}/v1"
    assert invoke("store", "put", "-r", "data", url).exit_code == 0
    records = json.loads(invoke("store", "ls", url, "--json").output)
    assert [(r["url"], r["type"]) for r in records] == [
        (f"{url}/a.txt", "file"),
        (f"{url}/b", "directory"),
        (f"{url}/z.txt", "file"),
    ]
    usage = json.loads(invoke("store", "du", f"s3://{s3_env}", "--json").output)
    assert usage["files"] == 4
    assert invoke("store", "get", f"{url}/b/c.txt", "c.txt").exit_code == 0
    assert (tmp_path / "c.txt").read_bytes() == FILES["b/c.txt"]
    assert invoke("store", "rm", "-r", url).output == "removed 4 file(s)\n"
    assert invoke("store", "ls", f"s3://{s3_env}").output == f"Nothing in s3://{s3_env}.\n"


def test_cli_help_has_examples() -> None:
    for command in ("ls", "get", "put", "rm", "du"):
        result = invoke("store", command, "--help")
        assert result.exit_code == 0
        assert "Examples:" in result.output
        assert f"forgeml store {command} " in result.output
