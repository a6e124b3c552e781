"""FileTokenizer (tokenizer.json + tokenizer_config.json + chat templates, no transformers) against
transformers' AutoTokenizer on the same folder: the embedded SmolLM2 tokenizer and small synthetic
folders that exercise special tokens, clean-up, chat-template features and where a template lives;
the folders load_tokenizer leaves to transformers; and that loading never imports transformers."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from runtime.tokenizer_files import FileTokenizer, load_tokenizer
from runtime.tokenizer_folder import OWN_CLASS_MODEL_TYPES

# the reading these files reproduce is transformers 5.24's; 5.17 (the GPU machine's) differs in
# these cases: it renders None-valued message keys, words some errors and special tokens otherwise
_OLDER = tuple(int(x) for x in version("transformers").split(".")[:2]) < (5, 24)
since_5_24 = pytest.mark.skipif(_OLDER, reason="transformers < 5.24 renders and reads these otherwise")

REPO = Path(__file__).resolve().parents[1]

TEXTS = [
    "Hello world",
    " leading space",
    "   three leading spaces",
    "trailing space ",
    "héllo wörld, ça va? 中文字符 and Ελληνικά",
    "emoji 🎉🤖 and a flag 🇫🇷",
    "<|im_start|>user\nhi<|im_end|>\n",
    "text<|im_end|>glued<|endoftext|>",
    "tabs\tand\n\nnewlines\r\n",
    "don't stop , ok ? yes !",
    "",
]

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 2+2?"},
    {"role": "assistant", "content": "4."},
    {"role": "user", "content": "And héllo 🎉 <b>&amp;</b>?"},
]


def _hf(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


def _added(tok) -> dict:
    return {
        i: (t.content, t.special, t.lstrip, t.rstrip, t.normalized, t.single_word)
        for i, t in tok.added_tokens_decoder.items()
    }


def _render_or_error(tok, messages, **kwargs):
    try:
        return tok.apply_chat_template(messages, tokenize=False, **kwargs)
    except Exception as e:  # both must fail the same way where one does
        return (type(e).__name__, str(e))


def assert_same_vocab(ours: FileTokenizer, hf) -> None:
    assert type(hf).__name__ == "TokenizersBackend"  # the class load_tokenizer says transformers picks
    assert len(ours) == len(hf)
    assert ours.all_special_ids == hf.all_special_ids
    assert ours.all_special_tokens == hf.all_special_tokens
    assert ours.special_tokens_map == hf.special_tokens_map
    assert _added(ours) == _added(hf)
    assert ours.chat_template == hf.chat_template


def assert_same_text(ours: FileTokenizer, hf, texts=TEXTS) -> None:
    for text in texts:
        for special in (True, False):
            ids = hf(text, add_special_tokens=special).input_ids
            assert ours(text, add_special_tokens=special).input_ids == ids, text
            for skip in (True, False):
                expected = hf.decode(ids, skip_special_tokens=skip)
                assert ours.decode(ids, skip_special_tokens=skip) == expected, text


# ---- the embedded SmolLM2 tokenizer ---------------------------------------------------------------
@pytest.fixture(scope="module")
def smollm2_folder() -> Path:
    from runtime.models.sources import embedded_gguf, gguf_folder

    return gguf_folder(embedded_gguf())


@pytest.fixture(scope="module")
def smollm2_pair(smollm2_folder):
    ours = load_tokenizer(smollm2_folder)
    assert isinstance(ours, FileTokenizer)
    return ours, _hf(smollm2_folder)


def test_smollm2_vocab_and_special_tokens(smollm2_pair):
    ours, hf = smollm2_pair
    assert_same_vocab(ours, hf)
    assert len(ours) == 49152 and ours.all_special_ids == [1, 2, 0]
    assert all(token.special for token in ours.added_tokens_decoder.values())


def test_smollm2_encode_decode(smollm2_pair):
    ours, hf = smollm2_pair
    assert_same_text(ours, hf)
    assert ours("Hi")["input_ids"] == ours("Hi").input_ids
    assert ours(["a b", "c"]).input_ids == hf(["a b", "c"]).input_ids


def test_smollm2_decode_any_ids(smollm2_pair):
    ours, hf = smollm2_pair
    rng = random.Random(0)
    specials = sorted(ours.added_tokens_decoder)
    for _ in range(200):
        ids = [rng.randrange(len(ours)) for _ in range(rng.randrange(1, 12))]
        ids.insert(rng.randrange(len(ids) + 1), rng.choice(specials))
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == hf.decode(ids, skip_special_tokens=skip), ids
    # one id, a batch, and byte pieces of a character cut in half (the streaming case)
    assert ours.decode(2) == hf.decode(2) == "<|im_end|>"
    assert ours.decode([[1, 30], [2]]) == hf.decode([[1, 30], [2]])
    pieces = hf("🎉", add_special_tokens=False).input_ids
    assert ours.decode(pieces[:1]) == hf.decode(pieces[:1])
    import torch

    assert ours.decode(torch.tensor(ids)) == hf.decode(torch.tensor(ids))


def test_smollm2_chat_template(smollm2_pair):
    ours, hf = smollm2_pair
    for messages in (MESSAGES, MESSAGES[1:], MESSAGES[1:2], MESSAGES[:3]):
        for prompt in (True, False):
            text = ours.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
            assert text == hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
            ids = ours.apply_chat_template(messages, add_generation_prompt=prompt)
            assert (
                ids.input_ids == hf.apply_chat_template(messages, add_generation_prompt=prompt)["input_ids"]
            )
            assert ours(text, add_special_tokens=False).input_ids == ids.input_ids
    assert "You are a helpful AI assistant named SmolLM" in ours.apply_chat_template(
        MESSAGES[1:2], tokenize=False
    )


def test_smollm2_copy_keeps_the_original(smollm2_pair):
    # tests swap templates on a deep copy; the original must keep its own
    ours, _ = smollm2_pair
    other = copy.deepcopy(ours)
    other.chat_template = "{{ messages[0]['content'] }}"
    assert other.apply_chat_template(MESSAGES[1:2], tokenize=False) == "What is 2+2?"
    assert ours.chat_template.startswith("{% for message in messages %}")
    assert other("Hello").input_ids == ours("Hello").input_ids


# ---- synthetic folders ----------------------------------------------------------------------------
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, hello there! it's a small world isn't it?",
    "héllo wörld 中文 🎉 tokens and more tokens, ones that repeat: the the the",
] * 20

FEATURES = """\
{%- if messages[0]['role'] == 'system' %}
  {%- set system = messages[0]['content'] %}
  {%- set messages = messages[1:] %}
{%- else %}
  {%- set system = none %}
{%- endif %}
{{ bos_token }}
{% if system %}[SYS]{{ system }}[/SYS]
{% endif %}
{% set ns = namespace(users=0, last='') %}
{% for m in messages %}
    {% if m['role'] not in ['user', 'assistant'] %}
        {{ raise_exception('unexpected role ' ~ m['role']) }}
    {% endif %}
    {% if m['role'] == 'user' %}{% set ns.users = ns.users + 1 %}{% endif %}
    <{{ m['role'] }}>{{ m['content'] }}
    {%- if m.reasoning_content is defined %}<think>{{ m.reasoning_content }}</think>{% endif %}
    {%- if m.tool_calls is defined %}{{ m.tool_calls | tojson }}{% endif %}
    {% if m.note is defined %}note:{{ m.note }}{% endif %}
    {% if not loop.last %}{{ eos_token }}
{% endif %}
{% endfor %}
{% if tools %}{{ tools | tojson(indent=2) }}{% endif %}
users={{ ns.users }} year={{ strftime_now('%Y') }} {{ dict(a=1, b='é<') | tojson }}
{% if image_token is defined %}{{ image_token }}{% endif %}
{% generation %}kept{% endgeneration %}
{% if add_generation_prompt %}<assistant>
{%- if enable_thinking is defined and enable_thinking is false %}<think></think>{% endif %}
{% endif %}"""

FEATURE_CHATS = [
    MESSAGES,
    MESSAGES[1:],
    [
        {"role": "user", "content": "weather in Paris?", "note": None},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"name": "get", "arguments": {"city": "Paris <&>"}}],
        },
        {"role": "assistant", "content": "sunny", "thinking": "look it up"},
        {"role": "user", "content": "thanks"},
    ],
]


def _bpe(post_bos: bool = True) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    if post_bos:
        bos = tok.token_to_id("<s>")
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
    return tok


def _word_level() -> Tokenizer:
    words = ["[UNK]", "[CLS]", "hello", ",", "world", ".", "it", "'s", "do", "n't", "?", "!", "ok", "'", "m"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["[UNK]", "[CLS]"])
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A", special_tokens=[("[CLS]", 1)])
    return tok


def _folder(path: Path, backend: Tokenizer, config: dict, files: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    backend.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    for name, content in (files or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else json.dumps(content)
        (path / name).write_text(text, encoding="utf-8")
    return path


def _token_dict(content: str, **flags) -> dict:
    """An AddedToken as configs save it (no "special": special_tokens_map.json's entries are special)."""
    return {
        "content": content,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "single_word": False,
        **flags,
    }


def _pair(folder: Path):
    ours = load_tokenizer(folder)
    assert isinstance(ours, FileTokenizer)
    return ours, _hf(folder)


BASE = {"tokenizer_class": "TokenizersBackend", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}


@since_5_24
@pytest.mark.parametrize("where", ["jinja", "config", "config-list"])
def test_template_features_in_each_place(tmp_path, where):
    config, files = dict(BASE), {}
    if where == "jinja":
        files["chat_template.jinja"] = FEATURES
    elif where == "config":
        config["chat_template"] = FEATURES
    else:
        config["chat_template"] = [
            {"name": "default", "template": FEATURES},
            {"name": "short", "template": "S"},
        ]
    ours, hf = _pair(_folder(tmp_path, _bpe(), config, files))
    assert_same_vocab(ours, hf)
    rendered = []
    for chat in FEATURE_CHATS:
        for kwargs in ({}, {"enable_thinking": False}, {"enable_thinking": True}, {"bos_token": "[B]"}):
            for prompt in (True, False):
                text = ours.apply_chat_template(chat, tokenize=False, add_generation_prompt=prompt, **kwargs)
                assert text == hf.apply_chat_template(
                    chat, tokenize=False, add_generation_prompt=prompt, **kwargs
                )
                rendered.append(text)
    # the features really ran: whitespace control, namespace, tojson without HTML escapes, aliases
    assert rendered[0].startswith(
        "<s>\n[SYS]You are terse.[/SYS]\n    <user>What is 2+2?</s>\n    <assistant>4.</s>\n"
    )
    assert "users=2 year=" in rendered[0] and '{"a": 1, "b": "é<"}' in rendered[0]
    assert '"Paris <&>"' in "".join(rendered) and "<think>look it up</think>" in "".join(rendered)
    assert "<assistant><think></think>" in "".join(rendered) and "[B]" in "".join(rendered)
    tools = [{"type": "function", "function": {"name": "get", "parameters": {"city": "str"}}}]
    assert ours.apply_chat_template(MESSAGES, tools=tools, tokenize=False) == hf.apply_chat_template(
        MESSAGES, tools=tools, tokenize=False
    )
    ids = ours.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=False)
    assert ids == hf.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=False)
    batch = ours.apply_chat_template([MESSAGES, MESSAGES[1:2]], tokenize=False)
    assert batch == hf.apply_chat_template([MESSAGES, MESSAGES[1:2]], tokenize=False)
    if where == "config-list":
        assert ours.apply_chat_template(MESSAGES, chat_template="short", tokenize=False) == "S"
        assert hf.apply_chat_template(MESSAGES, chat_template="short", tokenize=False) == "S"


