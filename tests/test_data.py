"""forgeml.data: lazy datasets over numpy, torch and TensorFlow, and conversions between them."""

from __future__ import annotations

import pickle
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from forgeml import DataError
from forgeml.data import Dataset, NumpyDataset, TFDataset, TorchDataset

DTYPES = ["float16", "float32", "float64", "int32", "int64", "bool", "uint8"]


@pytest.fixture(scope="module")
def torch() -> Any:
    return pytest.importorskip("torch")


@pytest.fixture(params=["numpy", "torch"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "torch":
        pytest.importorskip("torch")
    return str(request.param)


def make(data: Any, backend: str, **flags: Any) -> Dataset:
    """``data`` as a dataset of ``backend``."""
    if backend == "numpy":
        return NumpyDataset(data, **flags)
    return TorchDataset(data, **flags)


def as_np(tree: Any) -> Any:
    """Every leaf as a numpy array, for comparisons."""
    if isinstance(tree, dict):
        return {key: as_np(value) for key, value in tree.items()}
    if isinstance(tree, tuple | list):
        return type(tree)(as_np(value) for value in tree)
    if hasattr(tree, "numpy") and not isinstance(tree, np.ndarray | np.generic):
        return tree.numpy()
    return np.asarray(tree)


def leaf_type(backend: str) -> type | tuple[type, ...]:
    if backend == "numpy":
        return (np.ndarray, np.generic)  # a sample of a 1-D array is a numpy scalar
    import torch

    return torch.Tensor


def assert_tree_equal(got: Any, expected: Any) -> None:
    got, expected = as_np(got), as_np(expected)
    if isinstance(expected, dict):
        assert isinstance(got, dict)
        assert got.keys() == expected.keys()
        for key in expected:
            assert_tree_equal(got[key], expected[key])
    elif isinstance(expected, tuple | list):
        assert type(got) is type(expected)
        assert len(got) == len(expected)
        for g, e in zip(got, expected, strict=True):
            assert_tree_equal(g, e)
    else:
        assert got.dtype == expected.dtype, (got.dtype, expected.dtype)
        np.testing.assert_array_equal(got, expected)


# -- the DRYML example and the flags -----------------------------------------------------------


def test_the_dryml_example(torch: Any) -> None:
    data = np.random.random((32, 10, 10))
    assert NumpyDataset(data).peek().shape == (32, 10, 10)
    assert type(NumpyDataset(data).torch().peek()) is torch.Tensor
    assert NumpyDataset(data).torch().unbatch().peek().shape == torch.Size([10, 10])


def test_an_array_is_one_batch_and_its_rows_are_the_samples() -> None:
    data = np.arange(12).reshape(6, 2)
    ds = NumpyDataset(data)
    assert (ds.batched, ds.supervised, ds.indexed, len(ds)) == (True, False, True, 1)
    assert ds[0] is data
    samples = ds.unbatch()
    assert (samples.batched, samples.indexed, len(samples)) == (False, True, 6)
    np.testing.assert_array_equal(samples[4], [8, 9])
    np.testing.assert_array_equal(samples[-1], [10, 11])
    rows = NumpyDataset(data, batched=False)
    assert (rows.batched, len(rows)) == (False, 6)
    np.testing.assert_array_equal(np.stack(list(rows)), data)
    assert repr(ds) == "NumpyDataset(batched=True, supervised=False, indexed=True, len=1)"


def test_nested_arrays_and_supervised_pairs(backend: str) -> None:
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    y = np.arange(5, dtype=np.int64)
    ds = make({"x": x, "meta": (y, y * 2)}, backend)
    sample = ds.unbatch()[3]
    assert_tree_equal(sample, {"x": x[3], "meta": (y[3], y[3] * 2)})
    pairs = make((x, y), backend, supervised=True).unbatch()
    assert pairs.supervised
    assert_tree_equal(pairs[1], (x[1], y[1]))


def test_bad_sources_say_what_to_pass() -> None:
    with pytest.raises(DataError, match=r"different batch sizes \(0: 3, 1: 4\)"):
        NumpyDataset((np.zeros(3), np.zeros(4)))
    with pytest.raises(DataError, match=r"supervised=True\) needs data=\(x, y\)"):
        NumpyDataset((np.zeros(3), np.zeros(3), np.zeros(3)), supervised=True)
    with pytest.raises(TypeError, match=r"can be read only once.*lambda: my_generator"):
        NumpyDataset(i for i in range(3))
    with pytest.raises(TypeError, match=r"cannot make a dataset from builtins.str"):
        NumpyDataset("data.csv")
    with pytest.raises(DataError, match="scalar"):
        NumpyDataset((np.zeros(3), np.float64(1.0)))
    with pytest.raises(TypeError, match="not built directly"):
        Dataset()


# -- length and indexing -------------------------------------------------------------------------


def counting(n: int) -> tuple[list[int], Any]:
    calls: list[int] = []

    def factory() -> Iterator[np.ndarray]:
        calls.append(1)
        return (np.full(2, i) for i in range(n))

    return calls, factory


def test_length_is_known_or_a_type_error() -> None:
    _, factory = counting(5)
    ds = NumpyDataset(factory)
    assert not ds.indexed
    with pytest.raises(TypeError, match=r"length of this NumpyDataset is unknown.*size="):
        len(ds)
    assert bool(ds)  # truthiness does not need the length
    assert len(NumpyDataset(factory, size=5)) == 5
    assert len(NumpyDataset(factory, size=5).batch(2)) == 3
    assert len(NumpyDataset(factory, size=5).batch(2, drop_remainder=True)) == 2
    with pytest.raises(TypeError, match=r"is not indexed.*collect"):
        ds[0]
    assert len(ds.collect()) == 5
    np.testing.assert_array_equal(ds.collect()[4], [4, 4])
    listed = NumpyDataset([1, 2, 3])
    assert (listed.indexed, len(listed), listed[2]) == (True, 3, 3)


def test_indexing_checks_range_and_type() -> None:
    ds = NumpyDataset(np.arange(4)).unbatch()
    with pytest.raises(IndexError, match="Index 4 is out of range for a dataset of 4"):
        ds[4]
    with pytest.raises(TypeError, match="integers or slices"):
        ds["0"]  # type: ignore[index]
    assert [int(v) for v in ds[1:3]] == [1, 2]
    assert [int(v) for v in ds[::-2]] == [3, 1]


# -- every method, on numpy and torch -----------------------------------------------------------


def test_peek_iter_len_getitem(backend: str) -> None:
    data = np.arange(20, dtype=np.int32).reshape(10, 2)
    ds = make(data, backend).unbatch()
    assert isinstance(ds.peek(), leaf_type(backend))
    assert len(ds) == 10
    assert_tree_equal(ds[7], data[7])
    assert_tree_equal(np.stack([as_np(s) for s in ds]), data)
    with pytest.raises(DataError, match="empty"):
        ds.skip(10).peek()


@pytest.mark.parametrize("drop_remainder", [False, True])
def test_batch_and_unbatch_round_trip(backend: str, drop_remainder: bool) -> None:
    data = {"a": np.arange(14, dtype=np.float32).reshape(7, 2), "b": np.arange(7)}
    samples = make(data, backend).unbatch()
    batches = samples.batch(3, drop_remainder=drop_remainder)
    assert batches.batched
    assert batches.indexed
    sizes = [len(as_np(b["b"])) for b in batches]
    assert sizes == ([3, 3] if drop_remainder else [3, 3, 1])
    assert len(batches) == len(sizes)
    assert isinstance(batches[0]["a"], leaf_type(backend))
    kept = 6 if drop_remainder else 7
    assert_tree_equal(batches[1], {"a": data["a"][3:6], "b": data["b"][3:6]})
    back = batches.unbatch()
    assert back.indexed
    assert len(back) == kept
    assert_tree_equal(back[kept - 1], {"a": data["a"][kept - 1], "b": data["b"][kept - 1]})
    assert_tree_equal(list(back), [{"a": data["a"][i], "b": data["b"][i]} for i in range(kept)])
    # batch() of batched data changes the batch size; unbatch() of samples changes nothing
    rebatched = batches.batch(2)
    assert [len(as_np(b["b"])) for b in rebatched] == (
        [2, 2, 2] if drop_remainder else [2] * 3 + [1]
    )
    assert samples.unbatch() is samples


def test_batch_and_unbatch_of_iterables(backend: str) -> None:
    _, factory = counting(5)
    ds = make(factory, backend)
    batches = ds.batch(2)
    assert not batches.indexed
    assert [as_np(b)[:, 0].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert [int(as_np(s)[0]) for s in batches.unbatch()] == [0, 1, 2, 3, 4]
    assert [len(as_np(b)) for b in ds.batch(2, drop_remainder=True)] == [2, 2]


def test_map_and_map_el(backend: str) -> None:
    data = np.arange(6, dtype=np.float64).reshape(3, 2)
    ds = make(data, backend)
    # map sees the whole batch, map_el each sample inside it
    assert as_np(ds.map(lambda b: b.sum()).peek()) == pytest.approx(15.0)
    sums = ds.map_el(lambda s: s.sum())
    assert sums.batched
    assert_tree_equal(sums.peek(), data.sum(axis=1))
    assert isinstance(sums.peek(), leaf_type(backend))
    assert sums.unbatch().indexed  # map_el keeps batch sizes, so samples stay indexed
    assert as_np(sums.unbatch()[2]) == pytest.approx(9.0)
    assert not ds.map(lambda b: b).unbatch().indexed  # map may change batch sizes
    # on samples, map_el is map
    assert as_np(ds.unbatch().map_el(lambda s: s * 2)[1]).tolist() == [4.0, 6.0]
    with pytest.raises(DataError, match="map_el\\(\\) takes a function"):
        ds.map_el(3)  # type: ignore[arg-type]


def test_map_el_stacks_numbers_in_the_backend(backend: str) -> None:
    ds = make(np.arange(4), backend).map_el(lambda s: int(s) * 10)
    assert isinstance(ds.peek(), leaf_type(backend))
    assert as_np(ds.peek()).tolist() == [0, 10, 20, 30]


def test_apply_x_and_apply_y(backend: str) -> None:
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    y = np.array([0, 1, 0, 1])
    ds = make((x, y), backend, supervised=True)
    scaled = ds.apply_X(lambda a: a * 10).apply_Y(lambda b: 1 - b)
    assert scaled.supervised
    got_x, got_y = scaled.peek()
    assert_tree_equal(got_x, x * 10)
    np.testing.assert_array_equal(as_np(got_y), 1 - y)
    samples = ds.unbatch().apply_Y(lambda b: b + 5)
    assert samples.indexed
    assert int(as_np(samples[3][1])) == 6


def test_apply_x_needs_supervised_pairs() -> None:
    with pytest.raises(DataError, match=r"apply_X\(\) needs a supervised dataset.*supervised=True"):
        NumpyDataset(np.zeros((2, 2))).apply_X(abs)
    wrong = NumpyDataset([(1, 2, 3)], supervised=True).apply_Y(abs)
    with pytest.raises(DataError, match=r"\(x, y\) pairs. Got \(int, int, int\)"):
        wrong.peek()
    pairs = NumpyDataset([{"image": 1, "label": 2}]).map(
        lambda s: (s["image"], s["label"]), supervised=True
    )
    assert pairs.apply_X(lambda v: v + 1)[0] == (2, 2)


def test_take_and_skip(backend: str) -> None:
    data = np.arange(10)
    ds = make(data, backend).unbatch()
    assert [int(v) for v in ds.take(3)] == [0, 1, 2]
    assert [int(v) for v in ds.skip(7)] == [7, 8, 9]
    assert ds.take(3).indexed
    assert len(ds.skip(7)) == 3
    assert len(ds.take(50)) == 10
    assert len(ds.skip(50)) == 0
    assert int(ds.skip(2).take(3)[2]) == 4
    _, factory = counting(10)
    it = make(factory, backend)
    assert [int(as_np(v)[0]) for v in it.skip(2).take(3)] == [2, 3, 4]
    assert len(make(factory, backend, size=10).take(4)) == 4
    with pytest.raises(DataError, match=r"take\(\)'s count must be a non-negative integer. Got -1"):
        ds.take(-1)
    with pytest.raises(DataError, match=r"batch\(\)'s size must be a positive integer. Got 0"):
        ds.batch(0)


def test_shuffle_is_a_seeded_permutation(backend: str) -> None:
    data = np.arange(50)
    ds = make(data, backend).unbatch()
    first = [int(v) for v in ds.shuffle(seed=3)]
    assert sorted(first) == list(range(50))  # every sample, once
    assert first != list(range(50))
    assert [int(v) for v in ds.shuffle(seed=3)] == first  # the seed fixes the order
    assert [int(v) for v in ds.shuffle(seed=4)] != first
    shuffled = ds.shuffle(seed=3)
    assert shuffled.indexed
    assert len(shuffled) == 50
    assert [int(shuffled[i]) for i in range(50)] == first  # ds[i] agrees with iteration
    assert [int(v) for v in shuffled] == first  # every pass, the same order
    unseeded = ds.shuffle()
    assert [int(v) for v in unseeded] == [int(v) for v in unseeded]


def test_shuffle_of_batched_data_shuffles_samples(backend: str) -> None:
    x = np.arange(10)
    pairs = make((x, x * 10), backend, supervised=True)
    one = pairs.shuffle(seed=0)
    assert one.batched
    assert one.indexed
    assert len(one) == 1
    got_x, got_y = (as_np(v) for v in one.peek())
    assert sorted(got_x.tolist()) == list(range(10))
    np.testing.assert_array_equal(got_y, got_x * 10)  # pairs stay together
    in_fours = pairs.unbatch().batch(4).shuffle(seed=0)
    assert [len(as_np(b[0])) for b in in_fours] == [4, 4, 2]
    # after map() the batch sizes are unknown: the samples are read and shuffled in memory
    mapped = pairs.map(lambda e: e).shuffle(seed=0)
    assert not mapped.indexed
    assert as_np(mapped.peek()[0]).tolist() == got_x.tolist()


def test_buffered_shuffle_of_iterables(backend: str) -> None:
    _, factory = counting(30)
    ds = make(factory, backend)
    with pytest.raises(DataError, match=r"needs a buffer_size.*collect\(\) it first"):
        ds.shuffle(seed=1)
    shuffled = ds.shuffle(seed=1, buffer_size=8)
    order = [int(as_np(v)[0]) for v in shuffled]
    assert sorted(order) == list(range(30))
    assert order != list(range(30))
    assert [int(as_np(v)[0]) for v in shuffled] == order
    # a buffer of 1 keeps the order; batched data is shuffled by samples and re-batched
    assert [int(as_np(v)[0]) for v in ds.shuffle(seed=1, buffer_size=1)] == list(range(30))
    batches = list(ds.batch(8).shuffle(seed=2, buffer_size=5))
    assert [len(as_np(b)) for b in batches] == [8, 8, 8, 6]
    assert sorted(np.concatenate([as_np(b)[:, 0] for b in batches]).tolist()) == list(range(30))
    with pytest.raises(DataError, match="buffer_size must be a positive integer"):
        ds.shuffle(buffer_size=0)


def test_collect_materialises_in_the_backend(backend: str) -> None:
    seen: list[int] = []

    def square(v: Any) -> Any:
        seen.append(1)
        return v * v

    ds = NumpyDataset(np.arange(5)).unbatch().map(square)
    if backend == "torch":
        ds = ds.torch()  # type: ignore[assignment]
    kept = ds.collect()
    assert len(seen) == 5
    assert type(kept) is type(ds)
    assert kept.indexed
    assert len(kept) == 5
    assert isinstance(kept[0], leaf_type(backend))
    assert [int(v) for v in kept] == [0, 1, 4, 9, 16]
    assert [int(v) for v in kept] == [0, 1, 4, 9, 16]
    assert len(seen) == 5  # iterating the collected dataset computes nothing


def test_chains_are_lazy(backend: str) -> None:
    seen: list[int] = []

    def record(v: Any) -> Any:
        seen.append(1)
        return v

    ds = make(np.arange(100), backend).unbatch().map(record).shuffle(seed=0).batch(10)
    ds = ds.unbatch().map(record).take(5)
    assert seen == []  # building the chain computed nothing
    ds.peek()
    assert len(seen) == 2  # one sample, through both maps
    seen.clear()
    assert len(list(ds)) == 5
    assert len(seen) == 10  # five samples, through both maps: random access reads no more
    calls, factory = counting(1000)
    lazy = make(factory, backend).map(record).batch(4).take(2)
    seen.clear()
    assert calls == []
    assert seen == []
    assert len(list(lazy)) == 2
    assert calls == [1]
    assert len(seen) == 8


def double(v: Any) -> Any:
    return v * 2


def test_chains_pickle_for_spawned_dataloader_workers(backend: str) -> None:
    pairs = make((np.arange(10), np.arange(10) % 3), backend, supervised=True).unbatch()
    ds = pairs.shuffle(seed=0).skip(2).take(5).apply_X(double).map_el(double).batch(2)
    copy = pickle.loads(pickle.dumps(ds))
    assert type(copy) is type(ds)
    assert_tree_equal(list(copy), list(ds))


# -- conversions ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_torch_round_trip_keeps_values_and_dtypes(torch: Any, dtype: str) -> None:
    values = (np.arange(12) % 3).astype(dtype).reshape(6, 2)
    tree = {"v": values, "pair": (values[:, 0], np.arange(6, dtype=np.int8))}
    as_torch = NumpyDataset(tree).torch()
    assert isinstance(as_torch, TorchDataset)
    element = as_torch.peek()
    assert element["v"].dtype == getattr(torch, dtype)
    back = as_torch.numpy()
    assert isinstance(back, NumpyDataset)
    assert_tree_equal(back.peek(), tree)
    assert_tree_equal(back.unbatch()[5], {"v": values[5], "pair": (values[5, 0], np.int8(5))})


def test_conversions_copy_and_detach(torch: Any) -> None:
    data = np.zeros((2, 2), dtype=np.float32)
    tensor = NumpyDataset(data).torch().peek()
    tensor += 1  # a copy: the dataset's array is unchanged
    assert data.sum() == 0
    weights = torch.ones(3, 2, requires_grad=True)
    assert NumpyDataset(weights).peek().dtype == np.float32
    assert TorchDataset(weights * 2).numpy().peek().tolist() == [[2.0, 2.0]] * 3
    with pytest.raises(DataError, match="bfloat16 has no numpy equivalent"):
        TorchDataset(torch.ones(2, dtype=torch.bfloat16)).numpy().peek()
    with pytest.raises(DataError, match="torch cannot hold a numpy array of dtype <U1"):
        NumpyDataset(np.array(["a", "b"])).torch().peek()


# -- torch: DataLoader and wrapped torch datasets -------------------------------------------


@pytest.fixture(scope="module")
def torch_datasets(torch: Any) -> tuple[type, type]:
    class MapStyle(torch.utils.data.Dataset):  # type: ignore[misc]
        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int) -> tuple[Any, int]:
            return torch.full((2,), float(i)), i * i

    class Stream(torch.utils.data.IterableDataset):  # type: ignore[misc]
        def __iter__(self) -> Iterator[Any]:
            return (torch.tensor([i, -i]) for i in range(5))

    return MapStyle, Stream


def test_torch_result_works_with_a_dataloader(torch: Any) -> None:
    data = np.arange(20, dtype=np.float32).reshape(10, 2)
    labels = np.arange(10)
    ds = NumpyDataset((data, labels), supervised=True).torch().unbatch()
    assert isinstance(ds, TorchDataset)
    assert ds.indexed
    assert not isinstance(ds, torch.utils.data.IterableDataset)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True)
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    ys = torch.cat([y for _, y in batches])
    assert sorted(ys.tolist()) == list(range(10))
    for x, y in batches:
        assert torch.equal(x[:, 0], y.float() * 2)
    # a batched dataset: one element per batch, so no loader batching
    whole = list(torch.utils.data.DataLoader(NumpyDataset(data).torch(), batch_size=None))
    assert len(whole) == 1
    assert whole[0].shape == (10, 2)


def test_iterable_torch_result_is_an_iterable_dataset(torch: Any) -> None:
    _, factory = counting(10)
    ds = NumpyDataset(factory).map(lambda v: v + 1).torch()
    assert isinstance(ds, TorchDataset)
    assert not ds.indexed
    assert isinstance(ds, torch.utils.data.IterableDataset)
    assert isinstance(ds.map(lambda v: v), torch.utils.data.IterableDataset)  # chains keep it
    batches = list(torch.utils.data.DataLoader(ds, batch_size=4))
    assert [b[:, 0].tolist() for b in batches] == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10]]
    # a shuffled, indexed dataset is map-style again
    assert not isinstance(ds.collect().shuffle(seed=0), torch.utils.data.IterableDataset)


