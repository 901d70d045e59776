"""Save and load files by suffix, atomically and with a SHA-256 sidecar.

``save(obj, "model.safetensors")`` picks the format from the suffix:

==================  ============================================================
``.safetensors``    named numpy arrays or torch tensors (the default for weights)
``.h5``/``.hdf5``   nested mappings of arrays and scalars, Zstd-compressed
``.npz``/``.npy``   named arrays / one array (never pickled)
``.json``/``.yaml``  plain data (YAML through forgeml.config's safe loader)
``.pt``/``.pth``    ``torch.save``; loaded weights-only unless ``trust=True``
``.pkl``            pickle, only with ``trust=True``
==================  ============================================================

Every ``save`` writes a temp file in the same directory, fsyncs it and renames
it over the target, then writes ``<file>.sha256`` (``sha256sum`` format);
``load(..., verify=True)`` checks it. ``save_bytes``/``load_bytes`` do the same
conversions in memory. Formats are handlers registered in :data:`FORMATS`;
third parties add theirs with :func:`register_format` or the entry-point group
``forgeml.formats``. Importing this package imports no array library:
h5py, safetensors, numpy and torch load when a format needs them.
"""

from forgeml._core._errors import FormatError
from forgeml._core._hashing import sha256_file
from forgeml.io._api import load, load_bytes, save, save_bytes
from forgeml.io._checksum import verify_checksum, write_checksum
from forgeml.io._format import FORMATS, Format, formats, register_format

__all__ = [
    "FORMATS",
    "Format",
    "FormatError",
    "formats",
    "load",
    "load_bytes",
    "register_format",
    "save",
    "save_bytes",
    "sha256_file",
    "verify_checksum",
    "write_checksum",
]