@since_5_24
def test_template_errors_match(tmp_path):
    ours, hf = _pair(_folder(tmp_path, _bpe(), {**BASE, "chat_template": FEATURES}))
    bad_role = [{"role": "tool", "content": "x"}]
    error = _render_or_error(ours, bad_role)
    assert error == ("TemplateError", "unexpected role tool") == _render_or_error(hf, bad_role)
    assert _render_or_error(ours, []) == _render_or_error(hf, []) != _render_or_error(ours, MESSAGES)
    sneaky = "{% set ns = namespace(_x=1) %}{{ ns._x }}"
    assert _render_or_error(ours, MESSAGES, chat_template=sneaky)[0] == "SecurityError"
    assert _render_or_error(hf, MESSAGES, chat_template=sneaky)[0] == "SecurityError"
    escape = "{{ messages.__class__.__mro__ }}"
    assert _render_or_error(ours, MESSAGES, chat_template=escape)[0] == "SecurityError"
    assert _render_or_error(hf, MESSAGES, chat_template=escape)[0] == "SecurityError"


def test_template_files_and_config_precedence(tmp_path):
    # chat_template.jinja and additional_chat_templates/ beat the config's template
    files = {"chat_template.jinja": "J{{ messages[0].content }}", "additional_chat_templates/tool.jinja": "T"}
    ours, hf = _pair(_folder(tmp_path / "a", _bpe(), {**BASE, "chat_template": "C"}, files))
    assert ours.chat_template == hf.chat_template == {"default": "J{{ messages[0].content }}", "tool": "T"}
    assert ours.apply_chat_template(MESSAGES[1:], tokenize=False) == "JWhat is 2+2?"
    assert ours.apply_chat_template(MESSAGES, chat_template="tool", tokenize=False) == "T"
    # named templates with no default: an error in both unless one is named
    only_named = {**BASE, "chat_template": [{"name": "a", "template": "A"}, {"name": "b", "template": "B"}]}
    ours, hf = _pair(_folder(tmp_path / "b", _bpe(), only_named))
    assert _render_or_error(ours, MESSAGES)[0] == _render_or_error(hf, MESSAGES)[0] == "ValueError"
    assert _render_or_error(ours, MESSAGES, chat_template="b") == "B"
    # transformers' tokenizer never reads chat_template.json (a processor file), so neither do we
    legacy = {"chat_template.json": {"chat_template": "P"}}
    ours, hf = _pair(_folder(tmp_path / "c", _bpe(), dict(BASE), legacy))
    assert ours.chat_template is None and hf.chat_template is None
    ours, hf = _pair(_folder(tmp_path / "d", _bpe(), {**BASE, "chat_template": "C"}, legacy))
    assert ours.chat_template == hf.chat_template == "C"


