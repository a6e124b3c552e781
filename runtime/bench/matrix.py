"""The run matrix: a validated BenchFile (or ad-hoc flags) + a suite + command-line overrides ->
a Plan, the ordered list of cases (model x config x batch size x engine) to measure.

Cases are ordered model first (the model loads once), then engine (a runner and its graphs are
built once), then config and batch size. Each case has a stable id over everything that changes
its numbers, which is what lets an interrupted run resume without duplicating rows.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from runtime.bench.schema import DTYPES, ENGINES, WEIGHTS, BenchConfig, BenchFile, ModelEntry
from runtime.errors import ConfigError

ADHOC = "adhoc"


@dataclass(frozen=True)
class Case:
    model: ModelEntry
    config: BenchConfig
    batch_size: int
    engine: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.model.name} / {self.config.name} / b{self.batch_size} / {self.engine}"

    @property
    def case_id(self) -> str:
        """Hash of everything that changes the measurement (not warm-up or trial counts)."""
        config = {k: v for k, v in asdict(self.config).items() if k not in ("engines", "batch_size")}
        key = dict(
            model=asdict(self.model), config=config, batch=self.batch_size, engine=self.engine, seed=self.seed
        )
        return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Plan:
    source: str  # the YAML file, or "ad hoc"
    suite: str
    models: tuple[ModelEntry, ...]
    configs: tuple[BenchConfig, ...]
    cases: tuple[Case, ...]
    warmup: int
    trials: int
    seed: int
    capacity: int  # KV cache tokens, shared by every config of the suite

    def cases_of(self, model: ModelEntry) -> list[Case]:
        return [c for c in self.cases if c.model == model]


@dataclass(frozen=True)
class Overrides:
    """Command-line settings that replace the file's (None = keep the file's)."""

    suite: str | None = None
    model: str | None = None
    weights: str | None = None
    dtype: str | None = None
    engines: tuple[str, ...] | None = None
    batch_size: tuple[int, ...] | None = None
    warmup: int | None = None
    trials: int | None = None
    seed: int | None = None
    max_seq_len: int | None = None


def _check_overrides(o: Overrides) -> None:
    checks = [
        (o.weights is None or o.weights in WEIGHTS, f"--weights must be one of {', '.join(WEIGHTS)}"),
        (o.dtype is None or o.dtype in DTYPES, f"--dtype must be one of {', '.join(DTYPES)}"),
        (all(e in ENGINES for e in o.engines or ()), f"--engine must be one of {', '.join(ENGINES)}"),
        (all(b >= 1 for b in o.batch_size or ()), "--batch-size must be >= 1"),
        (o.warmup is None or o.warmup >= 0, "--warmup must be >= 0"),
        (o.trials is None or o.trials >= 1, "--trials must be >= 1"),
        (o.seed is None or o.seed >= 0, "--seed must be >= 0"),
        (o.max_seq_len is None or o.max_seq_len >= 2, "--max-seq-len must be >= 2"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)


def _suite(bench: BenchFile, wanted: str | None) -> tuple[str, tuple[BenchConfig, ...]]:
    """The chosen suite's configs: --suite, else the file's `suite`, its only suite, or all configs."""
    name = wanted or bench.suite
    if name is None and len(bench.suites) == 1:
        name = next(iter(bench.suites))
    if name is None:
        return "all", bench.configs
    if name not in bench.suites:
        known = ", ".join(bench.suites) or "none"
        raise ConfigError(f"{bench.path}: no suite {name!r} (suites defined there: {known})")
    return name, tuple(bench.config(n) for n in bench.suites[name])


def _models(bench: BenchFile, o: Overrides) -> tuple[ModelEntry, ...]:
    """--model keeps that model's entry when the file lists it, else benchmarks it in its place."""
    models = bench.models
    if o.model is not None:
        listed = [m for m in models if o.model in (m.id, m.name)]
        models = tuple(listed) or (ModelEntry(o.model, "auto", bench.models[0].dtype),)
    if o.weights is not None or o.dtype is not None:
        models = tuple(replace(m, weights=o.weights or m.weights, dtype=o.dtype or m.dtype) for m in models)
    return models


def build_plan(bench: BenchFile, overrides: Overrides | None = None) -> Plan:
    o = overrides or Overrides()
    _check_overrides(o)
    suite, configs = _suite(bench, o.suite)
    models = _models(bench, o)
    seed = bench.seed if o.seed is None else o.seed
    need = max(c.prompt_tokens + c.max_new_tokens for c in configs)
    capacity = o.max_seq_len or bench.max_seq_len or need
    if capacity < need:
        worst = max(configs, key=lambda c: c.prompt_tokens + c.max_new_tokens)
        where = "--max-seq-len" if o.max_seq_len else f"{bench.path}: max_seq_len"
        raise ConfigError(
            f"{where} is {capacity} but config {worst.name!r} needs {need} "
            f"({worst.prompt_tokens} prompt + {worst.max_new_tokens} new tokens)"
        )

    cases = []
    for model in models:
        per_config = [(c, o.engines or c.engines or bench.engines) for c in configs]
        engine_order = list(dict.fromkeys(e for _, engines in per_config for e in engines))
        for engine in engine_order:
            for config, engines in per_config:
                if engine not in engines:
                    continue
                for batch in o.batch_size or config.batch_size or bench.batch_size:
                    cases.append(Case(model, config, batch, engine, seed))
    return Plan(
        source=bench.path,
        suite=suite,
        models=models,
        configs=configs,
        cases=tuple(cases),
        warmup=bench.warmup if o.warmup is None else o.warmup,
        trials=bench.trials if o.trials is None else o.trials,
        seed=seed,
        capacity=capacity,
    )


def adhoc_bench(model: str, weights: str, dtype: str, config: BenchConfig) -> BenchFile:
    """A one-config BenchFile for a run without a YAML file (flags only)."""
    return BenchFile(
        path="ad hoc",
        models=(ModelEntry(model, weights, dtype),),
        configs=(config,),
        suites={ADHOC: (config.name,)},
        suite=ADHOC,
    )
