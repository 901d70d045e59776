"""Compute contexts: resource pools, real child processes, checks, transport and failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from forgeml import ContextChildError, ContextError, ContextIncompatibilityError, Object
from forgeml._core._env import nvidia_gpu_count
from forgeml._core._lazy import is_installed
from forgeml.context import (
    Allocation,
    ContextResourceError,
    ResourcePool,
    compute_context,
    context_check,
    current_context,
)

HERE = Path(__file__).parent
requires_gpu = pytest.mark.skipif(
    nvidia_gpu_count() == 0, reason="needs an NVIDIA GPU: none is visible here"
)


# ----------------------------------------------------------------- functions run in children
# (at module level: a compute context imports them by name in its own process)


@compute_context({"torch": {}})
def torch_only_checks_tf() -> None:
    context_check({"tf": {}})


@compute_context({"torch": {}, "tf": {}})
def describe_context() -> dict[str, Any]:
    context_check({"tf": {}})
    context_check({"torch": {}, "default": {}})
    allocation = current_context()
    assert allocation is not None
    return {
        "pid": os.getpid(),
        "frameworks": list(allocation.frameworks),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "affinity": sorted(os.sched_getaffinity(0)),
        "nested_pid": nested_same_process(),
    }


@compute_context({"default": {}})
def nested_same_process() -> int:
    return os.getpid()


@compute_context
def fails(value: int) -> None:
    helper_that_raises(value)


def helper_that_raises(value: int) -> None:
    raise ValueError(f"value {value} is out of range")


@compute_context
def echo(*args: Any, **kwargs: Any) -> Any:
    return {"args": args, "kwargs": kwargs, "pid": os.getpid()}


@compute_context({"torch": {}})
def train_in_child(model: Any, x: np.ndarray, y: np.ndarray, steps: int) -> tuple[Any, np.ndarray]:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    model.fit(x, y, steps=steps)
    return model, model.predict(x)


@compute_context({"default": {}})
def sleep_forever(pid_file: str) -> None:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(120)


@compute_context({"torch": {"gpu/0": 0.5}})
def torch_on_gpu_share() -> dict[str, Any]:
    import torch

    x = torch.ones(1024, device="cuda") * 2
    return {
        "fraction": float(torch.cuda.get_per_process_memory_fraction(0)),
        "devices": torch.cuda.device_count(),
        "sum": float(x.sum().item()),
    }


@compute_context({"tf": {"gpu/0": 0.5}})
def tf_on_gpu_share() -> dict[str, Any]:
    import tensorflow as tf

    return {"gpus": [d.name for d in tf.config.list_logical_devices("GPU")]}


class TinyTorchModel(Object):
    """A torch layer trained by plain gradient steps (an optimizer's first use costs seconds)."""

    def __init__(self, inputs: int, classes: int) -> None:
        import torch

        self.net = torch.nn.Linear(inputs, classes)
        self.steps = 0

    def fit(self, x: np.ndarray, y: np.ndarray, steps: int, lr: float = 0.5) -> None:
        import torch

        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        for _ in range(steps):
            self.net.zero_grad()
            torch.nn.functional.cross_entropy(self.net(xt), yt).backward()
            with torch.no_grad():
                for parameter in self.net.parameters():
                    parameter -= lr * parameter.grad
        self.steps += steps

    def predict(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            out: np.ndarray = self.net(torch.from_numpy(x)).numpy()
        return out


class Opaque:
    """A plain class: it crosses only pickled, with trust."""

    def __init__(self, value: int) -> None:
        self.value = value


# ----------------------------------------------------------------- the pool (bookkeeping)


def test_two_half_grants_on_one_gpu_release_back_to_one() -> None:
    pool = ResourcePool(cpus=2, gpus={0: 1.0})
    assert pool.capacity == {"cpu/0": 1.0, "cpu/1": 1.0, "gpu/0": 1.0}
    first = pool.request({"torch": {"gpu/0": 0.5}})
    second = pool.request({"tf": {"gpu/0": 0.5}})
    assert first.satisfies({"torch": {"gpu/0": 0.5}})
    assert second.satisfies({"tensorflow": {"gpu/0": 0.5}})
    assert pool.available["gpu/0"] == 0.0
    with pytest.raises(ContextResourceError, match=r"only 0 of gpu/0 is free") as info:
        pool.request({"torch": {"gpu/0": 0.5}})
    assert "Release an allocation" in str(info.value)
    pool.release(first)
    pool.release(second)
    assert pool.available == {"cpu/0": 1.0, "cpu/1": 1.0, "gpu/0": 1.0}
    assert pool.allocations == []
    with pytest.raises(ContextError, match="released already"):
        pool.release(first)


def test_shares_add_up_exactly_and_counts_take_whole_devices() -> None:
    pool = ResourcePool(cpus=[0, 1, 2], gpus=2)
    thirds = [pool.request({"torch": {"gpu/1": 0.1}}) for _ in range(10)]
    assert pool.available["gpu/1"] == 0.0
    for allocation in thirds:
        pool.release(allocation)
    assert pool.available["gpu/1"] == 1.0
    busy = pool.request({"torch": {"gpu/0": 0.25}})
    whole = pool.request({"torch": {"num_gpus": 1, "num_cpus": 2}})
    assert whole.resources["torch"] == {"gpu/1": 1.0, "cpu/0": 1.0, "cpu/1": 1.0}
    assert whole.gpus == {1: 1.0}
    assert sorted(whole.cpus) == [0, 1]
    with pytest.raises(ContextResourceError, match=r"num_gpus=1 to torch: 0 of the pool's 2"):
        pool.request({"torch": {"num_gpus": 1}})
    pool.release(busy)
    pool.release(whole)
    assert set(pool.available.values()) == {1.0}


def test_requests_that_can_never_be_met_fail_at_once_with_what_exists() -> None:
    pool = ResourcePool(cpus=1, gpus=0)
    with pytest.raises(ContextResourceError, match=r"no gpu/0.*No GPU is visible"):
        pool.request({"torch": {"gpu/0": 0.5}}, timeout=None)  # never waits for the impossible
    with pytest.raises(ContextResourceError, match="more of cpu/0 than the pool has"):
        pool.request({"torch": {"cpu/0": 0.75}, "tf": {"cpu/0": 0.5}})
    held = pool.request({"default": {"cpu/0": 1.0}})
    started = time.monotonic()
    with pytest.raises(ContextResourceError, match="only 0 of cpu/0 is free"):
        pool.request({"default": {"cpu/0": 1.0}}, timeout=0.2)
    assert time.monotonic() - started >= 0.2
    pool.release(held)


def test_a_mixed_request_that_can_never_be_met_fails_at_once() -> None:
    """Devices one part of a request takes are not there for another part: a request
    that even an empty pool could not grant fails at once, also with timeout=None."""
    pool = ResourcePool(cpus=1, gpus=1)
    impossible = [
        {"torch": {"gpu/0": 0.5}, "tf": {"num_gpus": 1}},
        {"tf": {"num_gpus": 1}, "torch": {"gpu/0": 0.5}},
        {"torch": {"num_gpus": 1}, "tf": {"num_gpus": 1}},
        {"torch": {"gpu/0": 0.25, "num_gpus": 1}},
        {"torch": {"num_cpus": 1}, "default": {"cpu/0": 0.5}},
    ]
    for request in impossible:
        outcome = _request_in_thread(pool, request)
        assert isinstance(outcome, ContextResourceError), request
        assert "can never be granted" in str(outcome) or "more of" in str(outcome)
    assert "other parts of this request already take gpu/0" in str(
        _error(pool, {"torch": {"gpu/0": 0.5}, "tf": {"num_gpus": 1}})
    )
    assert pool.allocations == []
    # counts are planned after named shares: torch takes the GPU tf does not name
    two = ResourcePool(cpus=1, gpus=2)
    granted = two.request({"torch": {"num_gpus": 1}, "tf": {"gpu/0": 0.5}})
    assert granted.resources == {"torch": {"gpu/1": 1.0}, "tensorflow": {"gpu/0": 0.5}}
    # possible later: it waits (here until its timeout), then says what is free
    with pytest.raises(ContextResourceError, match="0 of the pool's 2 gpus are wholly free"):
        two.request({"torch": {"num_gpus": 1}}, timeout=0.1)
    two.release(granted)
    assert two.request({"torch": {"num_gpus": 2}}).gpus == {0: 1.0, 1: 1.0}


def _request_in_thread(
    pool: ResourcePool, request: dict[str, dict[str, float]]
) -> BaseException | Allocation:
    """What ``pool.request(request, timeout=None)`` gives, failing if it waits 5 s."""
    outcome: list[BaseException | Allocation] = []

    def ask() -> None:
        try:
            outcome.append(pool.request(request, timeout=None))
        except ContextResourceError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), f"{request} waits for ever"
    return outcome[0]


def _error(pool: ResourcePool, request: dict[str, dict[str, float]]) -> ContextResourceError:
    with pytest.raises(ContextResourceError) as info:
        pool.request(request, timeout=None)
    return info.value


def test_malformed_requests_say_what_to_write() -> None:
    pool = ResourcePool(cpus=1, gpus=1)
    with pytest.raises(ContextError, match=r"Unknown framework 'pytroch'.*Did you mean 'pytorch'"):
        pool.request({"pytroch": {}})
    with pytest.raises(ContextError, match=r"share of 'gpu/0' for 'torch' must be in \(0, 1\]"):
        pool.request({"torch": {"gpu/0": 1.5}})
    with pytest.raises(ContextError, match=r"Unknown resource 'gpus'.*Did you mean 'num_gpus'"):
        pool.request({"torch": {"gpus": 1}})
    with pytest.raises(ContextError, match=r"non-negative integer\. Got 0\.5"):
        pool.request({"torch": {"num_gpus": 0.5}})
    with pytest.raises(ContextError, match="must be a dict"):
        compute_context(["torch"])  # type: ignore[call-overload]


def test_allocation_checks_frameworks_and_shares() -> None:
    allocation = Allocation({"torch": {"gpu/0": 0.5, "cpu/1": 1.0}})
    assert allocation.satisfies({"pytorch": {"gpu/0": 0.25}, "default": {}})
    assert allocation.satisfies({"torch": {"num_gpus": 1, "num_cpus": 1}})
    with pytest.raises(ContextIncompatibilityError, match="tensorflow is not part of it"):
        allocation.check({"tf": {}})
    with pytest.raises(ContextIncompatibilityError, match=r"gpu/0: 0.75, it has 0.5"):
        allocation.check({"torch": {"gpu/0": 0.75}})


def test_context_check_outside_a_context_raises() -> None:
    assert current_context() is None
    with pytest.raises(ContextError, match="No compute context is active"):
        context_check({"torch": {}})


# ----------------------------------------------------------------- real child processes


def test_tf_check_fails_in_a_torch_only_context() -> None:
    with pytest.raises(ContextIncompatibilityError, match="tensorflow is not part of it") as info:
        torch_only_checks_tf()
    error = info.value
    assert "torch_only_checks_tf" in error.child_traceback  # type: ignore[attr-defined]
    assert error.child_type == "forgeml.ContextIncompatibilityError"  # type: ignore[attr-defined]


def test_context_is_pinned_and_released(tmp_path: Path) -> None:
    pool = ResourcePool(cpus=[0], gpus=0)
    info = describe_context(call_pool=pool, call_context_reqs={"torch": {"num_cpus": 1}, "tf": {}})
    assert info["pid"] != os.getpid()
    assert info["frameworks"] == ["tensorflow", "torch"]
    assert info["cuda_visible_devices"] == ""  # no GPU granted: none visible
    assert info["affinity"] == [0]
    assert info["nested_pid"] == info["pid"]  # a satisfied nested context runs in place
    assert pool.available == {"cpu/0": 1.0}


@pytest.mark.slow
def test_a_torch_object_trained_in_a_child_comes_back_through_an_archive() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 64)).astype(np.float32)
    y = rng.integers(0, 10, size=200)
    model = TinyTorchModel(64, 10)
    before = model.predict(x)
    trained, child_predictions = train_in_child(model, x, y, 20)
    assert isinstance(trained, TinyTorchModel)
    assert trained is not model
    assert trained.dry_id == model.dry_id
    np.testing.assert_array_equal(trained.predict(x), child_predictions)  # bit for bit
    np.testing.assert_array_equal(model.predict(x), before)  # the parent's copy is untouched
    assert (child_predictions.argmax(1) == y).mean() > (before.argmax(1) == y).mean()


