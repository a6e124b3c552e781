"""config.json -> ModelSpec without transformers: the shipped configs, the tiny test configs and
hand-made variants (missing keys, legacy rope and sliding-window forms) must give the very spec that
transformers' own config classes give, and whatever is not understood must say so."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from tiny_configs import tiny_config

from runtime.errors import UnsupportedModelError
from runtime.models.config_json import NotUnderstood, config_view, spec_from_config_json
from runtime.models.loader import _hf_config
from runtime.models.sources import MODEL_CONFIGS, REPO_ROOT
from runtime.models.spec import ModelSpec

# config_json reproduces transformers 5.24's reading; 5.17 (the GPU machine's) reads these two
# otherwise (a flat rope_parameters on Gemma 3, an odd head_dim it still accepts)
_OLDER = tuple(int(x) for x in version("transformers").split(".")[:2]) < (5, 24)
DIFFERS_BEFORE_5_24 = {"gemma3-rope-parameters-flat", "odd-head-dim"}


def _skip_where_older_transformers_differs(request) -> None:
    if _OLDER and request.node.callspec.id in DIFFERS_BEFORE_5_24:
        pytest.skip("transformers < 5.24 reads this config otherwise")


SHIPPED = sorted(MODEL_CONFIGS.glob("*.json"))
FAMILIES = ("llama", "qwen2", "qwen3", "gemma3")
DROP = object()  # an edit value that removes the key


def _shipped(name: str) -> dict:
    return json.loads((MODEL_CONFIGS / f"{name}.json").read_text())


def _tiny(family: str) -> dict:
    return json.loads(tiny_config(family).to_json_string(use_diff=False))


BASES = {
    "llama": lambda: _shipped("Llama-3.2-1B-Instruct"),
    "qwen3": lambda: _shipped("Qwen3-1.7B"),
    "gemma3": lambda: _shipped("gemma-3-1b-it"),
    **{f"tiny-{f}": (lambda f=f: _tiny(f)) for f in FAMILIES},
}


def _write(folder: Path, data: dict) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps(data))
    return path


def _edited(base: str, edits: dict) -> dict:
    data = copy.deepcopy(BASES[base]())
    for key, value in edits.items():
        if value is DROP:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def _hf_spec(path: Path) -> ModelSpec:
    return ModelSpec.from_hf(_hf_config(path))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_configs_match_transformers(path):
    assert spec_from_config_json(path) == _hf_spec(path)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("use_diff", [True, False], ids=["diff", "full"])
def test_tiny_configs_match_transformers(tmp_path, family, use_diff):
    # use_diff leaves out every value equal to the class default, so the defaults are exercised too
    path = tmp_path / "config.json"
    tiny_config(family).to_json_file(path, use_diff=use_diff)
    assert spec_from_config_json(path) == _hf_spec(path)


def _sliding_count(spec: ModelSpec) -> int:
    return sum(w is not None for w in spec.sliding_window)


LLAMA3 = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
GEMMA_NESTED = {
    "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 2e6},
    "sliding_attention": {"rope_type": "default", "rope_theta": 2e4},
}
# (id, base, edits, a check on the spec that shows the variant reaches the path it is meant for)
VARIANTS = [
    ("llama-no-head-dim", "llama", {"head_dim": DROP}, lambda s: s.head_dim == 64),
    ("llama-no-tie", "llama", {"tie_word_embeddings": DROP}, lambda s: not s.tied_embeddings),
    (
        "llama-no-rope",
        "llama",
        {"rope_scaling": DROP, "rope_theta": DROP},
        lambda s: s.rope[0].theta == 10000.0 and s.rope[0].kind == "default",
    ),
    ("llama-theta-only", "llama", {"rope_scaling": None}, lambda s: s.rope[0].theta == 500000.0),
    (
        "llama-linear-type-key",
        "llama",
        {"rope_scaling": {"type": "linear", "factor": 4.0}},
        lambda s: s.rope[0].kind == "linear" and s.rope[0].factor == 4.0 and s.rope[0].theta == 500000.0,
    ),
    (
        "llama-linear-rope-type-key",
        "llama",
        {"rope_scaling": {"rope_type": "linear", "factor": 2.0}, "rope_theta": 20000.0},
        lambda s: s.rope[0].kind == "linear" and s.rope[0].theta == 20000.0,
    ),
    (
        # the pretraining length comes from max_position_embeddings, never from a top-level key
        "llama3-no-original-length",
        "llama",
        {"rope_scaling": LLAMA3, "original_max_position_embeddings": 4096},
        lambda s: s.rope[0].original_max_positions == 131072,
    ),
    (
        "llama-rope-parameters",
        "llama",
        {"rope_scaling": DROP, "rope_theta": DROP, "rope_parameters": {**LLAMA3, "rope_theta": 1e5}},
        lambda s: s.rope[0].kind == "llama3" and s.rope[0].theta == 1e5,
    ),
    (
        "llama-scaling-beats-parameters",
        "llama",
        {"rope_parameters": {"rope_type": "default", "rope_theta": 1e5}},
        lambda s: s.rope[0].kind == "llama3" and s.rope[0].theta == 500000.0,
    ),
    (
        "llama-bare",
        "llama",
        {
            k: DROP
            for k in (
                "architectures",
                "head_dim",
                "num_key_value_heads",
                "bos_token_id",
                "eos_token_id",
                "tie_word_embeddings",
                "hidden_act",
                "attention_bias",
                "max_position_embeddings",
                "rms_norm_eps",
                "rope_scaling",
                "rope_theta",
            )
        },
        lambda s: (s.kv_heads, s.eos_ids, s.bos_id, s.max_positions) == (32, (2,), 1, 2048),
    ),
    ("llama-kv-heads-null", "llama", {"num_key_value_heads": None}, lambda s: s.kv_heads == 32),
    (
        # keys no Llama field holds still become attributes that ModelSpec reads
        "llama-foreign-keys",
        "llama",
        {
            "hidden_activation": "gelu_pytorch_tanh",
            "final_logit_softcapping": 30.0,
            "layer_types": ["sliding_attention"] * 8 + ["full_attention"] * 8,
            "sliding_window": 1024,
        },
        lambda s: s.activation == "gelu_tanh" and s.final_softcap == 30.0 and _sliding_count(s) == 8,
    ),
    (
        "qwen3-sliding",
        "qwen3",
        {"use_sliding_window": True, "sliding_window": 2048, "max_window_layers": 20},
        lambda s: s.sliding_window[:20] == (None,) * 20 and s.sliding_window[20:] == (2048,) * 8,
    ),
    (
        "qwen3-sliding-default-window",
        "qwen3",
        {"use_sliding_window": True, "sliding_window": DROP, "max_window_layers": 26},
        lambda s: s.sliding_window[26:] == (4096, 4096),
    ),
    (
        "qwen3-sliding-off",
        "qwen3",
        {"use_sliding_window": False, "sliding_window": 2048, "max_window_layers": 0},
        lambda s: _sliding_count(s) == 0,
    ),
    (
        "qwen3-no-rope",
        "qwen3",
        {"rope_scaling": DROP, "rope_theta": DROP},
        lambda s: s.rope[0].theta == 10000.0,
    ),
    (
        "qwen3-linear",
        "qwen3",
        {"rope_scaling": {"rope_type": "linear", "factor": 2.0}},
        lambda s: s.rope[0].kind == "linear" and s.rope[0].theta == 1e6,
    ),
    (
        # Qwen3Config defaults head_dim to 128 whatever hidden_size / heads is
        "qwen3-no-head-dim",
        "tiny-qwen3",
        {"head_dim": DROP},
        lambda s: s.head_dim == 128,
    ),
    (
        # and num_key_value_heads to 32, not to the head count
        "qwen3-no-kv-heads",
        "qwen3",
        {"num_attention_heads": 64, "num_key_value_heads": DROP},
        lambda s: s.kv_heads == 32,
    ),
    (
        "qwen3-no-token-ids",
        "qwen3",
        {"bos_token_id": DROP, "eos_token_id": DROP, "tie_word_embeddings": DROP},
        lambda s: s.eos_ids == () and s.bos_id is None and not s.tied_embeddings,
    ),
    (
        "qwen2-sliding-on",
        "tiny-qwen2",
        {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 1, "layer_types": DROP},
        lambda s: s.sliding_window == (None, 16, 16),
    ),
    (
        "qwen2-sliding-off",
        "tiny-qwen2",
        {"use_sliding_window": False, "sliding_window": 16, "max_window_layers": 1, "layer_types": DROP},
        lambda s: s.sliding_window == (None, None, None),
    ),
    (
        "qwen2-explicit-layer-types",
        "tiny-qwen2",
        {
            "use_sliding_window": True,
            "sliding_window": 16,
            "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
        },
        lambda s: s.sliding_window == (16, None, 16),
    ),
    ("qwen2-head-dim-key", "tiny-qwen2", {"head_dim": 32}, lambda s: s.head_dim == 32),
    ("qwen2-no-head-dim", "tiny-qwen2", {"head_dim": DROP}, lambda s: s.head_dim == 16),
    (
        "qwen2-legacy-rope",
        "tiny-qwen2",
        {"rope_parameters": DROP, "rope_scaling": {"type": "linear", "factor": 2.0}, "rope_theta": 5e5},
        lambda s: s.rope[0].kind == "linear" and s.rope[0].theta == 5e5,
    ),
    (
        "qwen2-no-rope",
        "tiny-qwen2",
        {"rope_parameters": DROP, "num_key_value_heads": None},
        lambda s: s.rope[0].theta == 10000.0 and s.kv_heads == 4,
    ),
    (
        # sliding_window_pattern 6 by default: every sixth layer is global
        "gemma3-no-pattern",
        "gemma3",
        {"sliding_window_pattern": DROP},
        lambda s: [i for i, w in enumerate(s.sliding_window) if w is None] == [5, 11, 17, 23],
    ),
    ("gemma3-pattern-2", "gemma3", {"sliding_window_pattern": 2}, lambda s: _sliding_count(s) == 13),
    (
        "gemma3-no-local-freq",
        "gemma3",
        {"rope_local_base_freq": DROP, "rope_theta": 5e5},
        lambda s: s.rope[0].theta == 10000.0 and s.rope[5].theta == 5e5,
    ),
    (
        "gemma3-no-theta",
        "gemma3",
        {"rope_theta": DROP, "rope_local_base_freq": 2e4},
        lambda s: s.rope[0].theta == 2e4 and s.rope[5].theta == 1e6,
    ),
    (
        "gemma3-rope-scaling",
        "gemma3",
        {"rope_scaling": {"rope_type": "linear", "factor": 8.0}},
        lambda s: s.rope[5].kind == "linear" and s.rope[5].factor == 8.0 and s.rope[0].kind == "default",
    ),
    (
        # merged into a dict that already says rope_type "default", a legacy "type" loses
        "gemma3-rope-scaling-type-key",
        "gemma3",
        {"rope_scaling": {"type": "linear", "factor": 8.0}},
        lambda s: s.rope[5].factor == 8.0,
    ),
    (
        "gemma3-layer-types",
        "gemma3",
        {"layer_types": ["full_attention", "sliding_attention"] * 13, "sliding_window_pattern": DROP},
        lambda s: s.sliding_window[:2] == (None, 512),
    ),
    (
        # fewer layers than the pattern: no global layer, its rope entry left as written
        "gemma3-all-sliding",
        "gemma3",
        {"num_hidden_layers": 4, "rope_scaling": {"rope_type": "linear", "factor": 8.0}},
        lambda s: _sliding_count(s) == 4,
    ),
    (
        "gemma3-defaults",
        "gemma3",
        {
            k: DROP
            for k in (
                "head_dim",
                "query_pre_attn_scalar",
                "hidden_activation",
                "tie_word_embeddings",
                "sliding_window",
                "num_key_value_heads",
                "bos_token_id",
                "eos_token_id",
                "max_position_embeddings",
            )
        },
        lambda s: (
            (s.head_dim, s.kv_heads, s.sliding_window[0], s.eos_ids, s.bos_id, s.tied_embeddings)
            == (256, 4, 4096, (1,), 2, True)
        ),
    ),
    (
        "gemma3-rope-parameters-nested",
        "gemma3",
        {"rope_parameters": GEMMA_NESTED, "rope_theta": DROP, "rope_local_base_freq": DROP},
        lambda s: s.rope[5].theta == 2e6 and s.rope[5].kind == "linear" and s.rope[0].theta == 2e4,
    ),
    (
        "gemma3-rope-parameters-flat",
        "gemma3",
        {"rope_parameters": {"rope_type": "default", "rope_theta": 5e5}},
        lambda s: s.rope[5].theta == 1e6,
    ),
    ("gemma3-softcap", "gemma3", {"final_logit_softcapping": 30.0}, lambda s: s.final_softcap == 30.0),
]


@pytest.mark.parametrize("base, edits, check", [v[1:] for v in VARIANTS], ids=[v[0] for v in VARIANTS])
def test_variants_match_transformers(request, tmp_path, base, edits, check):
    _skip_where_older_transformers_differs(request)
    path = _write(tmp_path, _edited(base, edits))
    ours = spec_from_config_json(path)
    assert ours == _hf_spec(path)
    assert check(ours)


def test_folder_path_reads_its_config_json(tmp_path):
    _write(tmp_path, _shipped("gemma-3-1b-it"))
    assert spec_from_config_json(tmp_path) == spec_from_config_json(MODEL_CONFIGS / "gemma-3-1b-it.json")


def test_view_keeps_no_consumed_rope_keys():
    # from_hf falls back to a rope_theta attribute; transformers consumes the key, so must the view
    view = config_view(_shipped("Llama-3.2-1B-Instruct"))
    assert not hasattr(view, "rope_theta") and not hasattr(view, "rope_scaling")


@pytest.mark.parametrize(
    "data",
    [
        {"model_type": "mistral", "architectures": ["MistralForCausalLM"], "hidden_size": 64},
        {"architectures": ["LlamaForCausalLM"], "hidden_size": 64},
        {
            "model_type": "gemma3",
            "architectures": ["Gemma3ForConditionalGeneration"],
            "text_config": {"model_type": "gemma3_text", "hidden_size": 64},
        },
        _edited("llama", {"text_config": {"hidden_size": 64}}),
        _edited("llama", {"architectures": ["Qwen3ForCausalLM"]}),
        _edited("gemma3", {"use_bidirectional_attention": True}),
        _edited("llama", {"partial_rotary_factor": 0.5}),
        _edited("gemma3", {"layer_types": ["attention"] * 26}),
        [1, 2, 3],
    ],
    ids=[
        "unknown-model-type",
        "no-model-type",
        "multimodal-wrapper",
        "text-config",
        "architecture-of-another-type",
        "bidirectional",
        "partial-rotary",
        "legacy-layer-type-name",
        "not-an-object",
    ],
)
def test_not_understood(tmp_path, data):
    with pytest.raises(NotUnderstood):
        spec_from_config_json(_write(tmp_path, data))


@pytest.mark.parametrize(
    "base, scaling",
    [
        ("qwen3", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}),
        ("llama", {"rope_type": "dynamic", "factor": 2.0}),
        ("gemma3", {"rope_type": "longrope", "short_factor": [1.0], "long_factor": [1.0], "factor": 2.0}),
    ],
    ids=["yarn", "dynamic", "longrope"],
)
def test_unsupported_rope_type_is_not_understood(tmp_path, base, scaling):
    path = _write(tmp_path, _edited(base, {"rope_scaling": scaling}))
    with pytest.raises(NotUnderstood):
        spec_from_config_json(path)
    # the transformers fallback refuses it too, with the user-facing error
    with pytest.raises(UnsupportedModelError):
        _hf_spec(path)


@pytest.mark.parametrize(
    "base, edits",
    [
        ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}),
        ("llama", {"rope_scaling": {"rope_type": "linear"}}),
        ("llama", {"rms_norm_eps": 0}),
        ("qwen3", {"hidden_size": "2048"}),
        ("qwen3", {"head_dim": None}),
        ("gemma3", {"query_pre_attn_scalar": 256.0}),
        ("gemma3", {"layer_types": ["full_attention"] * 3}),
        ("gemma3", {"sliding_window_pattern": None}),
        ("llama", {"hidden_size": 2050}),
        ("tiny-qwen3", {"head_dim": 33}),
    ],
    ids=[
        "llama3-without-freq-factors",
        "linear-without-factor",
        "int-norm-eps",
        "str-hidden-size",
        "null-head-dim",
        "float-query-scalar",
        "layer-types-count",
        "null-pattern",
        "hidden-not-multiple-of-heads",
        "odd-head-dim",
    ],
)
def test_configs_transformers_refuses_are_not_understood(request, tmp_path, base, edits):
    _skip_where_older_transformers_differs(request)
    path = _write(tmp_path, _edited(base, edits))
    with pytest.raises(NotUnderstood):
        spec_from_config_json(path)
    with pytest.raises(Exception):  # noqa: B017 - each refusal has its own transformers error type
        _hf_config(path)


def test_reads_without_importing_transformers():
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from runtime.models.config_json import spec_from_config_json\n"
        "spec = spec_from_config_json(Path('configs/models/Qwen3-1.7B.json'))\n"
        "assert spec.family == 'qwen3' and spec.layers == 28, spec\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