@pytest.mark.parametrize("clean", [True, False, None])
def test_clean_up_spaces_word_level(tmp_path, clean):
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]", "cls_token": "[CLS]"}
    if clean is not None:
        config["clean_up_tokenization_spaces"] = clean
    ours, hf = _pair(_folder(tmp_path, _word_level(), config))
    assert_same_vocab(ours, hf)
    text = "hello , world . it 's ok ? do n't ! [CLS] ' m"
    assert_same_text(ours, hf, [text, "hello   world", "unknown words ."])
    decoded = ours.decode(hf(text).input_ids, skip_special_tokens=True)
    assert (decoded == "hello, world. it's ok? don't!'m") == bool(clean)
    assert ours.decode(hf(text).input_ids, clean_up_tokenization_spaces=not clean) == hf.decode(
        hf(text).input_ids, clean_up_tokenization_spaces=not clean
    )


@pytest.mark.parametrize("force", [False, True])
def test_clean_up_spaces_bpe(tmp_path, force):
    # transformers ignores the clean-up for BPE unless told to corrupt the output anyway
    config = {**BASE, "clean_up_tokenization_spaces": True}
    if force:
        config["clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"] = True
    ours, hf = _pair(_folder(tmp_path, _bpe(), config))
    text = "hello world , it 's small ! the dog ."
    assert_same_text(ours, hf, [text])
    assert (ours.decode(ours(text).input_ids, skip_special_tokens=True) == text) != force


