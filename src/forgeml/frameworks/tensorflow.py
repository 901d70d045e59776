"""TensorFlow/Keras adapter: seeding and determinism."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import tensorflow as tf


class TensorFlowAdapter:
    name = "tensorflow"
    module = "tensorflow"

    def seed(self, seed: int, deterministic: bool = False) -> None:
        tf.keras.utils.set_random_seed(seed)
        if deterministic:
            os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
            tf.config.experimental.enable_op_determinism()

    # -- forgeml.data: tensors <-> numpy and tf.data datasets ----------------------------------
    # (numpy arrays in and out; forgeml.data calls these through forgeml.data._backend)

    def data_is_tensor(self, obj: object) -> bool:
        return isinstance(obj, tf.Tensor | tf.Variable)

    def data_to_numpy(self, tensor: Any) -> Any:
        """The values of an eager tensor as a numpy array of the same dtype."""
        return tensor.numpy()

    def data_from_numpy(self, array: Any) -> Any:
        """An eager tensor with the values and dtype of a numpy array or scalar."""
        return tf.convert_to_tensor(array)

    def data_stack(self, tensors: list[Any]) -> Any:
        return tf.stack(tensors)

    def data_is_dataset(self, obj: object) -> bool:
        return isinstance(obj, tf.data.Dataset)

    def data_cardinality(self, dataset: Any) -> int | None:
        """The number of elements of a tf.data.Dataset, or None when infinite or unknown."""
        size = int(dataset.cardinality())
        return size if size >= 0 else None

    def data_from_generator(
        self, factory: Callable[[], Iterator[Any]], example: Any, batched: bool
    ) -> Any:
        """A tf.data.Dataset over ``factory()``'s elements, typed like ``example``.

        ``example`` is a nested structure (dicts and tuples) of numpy arrays;
        every element must have its dtypes and shapes, except the first
        dimension when ``batched`` (the last batch may be smaller).
        """

        def spec(array: Any) -> Any:
            shape = list(array.shape)
            if batched and shape:
                shape[0] = None
            return tf.TensorSpec(shape=shape, dtype=tf.as_dtype(array.dtype))

        signature = tf.nest.map_structure(spec, example)
        return tf.data.Dataset.from_generator(factory, output_signature=signature)

    # -- end of forgeml.data ------------------------------------------------------------------

    # -- forgeml.eval: inference (threads) ----------------------------------------------------
    # (Keras models predict through the keras adapter; TensorFlow owns the thread pools)

    def inference_info(self) -> dict[str, str]:
        return {"framework": "tensorflow", "version": str(tf.__version__)}

    def set_threads(self, threads: int) -> int | None:
        """TensorFlow's intra-op threads; None when its runtime has started (they are fixed)."""
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:  # "cannot be modified after initialization"
            return None
        return threads

    def thread_state(self) -> Callable[[], None]:
        """A function that sets TensorFlow's intra-op threads back to what they are now
        (a no-op once its runtime has started: they are fixed from then on)."""
        threads = int(tf.config.threading.get_intra_op_parallelism_threads())

        def restore() -> None:
            with contextlib.suppress(RuntimeError):
                tf.config.threading.set_intra_op_parallelism_threads(threads)

        return restore

    # -- end of forgeml.eval ----------------------------------------------------------------

    # -- forgeml.context: limits in a compute context's process --------------------------------

    def context_configure(self, gpus: dict[int, float], memory_mb: dict[int, int]) -> None:
        """Show TensorFlow only the GPUs in ``gpus``, each limited to ``memory_mb`` MiB.

        ``gpus`` maps a visible GPU's index (as TensorFlow numbers them) to the share
        TensorFlow may use; the others are hidden from it. A device granted whole,
        or whose size is unknown (no entry in ``memory_mb``), grows its memory as
        needed instead of taking it all. Must run before TensorFlow starts its
        runtime (its first op); raises ``RuntimeError`` after that.
        """
        physical = tf.config.list_physical_devices("GPU")
        visible = [device for index, device in enumerate(physical) if gpus.get(index, 0.0) > 0]
        tf.config.set_visible_devices(visible, "GPU")
        for index, device in enumerate(physical):
            share = gpus.get(index, 0.0)
            if share <= 0:
                continue
            if share < 1 and index in memory_mb:
                limit = max(1, int(memory_mb[index] * share))
                tf.config.set_logical_device_configuration(
                    device, [tf.config.LogicalDeviceConfiguration(memory_limit=limit)]
                )
            else:
                tf.config.experimental.set_memory_growth(device, True)

    def context_gpus(self) -> list[str]:
        """The names of the GPUs TensorFlow uses in this process (``/device:GPU:0`` ...)."""
        return [device.name for device in tf.config.list_logical_devices("GPU")]

    # -- end of forgeml.context ---------------------------------------------------------------


adapter = TensorFlowAdapter()
