"""YAML mappings -> frozen dataclasses, validated at load time, errors naming the dotted key path.

A small hand-written converter rather than pydantic: the configs are a handful of dataclasses, the
package already depends on nothing that brings pydantic, and the messages (``losses.perceptual.weight:
expected a number, got 'x'``) are what the CLI prints as its one-line error.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any

import yaml

from srgan_med.errors import ConfigError


def convert(value: Any, annotation: Any, path: str) -> Any:
    """Turn a YAML value into the annotated type, or raise ConfigError naming ``path``."""
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, path)
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        candidates = [a for a in args if a is not type(None)]
        # A list picks a tuple alternative (e.g. ``str | tuple[str, ...]``), so a bad item is named
        # by its index; otherwise the first alternative that accepts the value (``bool | str``).
        is_list = isinstance(value, (list, tuple))
        fitting = [a for a in candidates if (typing.get_origin(a) is tuple) == is_list] or candidates
        for candidate in fitting[:-1]:
            try:
                return convert(value, candidate, path)
            except ConfigError:
                continue
        return convert(value, fitting[-1], path)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{path}: expected a list, got {value!r}")
            return tuple(convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{path}: expected a list of {len(args)} values, got {value!r}")
        return tuple(convert(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        key_type, value_type = args
        return {
            convert(k, key_type, f"{path}.{k}"): convert(v, value_type, f"{path}.{k}")
            for k, v in value.items()
        }
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if annotation in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if not math.isfinite(value):  # YAML's .nan / .inf: no setting means them
            raise ConfigError(f"{path}: expected a finite number, got {value!r}")
        if annotation is int and value != int(value):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return annotation(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected text, got {value!r}")
        return value
    if annotation is Any:
        return value
    raise ConfigError(f"{path}: unsupported value {value!r}")  # pragma: no cover - schema bug


def from_dict(cls: type, data: Any, path: str = "", name: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad values raise ConfigError.

    ``name`` is what a top-level error calls the whole mapping (e.g. ``"degradation config"``).
    """
    prefix = f"{path}." if path else ""
    if not isinstance(data, dict):
        raise ConfigError(f"{path or name}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"{prefix}{key}: unknown key (known: {', '.join(sorted(names))})")
    values = {key: convert(value, hints[key], f"{prefix}{key}") for key, value in data.items()}
    try:
        return cls(**values)
    except TypeError as error:  # pragma: no cover - all keys were checked above
        raise ConfigError(f"{path}: {error}") from None


def to_dict(instance: Any) -> Any:
    """A dataclass as plain JSON/YAML-able data (tuples become lists)."""
    if dataclasses.is_dataclass(instance):
        return {f.name: to_dict(getattr(instance, f.name)) for f in dataclasses.fields(instance)}
    if isinstance(instance, (list, tuple)):
        return [to_dict(v) for v in instance]
    if isinstance(instance, dict):
        return {k: to_dict(v) for k, v in instance.items()}
    return instance


class _StrictLoader(yaml.SafeLoader):
    """:func:`load_yaml`'s loader: a key given twice in one mapping is an error."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _value in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *base``: merged keys may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader says so itself
                continue
            if duplicate:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(f"line {line}: the key {key!r} is given twice")
        return super().construct_mapping(node, deep=deep)


# YAML 1.2's floats: a mantissa without a dot (1e-4, 5E+3) is one too. add_implicit_resolver copies
# SafeLoader's table into the subclass first, so yaml.safe_load elsewhere is untouched.
_StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` of ``text``, with two YAML 1.2 rules PyYAML's YAML 1.1 lacks.

    - ``1e-4`` is a number: YAML 1.1 reads it as the text ``'1e-4'`` (only ``1.0e-4`` is a float
      there), so ``learning_rate: 1e-4`` was refused as "expected a number".
    - A key given twice in one mapping is an error: YAML 1.1 keeps the last one silently, so a
      config with two ``scale:`` lines (or two ``pretrain:`` sections) ran with whichever came last.

    Raises:
        yaml.YAMLError: as ``yaml.safe_load`` does (a duplicate key as a ``ConstructorError``).
    """
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested mapping, in a copy.

    Raises:
        ConfigError: an override without ``=`` or one that walks into a non-mapping.
    """
    import copy

    result = copy.deepcopy(data)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {override!r}: expected KEY=VALUE, e.g. gan.steps=1000")
        try:
            value = load_yaml(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {override!r}: the value is not valid YAML") from None
        parts = key.strip().split(".")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {override!r}: {'.'.join(parts[: depth + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return result


def check_choices(config: Any, choices: dict[str, tuple]) -> None:
    """Raise ConfigError unless every dotted ``path`` of ``config`` holds one of its allowed values."""
    for path, allowed in choices.items():
        value = config
        for part in path.split("."):
            value = getattr(value, part)
        if value not in allowed:
            # YAML spells booleans true/false; everything else as written.
            names = ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in allowed)
            raise ConfigError(f"{path}: must be one of {names}, got {value!r}")
