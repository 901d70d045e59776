"""forgeml.hub: downloads from a real HTTP server on 127.0.0.1, a real S3 server and local files."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import forgeml.hub._download as download_mod
from forgeml import FormatError, HubError
from forgeml.hub import download, hash_prefix, load_state_dict_from_url, resolve_url
from forgeml.store import cache_info

torch = pytest.importorskip("torch")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FileServer(ThreadingHTTPServer):
    """Serves the files under ``root``; counts GETs per path.

    Paths under ``slow/`` trickle out (``chunk`` bytes every ``delay`` s) and
    record how many bytes went out; paths under ``short/`` send half the body
    they announce, then hang up.
    """

    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.root = root
        self.requests: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.delay = 0.02
        self.chunk = 32 << 10

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{path}"

    def add(self, path: str, data: bytes) -> str:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return self.url(path)


class Handler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:
        path = urllib.parse.unquote(self.path.split("?", 1)[0].lstrip("/"))
        self.server.requests[path] += 1
        file = self.server.root / path
        if not file.is_file():
            self.send_error(404, "Not Found")
            return
        data = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            if path.startswith("short/"):
                self.wfile.write(data[: len(data) // 2])
                self.close_connection = True
            elif path.startswith("slow/"):
                for start in range(0, len(data), self.server.chunk):
                    self.wfile.write(data[start : start + self.server.chunk])
                    self.wfile.flush()
                    self.server.sent[path] += len(data[start : start + self.server.chunk])
                    time.sleep(self.server.delay)
            else:
                self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http(tmp_path: Path) -> Iterator[FileServer]:
    server = FileServer(tmp_path / "www")
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("FORGEML_CACHE", str(root))
    monkeypatch.delenv("FORGEML_EPHEMERAL_CACHE", raising=False)
    monkeypatch.delenv("FORGEML_HUB_TIMEOUT", raising=False)
    return root


class Custom:
    """Not a tensor or a plain container: weights-only loading refuses it."""


def tiny_state() -> dict[str, Any]:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)
    ).state_dict()


def pt_bytes(state: dict[str, Any], tmp_path: Path) -> bytes:
    f = tmp_path / "state.pt"
    torch.save(state, f)
    return f.read_bytes()


def safetensors_bytes(state: dict[str, Any]) -> bytes:
    from safetensors.torch import save

    return save(dict(state))


def assert_same_state(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert torch.equal(got[key], value), key


# ----------------------------------------------------------------------------- download


def test_download_over_http_is_cached(http: FileServer, cache_root: Path) -> None:
    url = http.add("files/model.bin", b"weights" * 100)
    path = download(url)
    assert path.read_bytes() == b"weights" * 100
    assert path.name == "model.bin"
    assert path.is_relative_to(cache_root)
    assert download(url) == path
    assert http.requests["files/model.bin"] == 1
    assert download(url, force_reload=True).read_bytes() == b"weights" * 100
    assert http.requests["files/model.bin"] == 2
    assert cache_info().entries == 1


def test_download_to_a_path(http: FileServer, tmp_path: Path) -> None:
    url = http.add("a.txt", b"alpha")
    target = download(url, tmp_path / "out" / "copy.txt", sha256=sha(b"alpha"))
    assert target == tmp_path / "out" / "copy.txt"
    assert target.read_bytes() == b"alpha"
    folder = tmp_path / "folder"
    folder.mkdir()
    assert download(url, folder) == folder / "a.txt"
    assert http.requests["a.txt"] == 1


def test_wrong_sha256_deletes_the_download_and_names_both_digests(http: FileServer) -> None:
    url = http.add("w.pt", b"real bytes")
    wrong = "0" * 64
    with pytest.raises(HubError) as caught:
        download(url, sha256=wrong)
    assert f"expected sha256 {wrong}" in str(caught.value)
    assert f"its sha256 is {sha(b'real bytes')}" in str(caught.value)
    assert cache_info().entries == 0
    assert download(url, sha256=sha(b"real bytes")).read_bytes() == b"real bytes"


def test_http_errors_are_clear(http: FileServer) -> None:
    with pytest.raises(HubError, match=r"Downloading 'http://127.*/missing.pt' failed: HTTP 404"):
        download(http.url("missing.pt"))
    closed = http.url("x").replace(str(http.server_address[1]), "1")
    with pytest.raises(HubError, match=r"Cannot reach 'http://127\.0\.0\.1:1/x'"):
        download(closed)
    url = http.add("short/cut.bin", b"z" * 10_000)
    with pytest.raises(HubError, match="stopped after 5000 of 10000 bytes"):
        download(url)
    assert cache_info().entries == 0


def test_plain_http_elsewhere_needs_a_sha256() -> None:
    with pytest.raises(HubError, match=r"Refusing to download 'http://example\.invalid/m\.pt'"):
        download("http://example.invalid/m.pt")


def test_unknown_schemes_and_bad_checksums_are_refused(tmp_path: Path) -> None:
    with pytest.raises(HubError, match="sha256= must be 64 hexadecimal digits"):
        download(tmp_path / "x", sha256="nope")
    with pytest.raises(HubError, match="nosuchproto"):
        download("nosuchproto://bucket/key")


def test_timeout_from_the_environment(http: FileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORGEML_HUB_TIMEOUT", "soon")
    with pytest.raises(HubError, match="FORGEML_HUB_TIMEOUT must be a positive number"):
        download(http.add("t.bin", b"t"))


def test_download_from_s3(s3_env: str, s3_server: Any) -> None:
    s3_server.client().put_object(Bucket=s3_env, Key="ckpt/w.bin", Body=b"from s3")
    url = f"s3://{s3_env}/ckpt/w.bin"
    path = download(url, sha256=sha(b"from s3"))
    assert path.read_bytes() == b"from s3"
    with pytest.raises(HubError, match="expected sha256"):
        download(url, sha256="1" * 64)
    with pytest.raises(HubError, match="No object at"):
        download(f"s3://{s3_env}/ckpt/w.bi")


def test_local_paths_are_returned_and_never_deleted(tmp_path: Path) -> None:
    f = tmp_path / "local.bin"
    f.write_bytes(b"mine")
    assert download(f) == f
    assert download(f"file://{f}", sha256=sha(b"mine")) == f
    with pytest.raises(HubError, match="it was left in place"):
        download(f, sha256="2" * 64)
    assert f.read_bytes() == b"mine"
    assert download(f, tmp_path / "copy.bin").read_bytes() == b"mine"
    with pytest.raises(HubError, match="does not exist"):
        download(tmp_path / "missing.bin")
    assert cache_info().entries == 0


def test_progress_callback(http: FileServer) -> None:
    calls: list[tuple[int, int | None]] = []
    download(http.add("p.bin", b"p" * 3000), progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (3000, 3000)


def test_a_download_killed_midway_leaves_nothing_served(http: FileServer, cache_root: Path) -> None:
    data = os.urandom(4 << 20)
    url = http.add("slow/big.pt", data)
    code = "import sys; from forgeml.hub import download; download(sys.argv[1])"
    child = subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while http.sent["slow/big.pt"] < (512 << 10) and time.monotonic() < deadline:
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
    assert child.returncode == -signal.SIGKILL
    assert http.sent["slow/big.pt"] < len(data)
    assert cache_info().entries == 0
    leftovers = list((cache_root / "objects").glob("*/*/.*.tmp-*"))
    assert leftovers  # the partial download, kept aside, never an entry
    http.delay = 0
    path = download(url)
    assert sha(path.read_bytes()) == sha(data)
    assert http.requests["slow/big.pt"] == 2
    assert not any(p.exists() for p in leftovers)


# ----------------------------------------------------------------------------- URL schemes


def test_github_urls_resolve_to_release_assets() -> None:
    assert (
        resolve_url("github://pytorch/vision@v0.17.0/resnet18-f37072fd.pth")
        == "https://github.com/pytorch/vision/releases/download/v0.17.0/resnet18-f37072fd.pth"
    )
    assert (
        resolve_url("github://o/r@release/v1/my model.pt")
        == "https://github.com/o/r/releases/download/release/v1/my%20model.pt"
    )
    for bad in ("github://o/r/v1/a.pt", "github://o/r@v1", "github://o@v1/a.pt"):
        with pytest.raises(HubError, match=r"github://OWNER/REPO@TAG/ASSET"):
            resolve_url(bad)
    with pytest.raises(HubError, match="The GitHub owner"):
        resolve_url("github://o w/r@v1/a.pt")


def test_github_download_fetches_the_resolved_url(
    http: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = http.add("asset.pt", b"release asset")
    asked: list[str] = []
    real = download_mod._http_fetcher

    def fetcher(url: str) -> Any:
        inner = real(local)  # the release, served from 127.0.0.1 instead

        def fetch(out: Any, progress: Any) -> int | None:
            asked.append(url)
            return inner(out, progress)

        return fetch

    monkeypatch.setattr(download_mod, "_http_fetcher", fetcher)
    path = download("github://acme/models@v2/asset.pt")
    assert path.read_bytes() == b"release asset"
    assert path.name == "asset.pt"
    assert asked == ["https://github.com/acme/models/releases/download/v2/asset.pt"]
    # The entry is keyed by the https:// URL: the same file through either form.
    assert download("https://github.com/acme/models/releases/download/v2/asset.pt") == path
    assert asked == ["https://github.com/acme/models/releases/download/v2/asset.pt"]


def test_gdrive_downloads_through_gdown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gdown = pytest.importorskip("gdown")
    calls: list[dict[str, Any]] = []

    def fake_download(*args: Any, **kwargs: Any) -> str:
        calls.append(kwargs)
        Path(kwargs["output"]).write_bytes(b"drive file")
        return str(kwargs["output"])

    monkeypatch.setattr(gdown, "download", fake_download)
    assert resolve_url("gdrive://1AbC-d_9") == "https://drive.google.com/uc?id=1AbC-d_9"
    path = download("gdrive://1AbC-d_9/weights.pt", sha256=sha(b"drive file"))
    assert path.read_bytes() == b"drive file"
    assert path.name == "weights.pt"
    assert calls[0]["id"] == "1AbC-d_9"
    assert download("gdrive://1AbC-d_9/weights.pt") == path
    assert len(calls) == 1
    assert download("gdrive://1AbC-d_9") == path  # one entry per file id, whatever its name
    assert len(calls) == 1
    assert download("gdrive://2xYz").name == "2xYz"  # no name given: the id
    with pytest.raises(HubError, match="gdrive://FILE_ID"):
        download("gdrive://bad id")

    monkeypatch.setattr(gdown, "download", lambda **kwargs: None)
    with pytest.raises(HubError, match="Google Drive sent no file for gdrive://other"):
        download("gdrive://other")
    assert not list(tmp_path.glob("cache/.gdrive-*"))


# ----------------------------------------------------------------------------- state dicts


def test_load_pt_and_safetensors_state_dicts(http: FileServer, tmp_path: Path) -> None:
    state = tiny_state()
    for name, data in (
        ("tiny.pt", pt_bytes(state, tmp_path)),
        ("tiny.safetensors", safetensors_bytes(state)),
    ):
        got = load_state_dict_from_url(http.add(name, data), map_location="cpu")
        assert_same_state(got, state)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        model.load_state_dict(got)


def test_load_from_local_files_and_s3(s3_env: str, s3_server: Any, tmp_path: Path) -> None:
    state = tiny_state()
    f = tmp_path / "local.pt"
    torch.save(state, f)
    assert_same_state(load_state_dict_from_url(f), state)
    assert_same_state(load_state_dict_from_url(f"file://{f}"), state)
    s3_server.client().put_object(Bucket=s3_env, Key="m.safetensors", Body=safetensors_bytes(state))
    assert_same_state(load_state_dict_from_url(f"s3://{s3_env}/m.safetensors"), state)


def test_hash_prefix_in_the_file_name_is_checked(http: FileServer, tmp_path: Path) -> None:
    state = tiny_state()
    data = pt_bytes(state, tmp_path)
    good = f"tiny-{sha(data)[:8]}.pt"
    assert hash_prefix(good) == sha(data)[:8]
    assert hash_prefix("resnet-50.pt") is None  # too short to be a hash prefix
    assert_same_state(load_state_dict_from_url(http.add(good, data)), state)
    url = http.add("tiny-deadbeef.pt", data)
    with pytest.raises(HubError, match=f"sha256 starting with deadbeef: its sha256 is {sha(data)}"):
        load_state_dict_from_url(url)
    assert cache_info().entries == 1  # only the good one
    assert_same_state(load_state_dict_from_url(url, check_hash=False), state)
    # An explicit sha256 wins over the name.
    with pytest.raises(HubError, match="expected sha256"):
        load_state_dict_from_url(http.add(f"other-{sha(data)[:8]}.pt", data), sha256="3" * 64)
    local = tmp_path / "tiny-deadbeef.pt"
    local.write_bytes(data)
    with pytest.raises(HubError, match="check_hash=False"):
        load_state_dict_from_url(local)


def test_force_reload_and_model_dir(http: FileServer, tmp_path: Path, cache_root: Path) -> None:
    state = tiny_state()
    url = http.add("m.pt", pt_bytes(state, tmp_path))
    models = tmp_path / "models"
    load_state_dict_from_url(url, model_dir=models)
    load_state_dict_from_url(url, model_dir=models)
    assert http.requests["m.pt"] == 1
    assert list(models.glob("objects/*/*/*/m.pt"))
    assert not cache_root.exists()
    assert_same_state(load_state_dict_from_url(url, model_dir=models, force_reload=True), state)
    assert http.requests["m.pt"] == 2
    load_state_dict_from_url(url)  # the default cache is another folder
    assert http.requests["m.pt"] == 3


def test_loading_is_weights_only_and_by_suffix(http: FileServer, tmp_path: Path) -> None:
    f = tmp_path / "code.pt"
    torch.save({"sneaky": Custom()}, f)
    with pytest.raises(FormatError, match="weights-only allowlist"):
        load_state_dict_from_url(http.add("code.pt", f.read_bytes()))
    with pytest.raises(HubError, match=r"Cannot tell how to load 'x.onnx'.*file_name="):
        load_state_dict_from_url(http.add("x.onnx", b"onnx"))
    state = tiny_state()
    url = http.add("noext", pt_bytes(state, tmp_path))
    assert_same_state(load_state_dict_from_url(url, file_name="noext.pt"), state)
    with pytest.raises(HubError, match="map_location must name it"):
        load_state_dict_from_url(
            http.add("s.safetensors", safetensors_bytes(state)), map_location=lambda s, _: s
        )
    torch.save([1, 2], f)
    with pytest.raises(HubError, match="not a state dict"):
        load_state_dict_from_url(f)