@pytest.mark.slow
def test_iterable_torch_dataset_is_split_among_workers(torch: Any) -> None:
    ds = NumpyDataset(lambda: iter(range(20))).torch()
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, num_workers=2, multiprocessing_context="fork"
    )
    assert sorted(int(v) for v in loader) == list(range(20))  # each element once


def test_torch_dataset_wraps_map_style_and_iterable(
    torch: Any, torch_datasets: tuple[type, type]
) -> None:
    map_style, stream = torch_datasets
    ds = TorchDataset(map_style(), supervised=True)
    assert (ds.indexed, ds.batched, ds.supervised, len(ds)) == (True, False, True, 6)
    x, y = ds[3]
    assert torch.equal(x, torch.full((2,), 3.0))
    assert y.item() == 9
    assert isinstance(y, torch.Tensor)
    xb, yb = ds.batch(4).peek()
    assert xb.shape == (4, 2)
    assert yb.tolist() == [0, 1, 4, 9]
    assert ds.apply_Y(lambda v: v + 1).numpy()[2][1] == 5
    it = TorchDataset(stream())
    assert not it.indexed
    assert isinstance(it, torch.utils.data.IterableDataset)
    with pytest.raises(TypeError, match="unknown"):
        len(it)
    assert [t.tolist() for t in it.take(2)] == [[0, 0], [1, -1]]
    assert len(TorchDataset(stream(), size=5)) == 5
    loader = torch.utils.data.DataLoader(map_style(), batch_size=4)
    from_loader = TorchDataset(loader, supervised=True)
    assert from_loader.batched
    assert len(from_loader) == 2
    assert [len(y) for _, y in from_loader.unbatch().batch(5)] == [5, 1]
    assert isinstance(TorchDataset(NumpyDataset(np.ones((2, 2)))).peek(), torch.Tensor)
    back = NumpyDataset(TorchDataset(map_style(), supervised=True))
    assert back.supervised
    assert back.indexed
    assert_tree_equal(back[2], (np.full(2, 2.0, dtype=np.float32), np.int64(4)))


