"""The benchmark YAML: read it with line numbers (yaml_reader.py), validate every key and type, and
return frozen dataclasses. Every problem is a ConfigError naming the file, the key and (where known)
the line, raised before any model loads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.bench.yaml_reader import Path_, YamlReader, read_yaml

# runtime: graphs on CUDA, eager elsewhere; the rest name one engine exactly
ENGINES = ("runtime", "runtime_graph", "runtime_eager", "transformers_eager", "transformers_compile")
WEIGHTS = ("auto", "checkpoint", "random")
DTYPES = ("auto", "bfloat16", "float16", "float32")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


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


def _model(r: YamlReader, value: Any, path: Path_) -> ModelEntry:
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


def _config(r: YamlReader, name: Any, value: Any, path: Path_) -> BenchConfig:
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
        engines=r.string_list(c["engines"], at("engines"), ENGINES) if "engines" in c else None,
        batch_size=r.int_list(c["batch_size"], at("batch_size"), 1) if "batch_size" in c else None,
    )


def parse_bench(data: Any, r: YamlReader) -> BenchFile:
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
        engines=r.string_list(top["engines"], ("engines",), ENGINES) if "engines" in top else ("runtime",),
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
    reader = YamlReader("command line", {})
    return _config(reader, name, {k: v for k, v in values.items() if v is not None}, ())
