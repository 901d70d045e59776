"""Objects that remember how they were built, saved to safe archives.

:class:`Object` records its constructor arguments and an id; :class:`ObjectDef`
builds it again; :func:`save_object` / :func:`load_object` write and read a zip
archive of the definition plus framework state in safe formats (never pickle).
:class:`Repo` keeps many archives in a directory with a SQLite index that
:class:`Selector` queries without loading them.
"""

from forgeml._core._errors import ObjectError
from forgeml.objects._archive import (
    FORMAT_VERSION,
    Archive,
    load_object,
    read_manifest,
    save_object,
)
from forgeml.objects._codec import class_path, import_class
from forgeml.objects._object import Object, ObjectDef
from forgeml.objects._repo import Repo, RepoEntry
from forgeml.objects._selector import Selector

__all__ = [
    "FORMAT_VERSION",
    "Archive",
    "Object",
    "ObjectDef",
    "ObjectError",
    "Repo",
    "RepoEntry",
    "Selector",
    "class_path",
    "import_class",
    "load_object",
    "read_manifest",
    "save_object",
]
