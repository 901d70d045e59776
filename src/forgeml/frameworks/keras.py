"""Keras 3 adapter (any backend): seeding, and weights saved as ``.weights.h5``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from forgeml._core._errors import ObjectError
from forgeml._core._files import atomic_path
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


def _require_built(obj: Any, action: str) -> None:
    if not obj.built:
        raise ObjectError(
            f"Cannot {action} the Keras {type(obj).__qualname__} '{obj.name}': it is not built, "
            f"so it has no weights yet.\nHINT: build it in __init__, e.g. start a Sequential "
            f"with keras.Input(shape=...), give a functional model its keras.Input, or call "
            f"model.build(input_shape)."
        )


adapter = KerasAdapter()