def test_exceptions_come_back_with_the_child_traceback() -> None:
    with pytest.raises(ContextChildError, match=r"fails raised builtins\.ValueError") as info:
        fails(7)
    error = info.value
    assert error.child_type == "builtins.ValueError"
    assert "value 7 is out of range" in str(error)
    assert "in helper_that_raises" in error.child_traceback
    assert 'raise ValueError(f"value {value} is out of range")' in error.child_traceback
    assert any("compute context process (pid" in note for note in error.__notes__)


def test_plain_data_and_arrays_cross_as_they_are() -> None:
    big = np.arange(100_000, dtype=np.float32).reshape(1000, 100)
    small = np.eye(3, dtype=np.int16)
    values = ({"a": [1, 2.5, None, True]}, (1, "x"), {3, 4}, b"raw", Path("p/q"), small)
    out = echo(*values, big=big, scalar=np.float64(1.5))
    assert out["args"] == (*values[:5], out["args"][5])
    np.testing.assert_array_equal(out["args"][5], small)
    assert out["args"][5].dtype == np.int16
    np.testing.assert_array_equal(out["kwargs"]["big"], big)
    assert out["kwargs"]["scalar"] == 1.5


def test_unsafe_values_are_refused_unless_trusted() -> None:
    with pytest.raises(ContextError, match=r"Cannot pass an argument of echo of type .*Opaque"):
        echo(Opaque(1))
    with pytest.raises(ContextError, match="pass trust=True"):
        echo(open)  # a function: not data
    out = echo(Opaque(2), call_trust=True)
    assert isinstance(out["args"][0], Opaque)
    assert out["args"][0].value == 2


