"""Benchmark YAML: the shipped suites, matrix expansion, overrides, and every schema error (with the
file, key and line it names)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runtime.bench.matrix import Overrides, adhoc_bench, build_plan
from runtime.bench.schema import config_from_flags, load_bench
from runtime.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEV_MODELS = ["meta-llama/Llama-3.2-1B-Instruct", "Qwen/Qwen3-1.7B", "google/gemma-3-1b-it"]
SEVEN = ["short", "medium", "prefill", "decode", "long", "sampled", "full_pipe"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    return path


MINIMAL = """\
models:
  - {id: tiny, weights: random}
configs:
  a: {prompt_tokens: 8, max_new_tokens: 4}
"""


def test_full_yaml_matches_the_design():
    bench = load_bench(CONFIGS / "full.yaml")
    assert [m.id for m in bench.models] == DEV_MODELS
    assert {m.dtype for m in bench.models} == {"bfloat16"}
    assert (bench.warmup, bench.trials, bench.seed) == (2, 3, 42)
    assert bench.suites == {
        "quick": ("short", "medium"),
        "standard": ("short", "medium", "prefill", "decode", "sampled"),
        "full": tuple(SEVEN),
    }
    shapes = {c.name: (c.prompt_tokens, c.max_new_tokens) for c in bench.configs}
    assert shapes == {
        "short": (64, 64),
        "medium": (256, 256),
        "prefill": (1024, 64),
        "decode": (64, 1024),
        "long": (1024, 1024),
        "sampled": (256, 256),
        "full_pipe": (256, 256),
    }
    sampled, full_pipe = bench.config("sampled"), bench.config("full_pipe")
    assert (sampled.temperature, sampled.top_k, sampled.top_p, sampled.repetition_penalty) == (
        0.8,
        50,
        0.9,
        1.0,
    )
    assert (full_pipe.temperature, full_pipe.top_k, full_pipe.top_p, full_pipe.repetition_penalty) == (
        0.8,
        50,
        0.9,
        1.1,
    )
    assert all(c.temperature == 0 for c in bench.configs if c.name not in ("sampled", "full_pipe"))


def test_full_plan_runs_baselines_on_medium_only():
    plan = build_plan(load_bench(CONFIGS / "full.yaml"))
    assert plan.suite == "full" and plan.capacity == 2048
    baseline = {(c.config.name, c.engine) for c in plan.cases if c.engine != "runtime_graph"}
    assert baseline == {
        ("medium", e) for e in ("runtime_eager", "transformers_eager", "transformers_compile")
    }
    assert len(plan.cases) == 3 * (7 + 3)
    # the model loads once: its cases are contiguous, and each engine's cases too
    models = [c.model.id for c in plan.cases]
    assert models == sorted(models, key=DEV_MODELS.index)
    first = [c.engine for c in plan.cases_of(plan.models[0])]
    assert first == ["runtime_graph"] * 7 + ["runtime_eager", "transformers_eager", "transformers_compile"]


@pytest.mark.parametrize(
    "name, suite, configs",
    [
        ("quick.yaml", "quick", ["short", "medium"]),
        ("standard.yaml", "standard", ["short", "medium", "prefill", "decode", "sampled"]),
        ("full.yaml", "full", SEVEN),
        ("sampling.yaml", "sampling", ["greedy", "top_k", "top_p", "temperature", "wide_k"]),
    ],
)
def test_each_suite_file_defaults_to_its_suite(name, suite, configs):
    plan = build_plan(load_bench(CONFIGS / name))
    assert plan.suite == suite
    assert [c.name for c in plan.configs] == configs
    assert [m.id for m in plan.models] == DEV_MODELS


def test_suite_override_and_unknown_suite():
    bench = load_bench(CONFIGS / "full.yaml")
    assert [c.name for c in build_plan(bench, Overrides(suite="quick")).configs] == ["short", "medium"]
    with pytest.raises(ConfigError, match=r"quick.yaml: no suite 'full' \(suites defined there: quick\)"):
        build_plan(load_bench(CONFIGS / "quick.yaml"), Overrides(suite="full"))


def test_demo_yaml_is_the_embedded_model_on_the_quick_suite():
    plan = build_plan(load_bench(CONFIGS / "demo.yaml"))
    assert [m.id for m in plan.models] == ["smollm2-135m-instruct"]
    assert plan.models[0].dtype == "auto"  # bfloat16 on a GPU, float32 on a CPU
    assert [c.name for c in plan.configs] == ["short", "medium"]
    assert {c.engine for c in plan.cases} == {"runtime"}
    assert plan.warmup <= 1 and plan.trials <= 2


def test_batch_size_list_expands_the_matrix(tmp_path):
    path = write(
        tmp_path,
        """\
models: [tiny-a, tiny-b]
engines: [runtime, transformers_eager]
batch_size: [1, 4]
configs:
  a: {prompt_tokens: 8, max_new_tokens: 4}
  b: {prompt_tokens: 16, max_new_tokens: 4, engines: [runtime], batch_size: 2}
