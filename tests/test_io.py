"""forgeml.io: save/load by suffix, atomic writes, sha256 sidecars, safe loading."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import forgeml.io as fio
from forgeml import FormatError
from forgeml._core import _hashing
from forgeml._core._hashing import HashingWriter, sha256_file

RNG = np.random.default_rng(0)
DTYPES = [
    np.float16,
    np.float32,
    np.float64,
    np.int8,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.bool_,
]


def sample(dtype: Any, shape: tuple[int, ...] = (3, 5)) -> np.ndarray[Any, Any]:
    if dtype is np.bool_:
        return RNG.random(shape) > 0.5
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return RNG.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return RNG.standard_normal(shape).astype(dtype)


def arrays() -> dict[str, np.ndarray[Any, Any]]:
    out = {np.dtype(t).name: sample(t) for t in DTYPES}
    out["scalar"] = np.array(2.5, dtype=np.float32)
    out["empty"] = np.zeros((0, 4), dtype=np.int64)
    out["column"] = sample(np.float32, (7, 1))
    return out


def assert_same_arrays(got: Any, want: dict[str, np.ndarray[Any, Any]]) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        assert isinstance(got[key], np.ndarray), key
        assert got[key].dtype == value.dtype, key
        assert got[key].shape == value.shape, key
        np.testing.assert_array_equal(got[key], value)


def nested() -> dict[str, Any]:
    return {
        "weights": sample(np.float32, (64, 32)),
        "bias": sample(np.float16, (32,)),
        "name": "net",
        "group": {
            "ids": sample(np.int64, (100,)),
            "mask": sample(np.bool_, (10, 10)),
            "epochs": 3,
            "lr": 1e-3,
            "flag": False,
            "deeper": {"counts": sample(np.uint8, (2000,)), "note": "é ok"},
        },
        "zero_d": np.array(7, dtype=np.int32),
        "empty": np.zeros((0, 3), dtype=np.float64),
    }


def assert_same_tree(got: Any, want: Any, where: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        assert set(got) == set(want), where
        for key in want:
            assert_same_tree(got[key], want[key], f"{where}/{key}")
    elif isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray), where
        assert (got.dtype, got.shape) == (want.dtype, want.shape), where
        np.testing.assert_array_equal(got, want)
    else:
        assert type(got) is type(want), where
        assert got == want, where


# -- the format table ---------------------------------------------------------------------


def test_formats_lists_every_suffix() -> None:
    table = fio.formats()
    expected = {
        ".safetensors": "safetensors",
        ".h5": "h5",
        ".hdf5": "h5",
        ".npz": "npz",
        ".npy": "npy",
        ".json": "json",
        ".yaml": "yaml",
        ".yml": "yaml",
        ".pt": "pt",
        ".pth": "pt",
        ".pkl": "pkl",
    }
    assert expected.items() <= table.items()
    assert list(table) == sorted(table)


def test_unknown_suffix_lists_supported_and_suggests(tmp_path: Path) -> None:
    with pytest.raises(FormatError) as info:
        fio.save({"a": np.ones(2)}, tmp_path / "model.safetensor")
    message = str(info.value)
    assert "model.safetensor' from its suffix '.safetensor'" in message
    assert "Supported suffixes: .h5, .hdf5, .json" in message
    assert "Did you mean '.safetensors'?" in message
    assert "fmt=NAME" in message
    assert not (tmp_path / "model.safetensor").exists()


def test_missing_suffix_and_unknown_format_name(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="it has no suffix"):
        fio.load(tmp_path / "model")
    with pytest.raises(FormatError, match=r"Unknown format 'hdf'.*Did you mean 'hdf5'\?"):
        fio.save_bytes({}, "hdf")


def test_fmt_overrides_the_suffix(tmp_path: Path) -> None:
    path = fio.save({"a": [1, 2]}, tmp_path / "data.txt", fmt="json")
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    assert fio.load(path, fmt=".json") == {"a": [1, 2]}


def test_unknown_option_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"no option 'complevl'.*compression, complevel, shuffle"):
        fio.save({"a": np.ones(3)}, tmp_path / "a.h5", complevl=3)
    with pytest.raises(FormatError, match=r"no option 'compressed' for npy files. Options: none"):
        fio.save(np.ones(3), tmp_path / "a.npy", compressed=True)


def test_meta_only_where_the_format_keeps_it(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match=r"npz files cannot hold meta=.*h5, safetensors"):
        fio.save({"a": np.ones(3)}, tmp_path / "a.npz", meta={"k": "v"})


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".npz", ".h5"])
def test_array_dict_round_trip(tmp_path: Path, suffix: str) -> None:
    want = arrays()
    path = fio.save(want, tmp_path / f"state{suffix}")
    assert_same_arrays(fio.load(path, verify=True), want)
    assert_same_arrays(fio.load_bytes(fio.save_bytes(want, suffix), suffix), want)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda t: np.dtype(t).name)
def test_npy_round_trip(tmp_path: Path, dtype: Any) -> None:
    want = sample(dtype, (4, 3, 2))
    got = fio.load(fio.save(want, tmp_path / "a.npy"), verify=True)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(fio.load_bytes(fio.save_bytes(want, "npy"), "npy"), want)


def test_npy_and_npz_never_pickle(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="array of Python objects"):
        fio.save(np.array([{"a": 1}], dtype=object), tmp_path / "a.npy")
    with pytest.raises(FormatError, match="array of Python objects"):
        fio.save({"x": np.array([None, 1], dtype=object)}, tmp_path / "a.npz")
    np.save(tmp_path / "pickled.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FormatError, match="allow_pickle=False"):
        fio.load(tmp_path / "pickled.npy")


def test_npz_keys_that_numpy_savez_would_misread(tmp_path: Path) -> None:
    want = {"file": np.ones(2), "allow_pickle": np.zeros(3), "a/b": np.arange(4)}
    path = fio.save(want, tmp_path / "odd.npz", compressed=True)
    assert_same_arrays(fio.load(path), want)
    assert_same_arrays(dict(np.load(path)), want)


def test_safetensors_is_readable_by_safetensors_and_back(tmp_path: Path) -> None:
    import safetensors
    import safetensors.numpy

    want = arrays()
    ours = fio.save(want, tmp_path / "ours.safetensors", meta={"epoch": "3", "who": "me"})
    assert_same_arrays(safetensors.numpy.load_file(ours), want)
    with safetensors.safe_open(ours, framework="np") as f:
        assert f.metadata() == {"epoch": "3", "who": "me"}
    theirs = tmp_path / "theirs.safetensors"
    safetensors.numpy.save_file(want, theirs, metadata={"k": "v"})
    data, meta = fio.load(theirs, with_meta=True)
    assert_same_arrays(data, want)
    assert meta == {"k": "v"}
    assert fio.load_bytes(theirs.read_bytes(), "safetensors", with_meta=True)[1] == {"k": "v"}


def test_safetensors_layout_is_aligned(tmp_path: Path) -> None:
    path = fio.save(
        {"a": np.ones(3, np.int8), "b": np.ones(5, np.float64), "c": np.ones(1, np.float16)},
        tmp_path / "a.safetensors",
    )
    raw = path.read_bytes()
    length = int.from_bytes(raw[:8], "little")
    assert (8 + length) % 8 == 0
    header = json.loads(raw[8 : 8 + length])
    for info in header.values():
        start = info["data_offsets"][0]
        itemsize = {"I8": 1, "F64": 8, "F16": 2}[info["dtype"]]
        assert start % itemsize == 0


def test_safetensors_rejects_what_it_cannot_hold(tmp_path: Path) -> None:
    path = tmp_path / "a.safetensors"
    with pytest.raises(FormatError, match=r"strings to strings. Got 'epoch': 3 \(int\)"):
        fio.save({"a": np.ones(2)}, path, meta={"epoch": 3})
    with pytest.raises(FormatError, match=r"Save a single array to \.npy"):
        fio.save(np.ones(2), path)
    with pytest.raises(FormatError, match=r"dtype <U1, which .safetensors cannot hold"):
        fio.save({"s": np.array(["a"])}, path)
    with pytest.raises(FormatError, match="'__metadata__' is reserved"):
        fio.save({"__metadata__": np.ones(1)}, path)
    assert not path.exists()


def test_safetensors_framework_option(tmp_path: Path) -> None:
    path = fio.save({"a": np.ones(2)}, tmp_path / "a.safetensors")
    with pytest.raises(FormatError, match=r"Got 'troch'. Did you mean 'torch'\?"):
        fio.load(path, framework="troch")
    with pytest.raises(FormatError, match="framework='torch'"):
        fio.load(path, device="cuda")


def test_h5_nested_groups_scalars_and_meta(tmp_path: Path) -> None:
    want = nested()
    meta = {"epoch": 12, "source": "unit test", "score": 0.5, "final": True}
    path = fio.save(want, tmp_path / "tree.h5", meta=meta)
    data, got_meta = fio.load(path, with_meta=True, verify=True)
    assert_same_tree(data, want)
    assert got_meta == meta
    assert all(type(got_meta[k]) is type(v) for k, v in meta.items())
    assert list(data) == ["weights", "bias", "group", "zero_d", "empty", "name"]
    assert "epoch" not in fio.load(path)
    bytes_data, bytes_meta = fio.load_bytes(
        fio.save_bytes(want, "h5", meta=meta), ".hdf5", with_meta=True
    )
    assert_same_tree(bytes_data, want)
    assert bytes_meta == meta


def filter_ids(dataset) -> set[int]:
    plist = dataset.id.get_create_plist()
    return {plist.get_filter(i)[0] for i in range(plist.get_nfilters())}


def test_h5_is_readable_by_h5py(tmp_path: Path) -> None:
    import h5py
    import hdf5plugin  # noqa: F401  (registers the Zstd filter)

    want = nested()
    path = fio.save(want, tmp_path / "tree.hdf5", meta={"epoch": 1})
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["weights"][()], want["weights"])
        np.testing.assert_array_equal(
            f["group/deeper/counts"][()], want["group"]["deeper"]["counts"]
        )
        assert f["group"].attrs["epochs"] == 3
        assert f.attrs["epoch"] == 1
        # Filters by id: h5py names only its built-in ones (Zstd is plugin filter 32015).
        assert 32015 in filter_ids(f["weights"])
        assert not filter_ids(f["zero_d"])


def test_h5_options_and_refusals(tmp_path: Path) -> None:
    tree = {"a": sample(np.float32, (100, 100))}
    for options in ({"compression": None}, {"compression": "gzip", "complevel": 9}):
        assert_same_tree(fio.load(fio.save(tree, tmp_path / "o.h5", **options)), tree)
    with pytest.raises(FormatError, match=r"Unknown .h5 compression 'zstandard'"):
        fio.save(tree, tmp_path / "a.h5", compression="zstandard")
    with pytest.raises(FormatError, match=r"from 1 to 22\. Got 30"):
        fio.save(tree, tmp_path / "a.h5", complevel=30)
    with pytest.raises(FormatError, match="holds a mapping"):
        fio.save(np.ones(3), tmp_path / "a.h5")
    with pytest.raises(FormatError, match=r"without '/'.*Got 'a/b' in /g"):
        fio.save({"g": {"a/b": 1}}, tmp_path / "a.h5")
    with pytest.raises(FormatError, match="/g/x is None"):
        fio.save({"g": {"x": None}}, tmp_path / "a.h5")
    with pytest.raises(FormatError, match="clashes with a top-level scalar"):
        fio.save({"epoch": 1}, tmp_path / "a.h5", meta={"epoch": 2})
    assert not (tmp_path / "a.h5").exists()


def test_h5_compresses_sparse_binary_features(tmp_path: Path) -> None:
    features = (RNG.random((5000, 1000)) < 0.01).astype(np.uint8)
    packed = fio.save({"x": features}, tmp_path / "sparse.h5")
    plain = fio.save({"x": features}, tmp_path / "plain.h5", compression=None)
    ratio = features.nbytes / packed.stat().st_size
    assert ratio > 5, f"zstd shrank {features.nbytes} bytes only {ratio:.1f}x"
    assert plain.stat().st_size >= features.nbytes
    np.testing.assert_array_equal(fio.load(packed)["x"], features)


def test_json_round_trip(tmp_path: Path) -> None:
    want = {"a": 1, "b": [1, 2.5, "x"], "c": {"d": None, "e": True}, "é": "ü"}
    path = fio.save({**want, "np": np.float32(0.5), "n": np.int64(3)}, tmp_path / "a.json")
    assert fio.load(path, verify=True) == {**want, "np": 0.5, "n": 3}
    assert "ü" in path.read_text(encoding="utf-8")
    assert fio.load_bytes(fio.save_bytes(want, "json", indent=None), ".json") == want
    with pytest.raises(FormatError, match=r"JSON cannot hold a numpy.ndarray.*\.npz"):
        fio.save({"a": np.ones(2)}, tmp_path / "b.json")


def test_yaml_round_trip(tmp_path: Path) -> None:
    want = {"lr": 1e-3, "layers": [64, 32], "name": "x", "nested": {"on": True, "none": None}}
    for suffix in (".yaml", ".yml"):
        path = fio.save(want, tmp_path / f"a{suffix}")
        assert fio.load(path, verify=True) == want
    assert "lr: 0.001" in (tmp_path / "a.yaml").read_text()
    assert fio.load_bytes(b"lr: 1e-3\n", "yaml") == {"lr": 0.001}
    assert fio.load_bytes(fio.save_bytes(want, "yml"), "yaml") == want


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    (tmp_path / "evil.yaml").write_text("x: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(FormatError, match="unsafe or unknown tag"):
        fio.load(tmp_path / "evil.yaml")
    (tmp_path / "secret.yml").write_text("s: 1\n")
    with pytest.raises(FormatError, match="not found"):
        fio.load_bytes(b"x: !include secret.yml\n", "yaml")
    with pytest.raises(FormatError, match="outside the config root"):
        fio.load_bytes(b"x: !include ../etc/passwd\n", "yaml")
    with pytest.raises(FormatError, match="Cannot write"):
        fio.save({"a": object()}, tmp_path / "a.yaml")


# -- torch ----------------------------------------------------------------------------------


class Payload:
    """A class outside torch's weights-only allowlist."""

    def __init__(self, value: int) -> None:
        self.value = value