@since_5_24
def test_special_tokens_from_the_config(tmp_path):
    # named tokens outside the vocabulary, extra and model-specific ones, AddedToken dicts, an added
    # token only the config lists, and a named token that tokenizer.json has as a plain added token
    backend = _bpe()
    backend.add_tokens([AddedToken("<plain>", special=False)])
    config = {
        "tokenizer_class": "TokenizersBackend",
        "bos_token": {"__type": "AddedToken", **_token_dict("<s>"), "special": True},
        "eos_token": "<|end|>",
        "unk_token": "<unk>",
        "pad_token": "<plain>",
        "mask_token": None,
        "additional_special_tokens": ["<|tool|>", "<s>", "<|end|>"],
        "image_token": "<|image|>",
        "audio_token": {"__type": "AddedToken", **_token_dict("<|audio|>"), "special": True},
        "added_tokens_decoder": {
            "400": {**_token_dict("<plain>", normalized=True), "special": False},
            "403": {**_token_dict("<|cfg|>", lstrip=True), "special": False},
        },
        "chat_template": FEATURES,
        "split_special_tokens": False,
    }
    ours, hf = _pair(_folder(tmp_path, backend, config))
    assert_same_vocab(ours, hf)
    assert {"<|end|>", "<unk>", "<|tool|>", "<|image|>", "<|cfg|>"} <= {
        t.content for t in ours.added_tokens_decoder.values()
    }
    assert ours.special_tokens_map["image_token"] == "<|image|>"
    # model-specific tokens keep transformers' order (AddedToken dicts first), which sets their new ids
    assert list(ours.special_tokens_map.items()) == list(hf.special_tokens_map.items())
    assert ours.convert_tokens_to_ids("<|audio|>") < ours.convert_tokens_to_ids("<|image|>")
    # the pad token, a plain added token, becomes special: skipped when decoding like the others
    plain = ours.convert_tokens_to_ids("<plain>")
    assert (
        ours.decode([plain], skip_special_tokens=True) == hf.decode([plain], skip_special_tokens=True) == ""
    )
    texts = ["a <|tool|> b <|image|>c <|cfg|> d<plain>e <|end|><|audio|>", "<s>hello</s><pad><unk>"]
    assert_same_text(ours, hf, texts + TEXTS)
    for chat in FEATURE_CHATS:
        assert ours.apply_chat_template(chat, tokenize=False) == hf.apply_chat_template(chat, tokenize=False)
    assert "<|image|>" in ours.apply_chat_template(MESSAGES, tokenize=False)


