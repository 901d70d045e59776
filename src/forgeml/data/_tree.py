"""Nested samples: dicts, tuples and lists of leaves (arrays, tensors, numbers, strings).

A *path* names one node of a sample: ``"image"`` (a dict key), ``1`` (a tuple
or list position), or several parts joined by ``/`` (``"inputs/image"``,
``"0/mask"``). The empty path ``""`` is the sample itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from forgeml._core._errors import DataError

#: One part of a path: a dict key or a sequence position.
Part = str | int
#: A path as parsed: the parts from the root to the node.
Parts = tuple[Part, ...]


def is_container(node: object) -> bool:
    return isinstance(node, dict | tuple | list)


def _rebuild(template: Any, children: Sequence[Any]) -> Any:
    """A container like ``template`` (tuple, namedtuple or list) holding ``children``."""
    if isinstance(template, list):
        return list(children)
    if hasattr(template, "_fields"):  # a namedtuple
        return type(template)(*children)
    return tuple(children)


def tree_map(fn: Callable[[Any], Any], tree: Any) -> Any:
    """``tree`` with every leaf replaced by ``fn(leaf)``."""
    if isinstance(tree, dict):
        return {key: tree_map(fn, value) for key, value in tree.items()}
    if isinstance(tree, tuple | list):
        return _rebuild(tree, [tree_map(fn, value) for value in tree])
    return fn(tree)


def tree_leaves(tree: Any) -> list[Any]:
    """The leaves of ``tree`` in order (dicts in insertion order)."""
    return [leaf for _, leaf in tree_items(tree)]


def tree_items(tree: Any, prefix: Parts = ()) -> Iterator[tuple[Parts, Any]]:
    """``(path parts, leaf)`` for every leaf of ``tree``."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from tree_items(value, (*prefix, key))
    elif isinstance(tree, tuple | list):
        for index, value in enumerate(tree):
            yield from tree_items(value, (*prefix, index))
    else:
        yield prefix, tree


def tree_zip_map(fn: Callable[[list[Any]], Any], trees: Sequence[Any]) -> Any:
    """One tree of ``fn([leaf of each tree])``; every tree must have the first one's structure."""
    first = trees[0]
    if isinstance(first, dict):
        for other in trees[1:]:
            if not isinstance(other, dict) or other.keys() != first.keys():
                raise _mismatch(first, other)
        return {key: tree_zip_map(fn, [t[key] for t in trees]) for key in first}
    if isinstance(first, tuple | list):
        for other in trees[1:]:
            if not isinstance(other, tuple | list) or len(other) != len(first):
                raise _mismatch(first, other)
        return _rebuild(first, [tree_zip_map(fn, [t[i] for t in trees]) for i in range(len(first))])
    for other in trees[1:]:
        if is_container(other):
            raise _mismatch(first, other)
    return fn(list(trees))


def _mismatch(first: Any, other: Any) -> DataError:
    return DataError(
        f"Elements have different structures: {describe(first)} and {describe(other)}. "
        f"Elements that are batched together must have the same keys and lengths."
    )


def describe(tree: Any) -> str:
    """A short description of a tree's structure, for error messages."""
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{key!r}: {describe(value)}" for key, value in tree.items()) + "}"
    if isinstance(tree, tuple | list):
        inner = ", ".join(describe(value) for value in tree)
        return f"({inner},)" if isinstance(tree, tuple) and len(tree) == 1 else f"({inner})"
    shape = getattr(tree, "shape", None)
    if shape is not None:
        return f"{type(tree).__name__}{tuple(shape)}"
    return type(tree).__name__


# --- paths -------------------------------------------------------------------------------


def parse_path(path: Part) -> Parts:
    """The parts of ``path``: ``"a/0/b"`` -> ``("a", "0", "b")``, ``2`` -> ``(2,)``."""
    if isinstance(path, bool) or not isinstance(path, str | int):
        raise DataError(
            f"A path is a dict key or a position (a str such as 'image' or 'inputs/image', "
            f"or an int). Got {path!r} ({type(path).__name__})."
        )
    if isinstance(path, int):
        return (path,)
    return tuple(part for part in path.split("/") if part != "")


def format_path(parts: Parts) -> str:
    return "/".join(str(part) for part in parts) or "<the sample>"


def _child(node: Any, part: Part) -> tuple[bool, Any, Part]:
    """``(found, child, key)``: ``part`` looked up in ``node``; digit strings index sequences."""
    if isinstance(node, dict):
        if part in node:
            return True, node[part], part
        if isinstance(part, str) and part.lstrip("-").isdigit() and int(part) in node:
            return True, node[int(part)], int(part)
        return False, None, part
    if isinstance(node, tuple | list):
        index: int | None = None
        if isinstance(part, int):
            index = part
        elif part.lstrip("-").isdigit():
            index = int(part)
        if index is not None and -len(node) <= index < len(node):
            return True, node[index], index % len(node)
    return False, None, part


def resolve(tree: Any, path: Part) -> Parts:
    """The canonical parts of ``path`` in ``tree``; raises DataError naming the paths there are."""
    parts = parse_path(path)
    node = tree
    canonical: list[Part] = []
    for part in parts:
        found, node, key = _child(node, part)
        if not found:
            known = ", ".join(format_path(p) for p, _ in tree_items(tree)) or "none"
            raise DataError(
                f"The sample has no '{format_path(parts)}' (no {part!r} at "
                f"'{format_path(tuple(canonical))}'). Its leaves are: {known}."
            )
        canonical.append(key)
    return tuple(canonical)


def get_path(tree: Any, parts: Parts) -> Any:
    node = tree
    for part in parts:
        node = node[part]
    return node


def set_path(tree: Any, parts: Parts, value: Any) -> Any:
    """A copy of ``tree`` with the node at ``parts`` replaced (containers along the way copied)."""
    if not parts:
        return value
    head, rest = parts[0], parts[1:]
    if isinstance(tree, dict):
        copy = dict(tree)
        copy[head] = set_path(tree[head], rest, value)
        return copy
    children = list(tree)
    assert isinstance(head, int)
    children[head] = set_path(children[head], rest, value)
    return _rebuild(tree, children)
