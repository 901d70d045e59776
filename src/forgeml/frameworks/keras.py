"""Keras 3 adapter (any backend): seeding, and weights saved as ``.weights.h5``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from forgeml._core._errors import ObjectError
from forgeml._core._files import atomic_path, atomic_write_bytes
from forgeml._core._lazy import is_installed
from forgeml.frameworks._state import check_format, state_file

if "KERAS_BACKEND" not in os.environ and not is_installed("tensorflow") and is_installed("torch"):
    os.environ["KERAS_BACKEND"] = "torch"  # Keras defaults to TensorFlow, which is not here

import keras

FORMAT = "keras.weights.h5"
_SUFFIX = ".weights.h5"


class KerasAdapter:
    name = "keras"
    module = "keras"

    def seed(self, seed: int, deterministic: bool = False) -> None:
        keras.utils.set_random_seed(seed)

    def owns(self, obj: object) -> bool:
        """True for Keras layers, models included (``keras.Layer``)."""
        return isinstance(obj, keras.Layer)

    def save_state(self, obj: Any, directory: Path, stem: str) -> dict[str, Any]:
        """Write the weights of a built layer or model to ``<stem>.weights.h5`` (HDF5, no code)."""
        _require_built(obj, "save")
        name = f"{stem}{_SUFFIX}"
        with atomic_path(Path(directory) / name) as tmp:
            keras.saving.save_weights(obj, str(tmp))
        return {
            "format": FORMAT,
            "files": [name],
            "class": f"{type(obj).__module__}:{type(obj).__qualname__}",
            "weights": len(obj.weights),
            "keras_version": keras.__version__,
            "backend": keras.backend.backend(),
        }

    def load_state(
        self, obj: Any, directory: Path, info: dict[str, Any], *, trust: bool = False
    ) -> Any:
        """Load the weights into ``obj`` in place (same architecture, built); returns ``obj``.

        ``trust`` changes nothing: a ``.weights.h5`` file holds only arrays.
        """
        check_format("keras", info, FORMAT)
        if not isinstance(obj, keras.Layer):
            raise ObjectError(
                f"Keras weights load into a Keras layer or model. Got {type(obj).__qualname__}."
            )
        _require_built(obj, "load weights into")
        optimizer = getattr(obj, "optimizer", None)
        if optimizer is not None and not optimizer.built:
            # A compiled model saves its optimizer's variables too; build the fresh
            # optimizer so they are restored and training resumes where it stopped.
            optimizer.build(obj.trainable_variables)
        path = state_file("keras", Path(directory), info, _SUFFIX)
        try:
            keras.saving.load_weights(obj, str(path))
        except (ValueError, KeyError, OSError) as exc:
            raise ObjectError(
                f"The weights in {path} do not fit {type(obj).__qualname__} (saved from "
                f"{info.get('class', '?')}): {exc}\nHINT: build the model with the same "
                f"architecture and constructor arguments as the one that was saved."
            ) from exc
        return obj

    # -- forgeml.eval: inference (devices, threads, predict on a batch) ----------------------
    # (numpy batches in and out; forgeml.eval's tensorflow agent calls these)

    def inference_info(self) -> dict[str, str]:
        backend = str(keras.backend.backend())
        info = {"framework": "keras", "version": str(keras.__version__), "backend": backend}
        module = sys.modules.get(backend)
        if module is not None and hasattr(module, "__version__"):
            info["backend_version"] = str(module.__version__)
        return info

    def devices(self) -> list[str]:
        try:
            gpus = keras.distribution.list_devices("gpu")
        except (RuntimeError, ValueError):  # a backend without GPU support
            gpus = []
        return ["cpu"] + [f"cuda:{i}" for i in range(len(gpus))]

    def is_model(self, obj: object) -> bool:
        """True for Keras layers and models (``keras.Layer``)."""
        return isinstance(obj, keras.Layer)

    def place(
        self, model: Any, device: str, *, threads: int | None = None
    ) -> tuple[Any, int | None]:
        """The model itself (it runs under ``keras.device`` in :meth:`predict`).

        ``threads`` sets the backend's intra-op threads: TensorFlow accepts them only
        before its runtime starts (else the threads in effect are None), torch any time.
        """
        if threads is None:
            return model, None
        backend = keras.backend.backend()
        if backend in ("tensorflow", "torch"):
            from forgeml.frameworks import get_adapter

            adapter: Any = get_adapter(backend)
            return model, adapter.set_threads(threads)
        return model, None

    def thread_state(self) -> Callable[[], None]:
        """A function that sets the backend's intra-op threads back to what they are now."""
        backend = keras.backend.backend()
        if backend in ("tensorflow", "torch"):
            from forgeml.frameworks import get_adapter

            adapter: Any = get_adapter(backend)
            restore: Callable[[], None] = adapter.thread_state()
            return restore
        return lambda: None

    def predict(self, model: Any, batch: Any, device: str) -> Any:
        """``model.predict_on_batch`` (compiled; a plain layer: ``layer(batch,
        training=False)``) under ``keras.device``; the first output when there are several."""
        with keras.device(_keras_device(device)):
            if isinstance(model, keras.Model):
                out = model.predict_on_batch(batch)
            else:
                out = model(batch, training=False)
        if isinstance(out, dict):
            out = next(iter(out.values()))
        elif isinstance(out, list | tuple):
            out = out[0]
        return keras.ops.convert_to_numpy(out)

    def synchronize(self, device: str) -> None:
        return None  # predictions are numpy arrays: the device has finished

    # -- end of forgeml.eval ----------------------------------------------------------------

    # -- forgeml.export: ONNX with tf2onnx ----------------------------------------------------

    def export_unavailable(self) -> str | None:
        """Why Keras models cannot be exported to ONNX here, or None."""
        if not is_installed("tensorflow"):
            return "tensorflow is not installed. HINT: pip install 'forgeml[tensorflow,onnx]'"
        if not is_installed("tf2onnx"):
            return "tf2onnx is not installed. HINT: pip install 'forgeml[onnx]' (or tf2onnx)"
        backend = keras.backend.backend()
        if backend != "tensorflow":
            return (
                f"tf2onnx converts TensorFlow graphs, and this Keras runs on the {backend} "
                f"backend. HINT: set KERAS_BACKEND=tensorflow before forgeml imports Keras."
            )
        return None

    def export_onnx(
        self,
        model: Any,
        sample: Any,
        path: Path,
        *,
        opset: int = 17,
        dynamic_batch: bool = True,
        input_name: str = "input",
    ) -> dict[str, Any]:
        """Write a Keras model to ``path`` as ONNX with tf2onnx (TensorFlow backend only).

        The model is traced as a ``tf.function`` over a float32 input shaped like
        ``sample`` (batch axis left open when ``dynamic_batch``), in inference mode:
        tf2onnx's own Keras entry point does not read Keras 3 models.
        """
        reason = self.export_unavailable()
        if reason is not None:
            raise ObjectError(f"Cannot export the Keras model to ONNX: {reason}")
        import tensorflow as tf
        import tf2onnx

        batch = None if dynamic_batch else int(sample.shape[0])
        spec = [tf.TensorSpec((batch, *map(int, sample.shape[1:])), tf.float32, name=input_name)]

        @tf.function(input_signature=spec)  # type: ignore[untyped-decorator]
        def forward(x: Any) -> Any:
            return model(x, training=False)

        onnx_model, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
        atomic_write_bytes(path, onnx_model.SerializeToString())
        return {"opset": opset, "tf2onnx": str(tf2onnx.__version__), "tensorflow": tf.__version__}

    # -- end of forgeml.export --------------------------------------------------------------


def _require_built(obj: Any, action: str) -> None:
    if not obj.built:
        raise ObjectError(
            f"Cannot {action} the Keras {type(obj).__qualname__} '{obj.name}': it is not built, "
            f"so it has no weights yet.\nHINT: build it in __init__, e.g. start a Sequential "
            f"with keras.Input(shape=...), give a functional model its keras.Input, or call "
            f"model.build(input_shape)."
        )


def _keras_device(device: str) -> str:
    """forgeml's device names (``cpu``, ``cuda:N``) as Keras names them (``cpu:0``, ``gpu:N``)."""
    if device == "cpu":
        return "cpu:0"
    return "gpu:" + device.partition(":")[2] if device.startswith("cuda:") else device


adapter = KerasAdapter()