def bytes_of(tensor: Any) -> bytes:
    import torch

    flat = tensor.detach().contiguous().reshape(-1)
    return bytes(flat.view(torch.uint8).numpy())


def test_safetensors_torch_tensors(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import safetensors.torch

    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    want = {
        "w": torch.randn(5, 3),
        "half": torch.ones(4, dtype=torch.float16),
        "bf16": torch.randn(6, dtype=torch.bfloat16),
        "ids": torch.arange(5, dtype=torch.int64),
        "flags": torch.tensor([True, False]),
        "transposed": base.t(),
        "trained": torch.nn.Linear(2, 2).weight,
        "fp8": torch.randn(4).to(torch.float8_e4m3fn),
        "scalar": torch.tensor(3.5),
    }
    path = fio.save(want, tmp_path / "t.safetensors", meta={"arch": "mlp"})
    got, meta = fio.load(path, framework="torch", with_meta=True, verify=True)
    assert meta == {"arch": "mlp"}
    theirs = safetensors.torch.load_file(path)
    assert set(got) == set(want) == set(theirs)
    for key, value in want.items():
        for loaded in (got[key], theirs[key]):
            assert loaded.dtype == value.dtype, key
            assert loaded.shape == value.shape, key
            assert bytes_of(loaded) == bytes_of(value), key
    with pytest.raises(FormatError, match=r"BF16 tensors \(e.g. 'bf16'\).*framework='torch'"):
        fio.load(path)
    from_bytes = fio.load_bytes(
        fio.save_bytes(want, "safetensors"), "safetensors", framework="pytorch"
    )
    assert torch.equal(from_bytes["bf16"], want["bf16"])
    no_bf16 = {k: v for k, v in want.items() if k not in ("bf16", "fp8")}
    numpy_view = fio.load(fio.save(no_bf16, tmp_path / "n.safetensors"))
    np.testing.assert_array_equal(numpy_view["transposed"], base.t().numpy())


def test_safetensors_refuses_tied_torch_tensors(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    tied = torch.ones(4)
    with pytest.raises(FormatError, match=r"share memory.*t\.clone\(\)"):
        fio.save({"encoder": tied, "decoder": tied}, tmp_path / "tied.safetensors")
    assert not (tmp_path / "tied.safetensors").exists()
    mixed = {"encoder": tied, "decoder": tied.clone(), "head": np.zeros(2, np.float32)}
    got = fio.load(fio.save(mixed, tmp_path / "mixed.safetensors"), framework="torch")
    assert torch.equal(got["head"], torch.zeros(2))


def test_safetensors_numpy_to_torch(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    want = arrays()
    got = fio.load(fio.save(want, tmp_path / "a.safetensors"), framework="torch")
    for key, value in want.items():
        np.testing.assert_array_equal(got[key].numpy(), value)


def test_pt_round_trip_weights_only(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    want = {
        "model": {"w": torch.randn(3, 4), "b": torch.zeros(4, dtype=torch.int64)},
        "half": torch.ones(2, dtype=torch.bfloat16),
        "step": 5,
        "names": ["a", "b"],
    }
    for suffix in (".pt", ".pth"):
        got = fio.load(fio.save(want, tmp_path / f"ckpt{suffix}"), verify=True)
        assert got["step"] == 5
        assert got["names"] == ["a", "b"]
        assert torch.equal(got["model"]["w"], want["model"]["w"])
        assert torch.equal(got["half"], want["half"])
    got = fio.load_bytes(fio.save_bytes(want, "pt"), "pt", map_location="cpu")
    assert torch.equal(got["model"]["b"], want["model"]["b"])


def test_pt_refuses_arbitrary_objects_unless_trusted(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    path = fio.save({"payload": Payload(3)}, tmp_path / "evil.pt")
    with pytest.raises(FormatError) as info:
        fio.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "weights-only allowlist" in message
    assert "Payload" in message
    assert "trust=True" in message
    assert ".safetensors" in message
    assert fio.load(path, trust=True)["payload"].value == 3
    with pytest.raises(FormatError, match="The data holds objects outside"):
        fio.load_bytes(path.read_bytes(), "pt")


# -- pickle ---------------------------------------------------------------------------------


def test_pickle_needs_trust(tmp_path: Path) -> None:
    path = tmp_path / "obj.pkl"
    with pytest.raises(FormatError) as info:
        fio.save(Payload(1), path)
    message = str(info.value)
    assert "Refusing to write" in message
    assert "trust=True" in message
    for safe in (".safetensors", ".npz", ".h5", ".json", ".yaml", "skops"):
        assert safe in message
    assert not path.exists()

    fio.save(Payload(2), path, trust=True)
    with pytest.raises(
        FormatError, match=r"Refusing to load .*obj.pkl. in pkl format.*arbitrary code"
    ):
        fio.load(path)
    assert fio.load(path, trust=True, verify=True).value == 2
    with pytest.raises(FormatError, match="Refusing to load the data"):
        fio.load_bytes(path.read_bytes(), "pickle")
    assert fio.load_bytes(fio.save_bytes([1, 2], "pkl", trust=True), "pkl", trust=True) == [1, 2]


# -- checksums ------------------------------------------------------------------------------


def test_sidecar_is_sha256sum_format(tmp_path: Path) -> None:
    path = fio.save({"a": np.arange(10)}, tmp_path / "a.npz")
    sidecar = tmp_path / "a.npz.sha256"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sidecar.read_text() == f"{digest}  a.npz\n"
    assert fio.verify_checksum(path) == digest
    assert fio.verify_checksum(path, expected=digest.upper()) == digest
    check = subprocess.run(
        ["sha256sum", "--check", sidecar.name], cwd=tmp_path, capture_output=True, check=False
    )
    assert check.returncode == 0, check.stderr


def test_checksum_false_skips_and_clears_the_sidecar(tmp_path: Path) -> None:
    path = fio.save({"a": np.arange(3)}, tmp_path / "a.npz")
    assert (tmp_path / "a.npz.sha256").exists()
    fio.save({"a": np.arange(4)}, path, checksum=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]
    np.testing.assert_array_equal(fio.load(path)["a"], np.arange(4))
    with pytest.raises(FormatError, match="does not exist"):
        fio.load(path, verify=True)


def test_verify_detects_a_flipped_byte(tmp_path: Path) -> None:
    want = {"w": sample(np.float32, (100, 100))}
    path = fio.save(want, tmp_path / "w.safetensors")
    digest = fio.verify_checksum(path)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(raw)
    actual = hashlib.sha256(raw).hexdigest()
    with pytest.raises(FormatError) as info:
        fio.load(path, verify=True)
    message = str(info.value)
    assert "Checksum mismatch" in message
    assert str(path) in message
    assert digest in message
    assert actual in message
    assert "forgeml.io.write_checksum(" in message
    fio.load(path)  # without verify the damage goes unnoticed: that is what verify is for
    with pytest.raises(FormatError, match="Checksum mismatch"):
        fio.verify_checksum(path, expected=digest)


def test_missing_sidecar_says_how_to_make_one(tmp_path: Path) -> None:
    path = tmp_path / "made_elsewhere.npy"
    np.save(path, np.arange(3))
    with pytest.raises(FormatError) as info:
        fio.load(path, verify=True)
    assert "does not exist" in str(info.value)
    assert f"forgeml.io.write_checksum('{path}')" in str(info.value)
    digest = fio.write_checksum(path)
    assert digest == sha256_file(path)
    np.testing.assert_array_equal(fio.load(path, verify=True), np.arange(3))


def test_malformed_sidecar(tmp_path: Path) -> None:
    path = fio.save([1], tmp_path / "a.json")
    (tmp_path / "a.json.sha256").write_text("not a digest\n")
    with pytest.raises(FormatError, match="is malformed"):
        fio.load(path, verify=True)


def test_sha256_file_streams_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "big.bin"
    data = RNG.bytes(int(2.5 * _hashing.CHUNK_SIZE))
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()


def test_hashing_writer_hashes_large_and_small_writes(tmp_path: Path) -> None:
    big = np.arange(1 << 20, dtype=np.float32)  # hashed on the helper thread
    path = tmp_path / "out.bin"
    with path.open("wb") as raw, HashingWriter(raw) as writer:
        writer.write(b"head")
        writer.write(big)
        writer.write(memoryview(bytearray(b"tail")))
        assert writer.tell() == 8 + big.nbytes
        digest = writer.hexdigest()
    assert digest == sha256_file(path)


def test_damaged_file_without_verify_says_so(tmp_path: Path) -> None:
    path = fio.save({"a": np.arange(1000)}, tmp_path / "a.npz")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FormatError, match=r"Cannot load .*a.npz' as npz.*verify=True"):
        fio.load(path)
    (tmp_path / "b.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(FormatError, match=r"not a \.safetensors file, or is truncated"):
        fio.load(tmp_path / "b.safetensors")
    with pytest.raises(FileNotFoundError):
        fio.load(tmp_path / "missing.h5")


# -- atomic writes ----------------------------------------------------------------------------


def test_failure_mid_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = {"w": np.zeros(1 << 20, dtype=np.float32)}
    path = fio.save(old, tmp_path / "w.safetensors")
    sidecar = (tmp_path / "w.safetensors.sha256").read_text()
    real_write = HashingWriter.write
    calls = []

    def failing_write(self: HashingWriter, data: Any) -> int:
        calls.append(1)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(HashingWriter, "write", failing_write)
    with pytest.raises(OSError, match="No space left"):
        fio.save({"w": np.ones(1 << 20, dtype=np.float32)}, path)
    monkeypatch.undo()
    assert len(calls) == 2
    assert (tmp_path / "w.safetensors.sha256").read_text() == sidecar
    assert_same_arrays(fio.load(path, verify=True), old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors", "w.safetensors.sha256"]


def test_failure_while_serializing_keeps_the_old_file(tmp_path: Path) -> None:
    path = fio.save({"a": 1}, tmp_path / "a.json")
    with pytest.raises(FormatError, match="Cannot save dict"):
        fio.save({"a": object()}, path)
    assert fio.load(path, verify=True) == {"a": 1}
    assert len(list(tmp_path.iterdir())) == 2


KILLED_SAVE = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import forgeml.io as fio
    from forgeml._core._hashing import HashingWriter

    real_write = HashingWriter.write

    def slow_write(self, data):  # a slow disk: report each chunk, then stall
        written = real_write(self, data)
        print(written, flush=True)
        time.sleep(0.2)
        return written

    HashingWriter.write = slow_write
    fio.save(np.full(16 << 20, 7, dtype=np.float32), sys.argv[1])  # 64 MiB
    print("finished", flush=True)
    """
)


def test_sigkill_mid_save_leaves_the_old_file_and_checksum(tmp_path: Path) -> None:
    old = np.arange(1000, dtype=np.float32)
    path = fio.save(old, tmp_path / "big.npy")
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_SAVE, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        written = 0
        while written < 16 << 20:  # the header and at least one 16 MiB chunk of data
            line = proc.stdout.readline()
            assert line, "the save process died on its own"
            assert line.strip() != "finished", "the save ended before it was killed"
            written += int(line)
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".big.npy.")]
        assert len(temps) == 1
        assert temps[0].stat().st_size >= 16 << 20
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    got = fio.load(path, verify=True)
    np.testing.assert_array_equal(got, old)
    assert fio.verify_checksum(path) == sha256_file(path)


# -- extension point --------------------------------------------------------------------------


class UpperFormat(fio.Format):
    """A third-party format that implements only dumps/loads."""

    name = "upper"
    suffixes = (".upper",)
    save_options = ("exclaim",)

    def dumps(self, obj: Any, *, exclaim: bool = False) -> bytes:
        return (str(obj).upper() + ("!" if exclaim else "")).encode()

    def loads(self, data: bytes) -> tuple[Any, dict[str, Any]]:
        return data.decode(), {}


def test_third_party_format(tmp_path: Path) -> None:
    fio.register_format("upper", f"{__name__}:UpperFormat", suffixes=["upper"])
    assert fio.formats()[".upper"] == "upper"
    path = fio.save("hello", tmp_path / "greeting.UPPER", exclaim=True)
    assert path.read_text() == "HELLO!"
    assert fio.load(path, verify=True) == "HELLO!"
    assert fio.save_bytes("x", "upper") == b"X"
    assert "upper" in fio.FORMATS


class ShoutFormat(fio.Format):
    """A plugin format that implements only write/read."""

    name = "shout"
    suffixes = (".shout",)

    def write(self, obj: Any, f: Any) -> None:
        f.write(str(obj).upper().encode())

    def read(self, path: Path) -> tuple[Any, dict[str, Any]]:
        return path.read_text(), {"size": path.stat().st_size}


def test_entry_point_plugin_declares_its_suffixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib.metadata import EntryPoint

    from forgeml._core import _registry
    from forgeml.io import _format

    plugin = EntryPoint("shout", f"{__name__}:ShoutFormat", "forgeml.formats")
    monkeypatch.setattr(
        _registry, "entry_points", lambda group: [plugin] if group == "forgeml.formats" else []
    )
    for attr in ("_entries", "_aliases", "_loaded"):
        monkeypatch.setattr(fio.FORMATS, attr, dict(getattr(fio.FORMATS, attr)))
    monkeypatch.setattr(fio.FORMATS, "_plugins_scanned", False)
    monkeypatch.setattr(_format, "_handlers", dict(_format._handlers))

    assert fio.formats()[".shout"] == "shout"
    path = fio.save("hey", tmp_path / "a.shout")
    assert fio.load(path, verify=True, with_meta=True) == ("HEY", {"size": 3})
    assert fio.load_bytes(fio.save_bytes("x", ".shout"), "shout") == "X"


def test_import_is_light() -> None:
    code = (
        "import sys, forgeml.io as fio; fio.formats(); "
        "print(sorted(m for m in ('h5py', 'hdf5plugin', 'safetensors', 'torch', 'numpy', "
        "'yaml') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
