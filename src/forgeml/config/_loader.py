"""Safe YAML loading with ``!include``, ``import:`` blocks and YAML-1.2 floats."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import yaml

from forgeml._core._errors import ConfigError
from forgeml.config._config import Config, merge

INCLUDE_TAG = "!include"

# YAML 1.2 core-schema floats: "1e-3", "1e5", "5E+2" and ".5" are floats, not strings.
_FLOAT_RE = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.VERBOSE,
)
_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
#: The most nodes a document may expand to through aliases ("billion laughs" guard).
MAX_EXPANDED_NODES = 1_000_000


def _check_expansion(root: yaml.Node, path: Path | None) -> None:
    """Refuse recursive aliases and documents whose aliases expand past MAX_EXPANDED_NODES."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(
                f"{path}, line {node.start_mark.line + 1}: an alias refers to a node that "
                f"contains it (a recursive structure); configs must be trees."
            )
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        active.discard(key)
        if total > MAX_EXPANDED_NODES:
            raise ConfigError(
                f"{path}, line {node.start_mark.line + 1}: aliases expand this document past "
                f"{MAX_EXPANDED_NODES:,} nodes; refusing to load it."
            )
        sizes[key] = total
        return total

    size(root)


class _Loader(yaml.SafeLoader):
    """A SafeLoader with YAML-1.2 floats and ``!include``; PyYAML itself is left unchanged."""

    path: Path | None = None
    context: _Context | None = None

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            _check_expansion(node, self.path)
        return node

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node)
            if key in seen:
                raise ConfigError(
                    f"{self.path}, line {key_node.start_mark.line + 1}: duplicate key {key!r}; "
                    f"each key may appear once in a mapping."
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except ConfigError:
            raise
        except ValueError as exc:  # a scalar its tag cannot hold: `!!int x`, `2001-13-45`
            raise ConfigError(
                f"{self.path}, line {node.start_mark.line + 1}: invalid value "
                f"{getattr(node, 'value', '')!r} for {node.tag}: {exc}."
            ) from None


# Copies, so that PyYAML's own SafeLoader/SafeDumper keep the YAML 1.1 rules. As in
# YAML 1.2, unquoted dates stay strings (so every value round-trips through repr and JSON).
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_FLOAT_TAG, _TIMESTAMP_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_FLOAT_TAG, _FLOAT_RE, list("-+0123456789."))


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.yaml_implicit_resolvers = {k: list(v) for k, v in _Loader.yaml_implicit_resolvers.items()}
_Dumper.add_representer(Config, _Dumper.represent_dict)
_Dumper.add_representer(tuple, _Dumper.represent_list)
_Dumper.add_multi_representer(PurePath, lambda d, p: d.represent_str(str(p)))


def dump_yaml(data: Any) -> str:
    try:
        text: str = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
    except yaml.representer.RepresenterError as exc:
        value = exc.args[1] if len(exc.args) > 1 else exc
        raise ConfigError(
            f"Cannot write {value!r} ({type(value).__name__}) to YAML: configs hold strings, "
            f"numbers, booleans, None, lists and mappings."
        ) from None
    return text


class _Context:
    """State shared by the files of one ``load`` call: the include stack and the root."""

    def __init__(self, root: Path | None) -> None:
        self.root = root.resolve() if root is not None else None
        self.stack: list[Path] = []


def _where(loader: _Loader, node: yaml.Node) -> str:
    return f"{loader.path}, line {node.start_mark.line + 1}"


def _construct_include(loader: _Loader, node: yaml.Node) -> Any:
    assert loader.path is not None
    assert loader.context is not None
    if not isinstance(node, yaml.ScalarNode):
        raise ConfigError(
            f"{_where(loader, node)}: {INCLUDE_TAG} takes a single file path, "
            f"e.g. `key: {INCLUDE_TAG} other.yml`."
        )
    raw = loader.construct_scalar(node)
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{_where(loader, node)}: {INCLUDE_TAG} needs a file path. Got {raw!r}.")
    target = (loader.path.parent / os.path.expanduser(raw)).resolve()
    context = loader.context
    if context.root is not None and not target.is_relative_to(context.root):
        raise ConfigError(
            f"{_where(loader, node)}: {INCLUDE_TAG} {raw!r} resolves to '{target}', "
            f"outside the config root '{context.root}'. Move the file under the root "
            f"or load with a wider root."
        )
    if target in context.stack:
        chain = " -> ".join(str(p) for p in [*context.stack, target])
        raise ConfigError(f"{_where(loader, node)}: include cycle: {chain}.")
    if not target.is_file():
        raise ConfigError(
            f"{_where(loader, node)}: included file {raw!r} not found "
            f"(looked for '{target}'). Paths are relative to the including file."
        )
    return _load_any(target, context)