def test_import_forgeml_data_imports_no_framework() -> None:
    code = (
        "import sys, numpy as np\n"
        "import forgeml.data, forgeml.data.transforms\n"
        "from forgeml.data import NumpyDataset\n"
        "from forgeml.data.transforms import ComposeTree, RandomCrop\n"
        "ds = NumpyDataset(np.zeros((4, 8, 8, 3))).unbatch().map(ComposeTree([RandomCrop(4)]))\n"
        "assert ds.peek().shape == (4, 4, 3)\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


# -- TensorFlow (imported once, for this module's last tests) --------------------------------


@pytest.fixture(scope="module")
def tf() -> Any:
    return pytest.importorskip("tensorflow")


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_tf_round_trip_keeps_values_and_dtypes(tf: Any, dtype: str) -> None:
    values = (np.arange(12) % 3).astype(dtype).reshape(6, 2)
    tree = {"v": values, "pair": (values[:, 0], np.arange(6, dtype=np.int64))}
    as_tf = NumpyDataset(tree).tf()
    assert isinstance(as_tf, TFDataset)
    assert as_tf.peek()["v"].dtype == tf.as_dtype(dtype)
    assert_tree_equal(as_tf.numpy().peek(), tree)
    assert_tree_equal(as_tf.unbatch().numpy()[4], {"v": values[4], "pair": (values[4, 0], 4)})


@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_tf_round_trip_keeps_values_and_dtypes(tf: Any, torch: Any, dtype: str) -> None:
    values = torch.from_numpy((np.arange(8) % 3).astype(dtype).reshape(4, 2))
    back = TorchDataset((values, values[:, 1]), supervised=True).tf().torch().peek()
    assert back[0].dtype == values.dtype
    assert torch.equal(back[0], values)
    assert torch.equal(back[1], values[:, 1])


def test_tf_dataset_wraps_tf_data(tf: Any, torch: Any) -> None:
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    y = np.arange(5, dtype=np.int32)
    source = tf.data.Dataset.from_tensor_slices((x, y))
    ds = TFDataset(source, supervised=True)
    assert (ds.indexed, ds.batched, ds.supervised, len(ds)) == (False, False, True, 5)
    assert ds.as_tf_dataset() is source
    assert_tree_equal(ds.numpy().batch(5).peek(), (x, y))
    assert_tree_equal(ds.torch().batch(5).peek(), (x, y))
    xb, yb = ds.apply_Y(lambda v: v * 2).batch(2).peek()
    assert xb.shape == (2, 2)
    assert yb.numpy().tolist() == [0, 2]
    batched = TFDataset(source.batch(2), batched=True, supervised=True)
    assert [len(b[1]) for b in batched] == [2, 2, 1]
    assert len(list(batched.unbatch())) == 5
    unknown = TFDataset(source.filter(lambda a, b: b > 1))
    with pytest.raises(TypeError, match="unknown"):
        len(unknown)
    assert len(TFDataset(source.filter(lambda a, b: b > 1), size=3)) == 3


def test_as_tf_dataset_builds_tf_data_from_any_chain(tf: Any) -> None:
    x = np.arange(14, dtype=np.float64).reshape(7, 2)
    chain = (
        NumpyDataset({"x": x, "y": np.arange(7)})
        .unbatch()
        .map_el(lambda s: {"x": s["x"] * 2, "y": s["y"]})
    )
    batches = chain.tf().batch(3).as_tf_dataset()
    assert isinstance(batches, tf.data.Dataset)
    assert batches.element_spec["x"].shape.as_list() == [None, 2]
    got = list(batches.as_numpy_iterator())
    assert [len(b["y"]) for b in got] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in got]), x * 2)
    pairs = NumpyDataset([(np.float32(1.0), 2), (np.float32(3.0), 4)], supervised=True)
    assert list(pairs.tf().as_tf_dataset().as_numpy_iterator()) == [(1.0, 2), (3.0, 4)]