def test_legacy_special_tokens_map(tmp_path):
    # no added_tokens_decoder in the config: special_tokens_map.json overrides it, dicts included
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>", "unk_token": "<unk>"}
    files = {
        "special_tokens_map.json": {
            "bos_token": _token_dict("<s>"),
            "eos_token": _token_dict("<eos>", lstrip=True),
            "pad_token": "<pad>",
            "sep_token": "<sep>",
            "additional_special_tokens": ["<a1>", "<a2>"],
        }
    }
    backend = _bpe(post_bos=False)
    backend.add_tokens([AddedToken("<sep>", special=False)])
    ours, hf = _pair(_folder(tmp_path, backend, config, files))
    assert_same_vocab(ours, hf)
    assert ours.special_tokens_map["eos_token"] == "<eos>"
    assert_same_text(ours, hf, ["x <eos> y<a1><a2> <s><sep>", *TEXTS])
    # tokenizer.json's plain added token named as the separator turns special
    sep = ours.convert_tokens_to_ids("<sep>")
    assert ours.decode([sep], skip_special_tokens=True) == hf.decode([sep], skip_special_tokens=True) == ""


def test_split_special_tokens(tmp_path):
    ours, hf = _pair(_folder(tmp_path, _bpe(), {**BASE, "split_special_tokens": True}))
    assert_same_text(ours, hf, ["<s>hello</s>", *TEXTS])
    assert ours("</s>", add_special_tokens=False).input_ids != [ours.convert_tokens_to_ids("</s>")]


def test_no_post_processor(tmp_path):
    # transformers installs a template that adds nothing; add_bos_token is ignored beside tokenizer.json
    config = {**BASE, "add_bos_token": True, "add_eos_token": True}
    ours, hf = _pair(_folder(tmp_path, _bpe(post_bos=False), config))
    assert ours("hello").input_ids == ours("hello", add_special_tokens=False).input_ids
    assert_same_text(ours, hf)
    with_bos = load_tokenizer(_folder(tmp_path / "bos", _bpe(post_bos=True), config))
    assert with_bos("hello").input_ids[0] == with_bos.convert_tokens_to_ids("<s>")