_Loader.add_constructor(INCLUDE_TAG, _construct_include)


def _load_any(path: Path, context: _Context) -> Any:
    suffix = path.suffix.lower()
    if suffix in (".yml", ".yaml"):
        return _load_yaml_file(path, context)
    text = _read_text(path)
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}, line {exc.lineno}: invalid JSON: {exc.msg}.") from None
    return text


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    except OSError as exc:
        raise ConfigError(f"Cannot read config file '{path}': {exc.strerror}.") from None


def parse_yaml(text: str, *, path: Path, context: _Context | None = None) -> Any:
    """Parse YAML text as if it were the file ``path`` (includes resolve next to it)."""
    context = context or _Context(None)
    loader = _Loader(text)
    loader.name = str(path)
    loader.path = path
    loader.context = context
    context.stack.append(path)
    try:
        data = loader.get_single_data()
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(f"{path}: the document is nested too deeply to load.") from None
    except yaml.constructor.ConstructorError as exc:
        mark = exc.problem_mark
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = exc.problem or str(exc)
        if "could not determine a constructor" in problem:
            tag = problem.replace("could not determine a constructor for the tag", "").strip()
            problem = f"unsafe or unknown tag {tag}; only plain YAML and {INCLUDE_TAG} are allowed"
        raise ConfigError(f"{path}{line}: {problem}.") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {exc.problem}.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}.") from None
    finally:
        context.stack.pop()
        loader.dispose()
    if isinstance(data, dict):
        data = _apply_imports(data, path)
    return data


def _load_yaml_file(path: Path, context: _Context) -> Any:
    return parse_yaml(_read_text(path), path=path, context=context)


def _apply_imports(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """Resolve an ``import:`` block: defaults first, then imports, then the local keys."""
    if "import" not in data:
        return data
    imports = data.pop("import")
    if imports is None:
        return data
    if not isinstance(imports, Mapping):
        raise ConfigError(
            f"{path}: 'import' must be a mapping of keys to included values "
            f"(e.g. `import: {{defaults: !include defaults.yml}}`). Got {type(imports).__name__}."
        )
    imports = dict(imports)
    defaults = imports.pop("defaults", None) or {}
    if not isinstance(defaults, Mapping):
        raise ConfigError(
            f"{path}: 'import.defaults' must be a mapping (it becomes the base of the "
            f"whole document). Got {type(defaults).__name__}."
        )
    result: dict[str, Any] = merge({}, defaults)
    merge(result, imports)
    merge(result, data)
    return result


def load(
    path: str | os.PathLike[str],
    *overrides: str,
    root: str | os.PathLike[str] | None = None,
) -> Config:
    """Load a YAML/JSON config file with includes and imports resolved, then apply overrides.

    ``root``, when given, confines every ``!include`` to that directory tree.
    The result carries ``__file__``: the path as given.
    """
    from forgeml.config._overrides import apply_overrides

    given = os.fspath(path)
    resolved = Path(given).expanduser().resolve()
    if not resolved.is_file():
        raise ConfigError(f"Config file '{given}' not found (looked for '{resolved}').")
    context = _Context(Path(root) if root is not None else None)
    if context.root is not None and not resolved.is_relative_to(context.root):
        raise ConfigError(f"Config file '{given}' is outside the config root '{context.root}'.")
    data = _load_any(resolved, context)
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{given}: a config file must hold a mapping at the top level. "
            f"Got {type(data).__name__}."
        )
    cfg = Config(data)
    cfg["__file__"] = given
    apply_overrides(cfg, overrides)
    return cfg


def loads(text: str, *overrides: str, base_dir: str | os.PathLike[str] = ".") -> Config:
    """Parse config text; includes resolve relative to ``base_dir``."""
    from forgeml.config._overrides import apply_overrides

    data = parse_yaml(text, path=Path(base_dir).resolve() / "<string>")
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"Config text must hold a mapping at the top level. Got {type(data).__name__}."
        )
    cfg = Config(data)
    apply_overrides(cfg, overrides)
    return cfg
