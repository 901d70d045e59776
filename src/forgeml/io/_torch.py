"""The ``.pt``/``.pth`` format: ``torch.save``, and ``torch.load`` with weights only."""

from __future__ import annotations

import io
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from forgeml.io._format import Format

if TYPE_CHECKING:
    from forgeml.frameworks.torch import TorchAdapter


def torch_adapter() -> TorchAdapter:
    """The torch adapter (imports torch; says how to install it when missing)."""
    from forgeml.frameworks import get_adapter

    return cast("TorchAdapter", get_adapter("torch"))


class TorchFormat(Format):
    """Anything ``torch.save`` writes; loaded with ``weights_only=True`` unless ``trust=True``.

    Weights-only loading admits tensors, plain containers and numbers, and
    refuses other objects with a :class:`~forgeml.FormatError`.
    """

    name = "pt"
    suffixes = (".pt", ".pth")
    load_options = ("trust", "map_location")

    def write(self, obj: Any, f: IO[bytes]) -> None:
        torch_adapter().save_pt(obj, f)

    def read(
        self, path: Path, *, trust: bool = False, map_location: Any = None
    ) -> tuple[Any, dict[str, Any]]:
        return torch_adapter().load_pt(path, trust=trust, map_location=map_location), {}

    def loads(
        self, data: bytes, *, trust: bool = False, map_location: Any = None
    ) -> tuple[Any, dict[str, Any]]:
        source = io.BytesIO(data)
        return torch_adapter().load_pt(source, trust=trust, map_location=map_location), {}