def test_reserved_call_names_are_refused_at_decoration() -> None:
    def train(data: int, call_timeout: float = 1.0) -> None:
        pass

    with pytest.raises(ContextError, match=r"train has the parameter\(s\) call_timeout.*Rename"):
        compute_context({"default": {}})(train)
    with pytest.raises(ContextError, match="call_pool"):
        compute_context(lambda call_pool: None)

    def flexible(**kwargs: Any) -> None:  # accepted: it just never receives call_*
        pass

    assert callable(compute_context(flexible))


@pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs a process that may run on 2 CPUs or more",
)
def test_cpu_indices_are_positions_in_the_affinity() -> None:
    """Pool cpu/i is the i-th CPU this process may run on, as gpu/i is the i-th visible GPU."""
    from forgeml.context._context import _cpu_ids

    before = os.sched_getaffinity(0)
    last = max(before)
    os.sched_setaffinity(0, {last})
    try:
        assert ResourcePool().capacity.keys() == {"cpu/0"}  # one CPU, whatever its OS id
        assert _cpu_ids(Allocation({"torch": {"cpu/0": 1.0}})) == [last]
        info = describe_context(
            call_pool=ResourcePool(cpus=1, gpus=0),
            call_context_reqs={"torch": {"num_cpus": 1}, "tf": {}},
        )
        assert info["affinity"] == [last]
        with pytest.warns(RuntimeWarning, match=r"granted cpu/1, cpu/2.*pinned to OS CPUs"):
            assert _cpu_ids(
                Allocation({"torch": {"num_cpus": 3, "cpu/0": 1, "cpu/1": 1, "cpu/2": 1}})
            ) == [last]
        with pytest.warns(RuntimeWarning, match=r"granted cpu/5.*its CPUs are not pinned"):
            assert _cpu_ids(Allocation({"default": {"cpu/5": 1.0}})) == []
    finally:
        os.sched_setaffinity(0, before)


