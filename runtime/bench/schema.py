"""The benchmark YAML: read it with line numbers, validate every key and type, and return frozen
dataclasses. Every problem is a ConfigError naming the file, the key and (where known) the line,
raised before any model loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from runtime.errors import ConfigError

# runtime: graphs on CUDA, eager elsewhere; the rest name one engine exactly
ENGINES = ("runtime", "runtime_graph", "runtime_eager", "transformers_eager", "transformers_compile")
WEIGHTS = ("auto", "checkpoint", "random")
DTYPES = ("auto", "bfloat16", "float16", "float32")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")

Path_ = tuple[Any, ...]  # a key path inside the file: ("configs", "short", "prompt_tokens")


@dataclass(frozen=True)
class ModelEntry:
    id: str
    weights: str = "auto"
    dtype: str = "auto"

    @property
    def name(self) -> str:
        """The id's last part without a file suffix: the column title in every table."""
        last = self.id.rstrip("/").split("/")[-1]
        return last.removesuffix(".json").removesuffix(".gguf")


@dataclass(frozen=True)
class BenchConfig:
    name: str
    prompt_tokens: int
    max_new_tokens: int
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    ignore_eos: bool = True
    engines: tuple[str, ...] | None = None  # None: the file's engines
    batch_size: tuple[int, ...] | None = None  # None: the file's batch sizes


@dataclass(frozen=True)
class BenchFile:
    path: str
    models: tuple[ModelEntry, ...]
    configs: tuple[BenchConfig, ...]
    suites: dict[str, tuple[str, ...]] = field(default_factory=dict)
    suite: str | None = None
    batch_size: tuple[int, ...] = (1,)
    engines: tuple[str, ...] = ("runtime",)
    warmup: int = 2
    trials: int = 3
    seed: int = 42
    max_seq_len: int | None = None

    def config(self, name: str) -> BenchConfig:
        return next(c for c in self.configs if c.name == name)


class _Reader:
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

    def engines(self, value: Any, path: Path_) -> tuple[str, ...]:
        items = self.sequence(value, path)
        return tuple(self.string(v, (*path, i), ENGINES) for i, v in enumerate(items))


def _show(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


def _plain(node: yaml.Node, path: Path_, lines: dict[Path_, int], constructor, reader: _Reader) -> Any:
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


def read_yaml(path: Path) -> tuple[Any, _Reader]:
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
    reader = _Reader(name, lines)
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


TOP_KEYS = (
    "models",
    "configs",
    "suites",
    "suite",
    "batch_size",
    "engines",
    "warmup",
    "trials",
    "seed",
    "max_seq_len",
)
MODEL_KEYS = ("id", "weights", "dtype")
# what one request is: the keys an ad-hoc run on the command line can give too
REQUEST_KEYS = (
    "prompt_tokens",
    "max_new_tokens",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "ignore_eos",
)
CONFIG_KEYS = (*REQUEST_KEYS, "engines", "batch_size")


def _model(r: _Reader, value: Any, path: Path_) -> ModelEntry:
    if isinstance(value, str):
        return ModelEntry(r.string(value, path))
    m = r.mapping(value, path, MODEL_KEYS)
    if "id" not in m:
        raise r.error(path, "a model needs an `id`")
    return ModelEntry(
        id=r.string(m["id"], (*path, "id")),
        weights=r.string(m.get("weights", "auto"), (*path, "weights"), WEIGHTS),
        dtype=r.string(m.get("dtype", "auto"), (*path, "dtype"), DTYPES),
    )


def _config(r: _Reader, name: Any, value: Any, path: Path_) -> BenchConfig:
    if not isinstance(name, str) or not _NAME.match(name):
        raise r.error(path, f"config names use letters, digits, _ . -; got {name!r}")
    c = r.mapping(value, path, CONFIG_KEYS)
    for required in ("prompt_tokens", "max_new_tokens"):
        if required not in c:
            raise r.error(path, f"missing `{required}`")
    at = lambda key: (*path, key)  # noqa: E731
    return BenchConfig(
        name=name,
        prompt_tokens=r.integer(c["prompt_tokens"], at("prompt_tokens"), 1),
        max_new_tokens=r.integer(c["max_new_tokens"], at("max_new_tokens"), 1),
        temperature=r.number(c.get("temperature", 0.0), at("temperature"), lambda v: v >= 0, ">= 0"),
        top_k=r.integer(c.get("top_k", 0), at("top_k"), 0),
        top_p=r.number(c.get("top_p", 1.0), at("top_p"), lambda v: 0 < v <= 1, "in (0, 1]"),
        repetition_penalty=r.number(
            c.get("repetition_penalty", 1.0), at("repetition_penalty"), lambda v: v > 0, "> 0"
        ),
        ignore_eos=r.boolean(c.get("ignore_eos", True), at("ignore_eos")),
        engines=r.engines(c["engines"], at("engines")) if "engines" in c else None,
        batch_size=r.int_list(c["batch_size"], at("batch_size"), 1) if "batch_size" in c else None,
    )


def parse_bench(data: Any, r: _Reader) -> BenchFile:
    """Validate plain YAML values into a BenchFile."""
    top = r.mapping(data, (), TOP_KEYS)
    for required in ("models", "configs"):
        if required not in top:
            raise r.error((), f"missing the `{required}` section")
    models = tuple(_model(r, m, ("models", i)) for i, m in enumerate(r.sequence(top["models"], ("models",))))
    raw_configs = r.mapping(top["configs"], ("configs",))
    if not raw_configs:
        raise r.error(("configs",), "needs at least one config")
    configs = tuple(_config(r, k, v, ("configs", k)) for k, v in raw_configs.items())
    names = [c.name for c in configs]

    suites: dict[str, tuple[str, ...]] = {}
    for suite, members in r.mapping(top.get("suites", {}), ("suites",)).items():
        path = ("suites", suite)
        items = r.sequence(members, path)
        for i, member in enumerate(items):
            r.string(member, (*path, i))
            if member not in names:
                raise r.error((*path, i), f"unknown config {member!r} (configs: {', '.join(names)})")
        suites[suite] = tuple(items)
    suite = None
    if "suite" in top:
        suite = r.string(top["suite"], ("suite",))
        if suite not in suites:
            raise r.error(("suite",), f"suite {suite!r} is not defined under `suites`")

    max_seq_len = top.get("max_seq_len")
    return BenchFile(
        path=r.file,
        models=models,
        configs=configs,
        suites=suites,
        suite=suite,
        batch_size=r.int_list(top.get("batch_size", 1), ("batch_size",), 1),
        engines=r.engines(top["engines"], ("engines",)) if "engines" in top else ("runtime",),
        warmup=r.integer(top.get("warmup", 2), ("warmup",), 0),
        trials=r.integer(top.get("trials", 3), ("trials",), 1),
        seed=r.integer(top.get("seed", 42), ("seed",), 0),
        max_seq_len=None if max_seq_len is None else r.integer(max_seq_len, ("max_seq_len",), 2),
    )


def load_bench(path: str | Path) -> BenchFile:
    data, reader = read_yaml(Path(path))
    return parse_bench(data, reader)


def config_from_flags(name: str, values: dict[str, Any]) -> BenchConfig:
    """Validate an ad-hoc config given as command-line flags, with the same checks as the file."""
    reader = _Reader("command line", {})
    return _config(reader, name, {k: v for k, v in values.items() if v is not None}, ())
