"""A YAML file read into plain Python values with the line of every key and item, and typed checks
whose errors read `file:line: key.path: problem` (ConfigError): what the benchmark schema
(schema.py) validates with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from runtime.errors import ConfigError

Path_ = tuple[Any, ...]  # a key path inside the file: ("configs", "short", "prompt_tokens")


class YamlReader:
    """Type checks that report `file:line: key.path: problem`."""

    def __init__(self, file: str, lines: dict[Path_, int]):
        self.file, self.lines = file, lines

    def error(self, path: Path_, message: str) -> ConfigError:
        for i in range(len(path), -1, -1):  # the nearest key that has a line
            if path[:i] in self.lines:
                where = f"{self.file}:{self.lines[path[:i]]}"
                break
        else:
            where = self.file
        dotted = ".".join(str(p) for p in path)
        return ConfigError(f"{where}: {dotted + ': ' if dotted else ''}{message}")

    def mapping(self, value: Any, path: Path_, allowed: tuple[str, ...] | None = None) -> dict:
        if not isinstance(value, dict):
            raise self.error(path, f"expected a mapping, got {_show(value)}")
        for key in value:
            if not isinstance(key, str):
                raise self.error(path, f"keys must be strings, got {_show(key)}")
            if allowed is not None and key not in allowed:
                where = ".".join(str(p) for p in path) or "the top level"
                raise self.error(
                    (*path, key), f"unknown key {key!r} in {where} (allowed: {', '.join(allowed)})"
                )
        return value

    def integer(self, value: Any, path: Path_, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"expected an integer, got {_show(value)}")
        if minimum is not None and value < minimum:
            raise self.error(path, f"must be >= {minimum}, got {value}")
        return value

    def number(self, value: Any, path: Path_, check, rule: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(path, f"expected a number, got {_show(value)}")
        if not check(value):
            raise self.error(path, f"must be {rule}, got {value}")
        return float(value)

    def boolean(self, value: Any, path: Path_) -> bool:
        if not isinstance(value, bool):
            raise self.error(path, f"expected true or false, got {_show(value)}")
        return value

    def string(self, value: Any, path: Path_, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(path, f"expected a non-empty string, got {_show(value)}")
        if choices is not None and value not in choices:
            raise self.error(path, f"{value!r} is not one of {', '.join(choices)}")
        return value

    def sequence(self, value: Any, path: Path_) -> list:
        if not isinstance(value, list) or not value:
            raise self.error(path, f"expected a non-empty list, got {_show(value)}")
        return value

    def int_list(self, value: Any, path: Path_, minimum: int) -> tuple[int, ...]:
        """An integer or a list of integers (a list expands the matrix)."""
        if not isinstance(value, list):
            return (self.integer(value, path, minimum),)
        if not value:
            raise self.error(path, "expected an integer or a non-empty list of integers")
        return tuple(self.integer(v, (*path, i), minimum) for i, v in enumerate(value))

    def string_list(self, value: Any, path: Path_, choices: tuple[str, ...]) -> tuple[str, ...]:
        """A non-empty list of strings, each one of choices."""
        items = self.sequence(value, path)
        return tuple(self.string(v, (*path, i), choices) for i, v in enumerate(items))


def _show(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


def _plain(node: yaml.Node, path: Path_, lines: dict[Path_, int], constructor, reader: YamlReader) -> Any:
    """A composed YAML node -> plain Python values, recording the line of every key and item."""
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise reader.error(path, f"unsupported key {key_node.value!r}")
            lines[(*path, key)] = key_node.start_mark.line + 1
            if key in out:
                raise reader.error((*path, key), f"duplicate key {key!r}")
            out[key] = _plain(value_node, (*path, key), lines, constructor, reader)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            lines[(*path, i)] = item.start_mark.line + 1
            items.append(_plain(item, (*path, i), lines, constructor, reader))
        return items
    return constructor.construct_object(node, deep=True)


def read_yaml(path: Path) -> tuple[Any, YamlReader]:
    """Parse a YAML file into plain values plus a reader that knows each key's line."""
    name = str(path)
    if not path.exists():
        raise ConfigError(f"{name}: no such benchmark file")
    if path.is_dir():
        raise ConfigError(f"{name}: is a folder, not a benchmark YAML file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{name}: cannot read it ({e})") from e
    lines: dict[Path_, int] = {}
    reader = YamlReader(name, lines)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is None:
            raise ConfigError(f"{name}: the file is empty")
        data = _plain(node, (), lines, yaml.constructor.SafeConstructor(), reader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: not valid YAML ({problem})") from e
    return data, reader