def test_functions_must_be_importable() -> None:
    @compute_context
    def local() -> None:
        pass

    with pytest.raises(ContextError, match="must be defined at the top level"):
        local()


@pytest.mark.skipif(is_installed("tensorrt"), reason="TensorRT is installed here")
def test_missing_frameworks_are_named_with_the_install_hint() -> None:
    with pytest.raises(ContextError, match=r"asks for tensorrt, which is not installed.*HINT"):
        echo(call_context_reqs={"tensorrt": {}})


@pytest.mark.slow
def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys
                sys.path.insert(0, {str(HERE)!r})
                from test_context import sleep_forever
                sleep_forever({str(pid_file)!r})
                """
            ),
        ]
    )
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the context child did not start"
            assert parent.poll() is None, "the parent ended early"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while _alive(child):
            assert time.monotonic() < deadline, f"child {child} outlived its parent"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has ended (no one reaped it yet)


# ----------------------------------------------------------------- on a GPU


@pytest.mark.gpu
@requires_gpu
def test_two_torch_children_share_one_gpu() -> None:
    from concurrent.futures import ThreadPoolExecutor

    pool = ResourcePool(gpus={0: 1.0})
    with ThreadPoolExecutor(2) as threads:  # both hold half of gpu/0 at the same time
        results = list(threads.map(lambda _: torch_on_gpu_share(call_pool=pool), range(2)))
    assert results == [{"fraction": 0.5, "devices": 1, "sum": 2048.0}] * 2
    assert pool.available["gpu/0"] == 1.0


@pytest.mark.gpu
@requires_gpu
def test_tensorflow_sees_only_its_gpu() -> None:
    assert tf_on_gpu_share(call_pool=ResourcePool(gpus={0: 1.0}))["gpus"] == ["/device:GPU:0"]