# ---- folders left to transformers -----------------------------------------------------------------
def test_folders_left_to_transformers(tmp_path):
    def folder(name, config=None, files=None, backend=None):
        return _folder(tmp_path / name, backend or _bpe(), {**BASE, **(config or {})}, files)

    ok = folder("ok")
    assert load_tokenizer(ok) is not None
    # no tokenizer.json (e.g. only tokenizer.model), or no tokenizer_config.json
    (tmp_path / "spm").mkdir()
    (tmp_path / "spm" / "tokenizer.model").write_bytes(b"\0")
    assert load_tokenizer(tmp_path / "spm") is None
    (folder("noconfig") / "tokenizer_config.json").unlink()
    assert load_tokenizer(tmp_path / "noconfig") is None
    # a model's own class, remote code, patches and files read another way
    for name in ("GPT2Tokenizer", "Qwen2Tokenizer", "LlamaTokenizerFast", None):
        assert load_tokenizer(folder(f"class-{name}", {"tokenizer_class": name})) is None
    assert load_tokenizer(folder("remote", {"auto_map": {"AutoTokenizer": [None, "x.Tok"]}})) is None
    assert load_tokenizer(folder("mistral", {"fix_mistral_regex": True})) is None
    assert load_tokenizer(folder("tekken", files={"tekken.json": {}})) is None
    assert load_tokenizer(folder("legacy", files={"added_tokens.json": {"<x>": 400}})) is None
    assert load_tokenizer(folder("bad-token", {"eos_token": {"content": "</s>"}})) is None
    padded = _bpe()
    padded.enable_padding(pad_id=2, pad_token="<pad>")
    assert load_tokenizer(folder("padded", backend=padded)) is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{")
    (tmp_path / "broken" / "tokenizer_config.json").write_text(json.dumps(BASE))
    assert load_tokenizer(tmp_path / "broken") is None


def test_model_types_with_their_own_class(tmp_path):
    # a qwen2 folder naming the plain backend still gets transformers' Qwen2Tokenizer
    folder = _folder(tmp_path, _bpe(), dict(BASE), {"config.json": {"model_type": "qwen2"}})
    assert load_tokenizer(folder) is None
    assert type(_hf(folder)).__name__ == "Qwen2Tokenizer"
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert load_tokenizer(folder) is not None and type(_hf(folder)).__name__ == "TokenizersBackend"


def test_own_class_model_types_cover_transformers():
    # every model type for which the installed transformers overrides a plain tokenizer_class
    from transformers.models.auto import tokenization_auto as auto

    plain = {"TokenizersBackend", "PythonBackend", "PreTrainedTokenizer", "MistralCommonBackend"}
    overridden = {
        t
        for t in auto.MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS
        if (auto.TOKENIZER_MAPPING_NAMES.get(t) or "TokenizersBackend").removesuffix("Fast") not in plain
    }
    assert overridden <= OWN_CLASS_MODEL_TYPES


def test_loading_never_imports_transformers(tmp_path, smollm2_folder):
    synthetic = _folder(tmp_path, _bpe(), {**BASE, "chat_template": FEATURES})
    script = (
        "import sys\n"
        "from runtime.tokenizer_files import load_tokenizer\n"
        "for folder in sys.argv[1:]:\n"
        "    tok = load_tokenizer(folder)\n"
        "    text = tok.apply_chat_template([{'role': 'user', 'content': 'hi'}], tokenize=False)\n"
        "    tok.decode(tok(text).input_ids, skip_special_tokens=True)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'transformers'))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(synthetic), str(smollm2_folder)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_chat_options_other_than_their_defaults_are_left_to_transformers():
    """apply_chat_template's options that FileTokenizer offers only at transformers' defaults: taken
    out where they hold the default, refused (NotImplementedError) otherwise; others stay."""
    from runtime.chat_templates import take_default_options

    kwargs = {"padding": False, "max_length": None, "enable_thinking": True}
    take_default_options(kwargs)
    assert kwargs == {"enable_thinking": True}
    with pytest.raises(NotImplementedError, match="return_tensors"):
        take_default_options({"return_tensors": "pt"})
