"""Checkpoints from anywhere, through a sha256-checked cache.

``download(url)`` fetches ``https://``, ``s3://`` (any fsspec URL),
``gdrive://FILE_ID``, ``github://OWNER/REPO@TAG/ASSET`` and local files into
the cache of :func:`forgeml.store.localize_cached` and returns the local path;
``load_state_dict_from_url(url)`` does that and loads the tensors weights-only
(``.safetensors`` or torch files), like ``torch.hub``. Importing this package
imports no ML framework.
"""

from forgeml._core._errors import HubError
from forgeml.hub._download import download
from forgeml.hub._load import load_state_dict_from_url
from forgeml.hub._urls import hash_prefix, resolve_url

__all__ = [
    "HubError",
    "download",
    "hash_prefix",
    "load_state_dict_from_url",
    "resolve_url",
]