""",
    )
    plan = build_plan(load_bench(path))
    got = [(c.model.id, c.engine, c.config.name, c.batch_size) for c in plan.cases]
    assert got == [
        ("tiny-a", "runtime", "a", 1),
        ("tiny-a", "runtime", "a", 4),
        ("tiny-a", "runtime", "b", 2),
        ("tiny-a", "transformers_eager", "a", 1),
        ("tiny-a", "transformers_eager", "a", 4),
        ("tiny-b", "runtime", "a", 1),
        ("tiny-b", "runtime", "a", 4),
        ("tiny-b", "runtime", "b", 2),
        ("tiny-b", "transformers_eager", "a", 1),
        ("tiny-b", "transformers_eager", "a", 4),
    ]
    assert plan.suite == "all" and plan.capacity == 20
    assert len({c.case_id for c in plan.cases}) == len(plan.cases)


def test_overrides_replace_the_files_settings(tmp_path):
    bench = load_bench(write(tmp_path, MINIMAL))
    plan = build_plan(
        bench,
        Overrides(engines=("runtime_eager",), batch_size=(2,), warmup=0, trials=1, seed=7, max_seq_len=64),
    )
    assert [(c.engine, c.batch_size, c.seed) for c in plan.cases] == [("runtime_eager", 2, 7)]
    assert (plan.warmup, plan.trials, plan.seed, plan.capacity) == (0, 1, 7, 64)
    # --model: a listed model keeps its entry; an unlisted one replaces the file's models
    assert build_plan(bench, Overrides(model="tiny")).models[0].weights == "random"
    other = build_plan(bench, Overrides(model="someone/else", weights="checkpoint")).models
    assert [(m.id, m.weights) for m in other] == [("someone/else", "checkpoint")]


def test_case_id_changes_with_what_changes_the_numbers(tmp_path):
    bench = load_bench(write(tmp_path, MINIMAL))
    base = build_plan(bench).cases[0].case_id
    assert build_plan(bench).cases[0].case_id == base  # stable across runs
    assert build_plan(bench, Overrides(trials=9, warmup=0)).cases[0].case_id == base
    assert build_plan(bench, Overrides(seed=1)).cases[0].case_id != base
    assert build_plan(bench, Overrides(dtype="float32")).cases[0].case_id != base


def test_adhoc_config_is_validated_like_the_file():
    config = config_from_flags(
        "p8_n4", {"prompt_tokens": 8, "max_new_tokens": 4, "temperature": 0.8, "top_k": None}
    )
    plan = build_plan(adhoc_bench("tiny", "auto", "auto", config))
    assert plan.suite == "adhoc" and plan.configs[0].temperature == 0.8 and plan.configs[0].top_k == 0
    with pytest.raises(ConfigError, match=r"command line: top_p: must be in \(0, 1\], got 1.5"):
        config_from_flags("x", {"prompt_tokens": 8, "max_new_tokens": 4, "top_p": 1.5})


@pytest.mark.parametrize(
    "text, message",
    [
        ("", r"bench.yaml: the file is empty"),
        ("models: [a\n", r"bench.yaml:2: not valid YAML"),
        ("- a\n- b\n", r"bench.yaml: expected a mapping, got list"),
        (
            MINIMAL + "trails: 3\n",
            r"bench.yaml:5: trails: unknown key 'trails' in the top level \(allowed: models,",
        ),
        (
            "configs: {a: {prompt_tokens: 8, max_new_tokens: 4}}\n",
            r"bench.yaml: missing the `models` section",
        ),
        ("models: [a]\n", r"missing the `configs` section"),
        ("models: []\n" + MINIMAL.split("\n", 2)[2], r"bench.yaml:1: models: expected a non-empty list"),
        (
            "models:\n  - {weights: random}\n" + MINIMAL.split("\n", 2)[2],
            r":2: models.0: a model needs an `id`",
        ),
        (
            "models:\n  - {id: a, weight: random}\n" + MINIMAL.split("\n", 2)[2],
            r":2: models.0.weight: unknown key 'weight' in models.0 \(allowed: id, weights, dtype\)",
        ),
        (
            "models:\n  - {id: a, weights: fake}\n" + MINIMAL.split("\n", 2)[2],
            r":2: models.0.weights: 'fake' is not one of auto, checkpoint, random",
        ),
        (
            "models:\n  - {id: a, dtype: int8}\n" + MINIMAL.split("\n", 2)[2],
            r"models.0.dtype: 'int8' is not one of auto, bfloat16, float16, float32",
        ),
        ("models: [a]\nconfigs: {}\n", r":2: configs: needs at least one config"),
        ("models: [a]\nconfigs: [a]\n", r":2: configs: expected a mapping, got list"),
        (
            "models: [a]\nconfigs:\n  a: {prompt_tokens: 8}\n",
            r":3: configs.a: missing `max_new_tokens`",
        ),
        (
            "models: [a]\nconfigs:\n  a:\n    prompt_tokens: 8\n    max_new_token: 4\n",
            r":5: configs.a.max_new_token: unknown key 'max_new_token' in configs.a \(allowed: prompt_tokens,",
        ),
        (
            "models: [a]\nconfigs:\n  a:\n    prompt_tokens: '8'\n    max_new_tokens: 4\n",
            r":4: configs.a.prompt_tokens: expected an integer, got str '8'",
        ),
        (
            "models: [a]\nconfigs:\n  a: {prompt_tokens: 0, max_new_tokens: 4}\n",
            r"configs.a.prompt_tokens: must be >= 1, got 0",
        ),
        (
            "models: [a]\nconfigs:\n  a: {prompt_tokens: 8, max_new_tokens: true}\n",
            r"configs.a.max_new_tokens: expected an integer, got bool True",
        ),
        (
            "models: [a]\nconfigs:\n  a: {prompt_tokens: 8, max_new_tokens: 4, temperature: -1}\n",
            r"configs.a.temperature: must be >= 0, got -1",
        ),
        (
            "models: [a]\nconfigs:\n  a: {prompt_tokens: 8, max_new_tokens: 4, temperature: hot}\n",
            r"configs.a.temperature: expected a number, got str 'hot'",
        ),
        (
            "models: [a]\nconfigs:\n  a: {prompt_tokens: 8, max_new_tokens: 4, top_k: -5}\n",
            r"configs.a.top_k: must be >= 0, got -5",
        ),
        (
            "models: [a]\nconfigs:\n  a: {prompt_tokens: 8, max_new_tokens: 4, top_p: 0}\n",
            r"configs.a.top_p: must be in \(0, 1\], got 0",
        ),
        (
            "models: [a]\nconfigs:\n  a: {prompt_tokens: 8, max_new_tokens: 4, repetition_penalty: 0}\n",
            r"configs.a.repetition_penalty: must be > 0, got 0",
        ),
        (
            "models: [a]\nconfigs:\n  a: {prompt_tokens: 8, max_new_tokens: 4, ignore_eos: 1}\n",
            r"configs.a.ignore_eos: expected true or false, got int 1",
        ),
        (
            "models: [a]\nconfigs:\n  a: {prompt_tokens: 8, max_new_tokens: 4, engines: [vllm]}\n",
            r"configs.a.engines.0: 'vllm' is not one of runtime, runtime_graph, runtime_eager",
        ),
        (
            "models: [a]\nconfigs:\n  a: {prompt_tokens: 8, max_new_tokens: 4, batch_size: [1, 0]}\n",
            r"configs.a.batch_size.1: must be >= 1, got 0",
        ),
        (
            "models: [a]\nconfigs:\n  a b: {prompt_tokens: 8, max_new_tokens: 4}\n",
            r":3: configs.a b: config names use",
        ),
        (MINIMAL + "suites:\n  q: [a, zzz]\n", r":6: suites.q.1: unknown config 'zzz' \(configs: a\)"),
        (MINIMAL + "suites:\n  q: a\n", r":6: suites.q: expected a non-empty list, got str 'a'"),
        (
            MINIMAL + "suites: {q: [a]}\nsuite: full\n",
            r":6: suite: suite 'full' is not defined under `suites`",
        ),
        (MINIMAL + "batch_size: [1, x]\n", r":5: batch_size.1: expected an integer, got str 'x'"),
        (MINIMAL + "batch_size: []\n", r"batch_size: expected an integer or a non-empty list"),
        (MINIMAL + "engines: runtime\n", r":5: engines: expected a non-empty list, got str 'runtime'"),
        (MINIMAL + "warmup: -1\n", r":5: warmup: must be >= 0, got -1"),
        (MINIMAL + "trials: 0\n", r":5: trials: must be >= 1, got 0"),
        (MINIMAL + "trials: 2.5\n", r":5: trials: expected an integer, got float 2.5"),
        (MINIMAL + "seed: abc\n", r":5: seed: expected an integer, got str 'abc'"),
        (MINIMAL + "max_seq_len: 1\n", r":5: max_seq_len: must be >= 2, got 1"),
        (MINIMAL + "seed: 1\nseed: 2\n", r":6: seed: duplicate key 'seed'"),
    ],
)
def test_schema_errors_name_file_key_and_line(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_bench(path)
    assert str(info.value).startswith(str(path))


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ConfigError, match="no such benchmark file"):
        load_bench(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_bench(tmp_path)


def test_max_seq_len_too_small_for_a_config(tmp_path):
    bench = load_bench(write(tmp_path, MINIMAL + "max_seq_len: 10\n"))
    with pytest.raises(ConfigError, match=r"bench.yaml: max_seq_len is 10 but config 'a' needs 12"):
        build_plan(bench)
    with pytest.raises(ConfigError, match=r"--max-seq-len is 11 but config 'a' needs 12"):
        build_plan(bench, Overrides(max_seq_len=11))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (Overrides(weights="fake"), "--weights must be one of"),
        (Overrides(dtype="int4"), "--dtype must be one of"),
        (Overrides(engines=("vllm",)), "--engine must be one of"),
        (Overrides(batch_size=(0,)), "--batch-size must be >= 1"),
        (Overrides(trials=0), "--trials must be >= 1"),
        (Overrides(warmup=-1), "--warmup must be >= 0"),
    ],
)
def test_bad_overrides(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_plan(load_bench(write(tmp_path, MINIMAL)), overrides)
