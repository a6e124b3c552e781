"""A model folder's tokenizer built from its files with the `tokenizers` library and jinja2 alone.

transformers' AutoTokenizer costs seconds of imports at every start. Where a folder's files say that
transformers would serve tokenizer.json as it is (its plain TokenizersBackend class), FileTokenizer
rebuilds the same thing: the same added and special tokens, ids, decoded text and chat prompts
(checked against transformers 5.24 in tests/test_tokenizer_files.py). Every other folder is left to
transformers: load_tokenizer returns None.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, processors

NAMED_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# tokenizer_class values that transformers serves with its plain backend, which reads tokenizer.json as is
PLAIN_CLASSES = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast"})
# model types whose own tokenizer class AutoTokenizer picks even when tokenizer_class names the plain
# backend; those classes rebuild the pipeline from the vocabulary, which is not reproduced here
OWN_CLASS_MODEL_TYPES = frozenset(
    {"qwen2", "qwen3_5", "qwen3_5_moe", "qwen3_5_moe_text", "qwen4_exp", "siglip2", "hyperclovax_vision_v2"}
)
# tokenizer_config.json keys that make transformers load or patch the tokenizer in other ways
UNSUPPORTED_KEYS = ("auto_map", "fast_tokenizer_files", "fix_mistral_regex", "model_specific_special_tokens")
# apply_chat_template options of transformers that only these defaults are offered for
CHAT_DEFAULTS = {
    "continue_final_message": False,
    "sanitize_control_tokens": False,
    "return_assistant_tokens_mask": False,
    "padding": False,
    "truncation": False,
    "max_length": None,
    "return_tensors": None,
    "tokenizer_kwargs": None,
}


class Encoded(dict):
    """What calling the tokenizer gives: input_ids as a key and as an attribute."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _added_token(value: Any) -> Any:
    """Saved configs write an AddedToken as a dict tagged "__type"; anything else stays as it is."""
    if isinstance(value, dict) and value.get("__type") == "AddedToken":
        return AddedToken(**{k: v for k, v in value.items() if k != "__type"})
    if isinstance(value, list):
        return [_added_token(v) for v in value]
    if isinstance(value, dict):
        return {k: _added_token(v) for k, v in value.items()}
    return value


def _is_token(value: Any) -> bool:
    return isinstance(value, (str, AddedToken))


def _chat_templates(folder: Path) -> dict[str, str]:
    """chat_template.jinja (as "default") and additional_chat_templates/*.jinja; both beat the config's."""
    templates = {}
    if (folder / "chat_template.jinja").is_file():
        templates["default"] = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    extra = folder / "additional_chat_templates"
    if extra.is_dir():
        for path in extra.glob("*.jinja"):
            templates[path.name.removesuffix(".jinja")] = path.read_text(encoding="utf-8")
    return templates


def _plain_backend(folder: Path, config: Any, model: Any) -> bool:
    """Whether AutoTokenizer would build its plain backend straight from tokenizer.json."""
    if not isinstance(config, dict) or not isinstance(model, dict):
        return False
    if config.get("tokenizer_class") not in PLAIN_CLASSES or config.get("init_inputs"):
        return False
    if any(key in config for key in UNSUPPORTED_KEYS):
        return False
    # a model name can also send AutoTokenizer to a model's own class; tekken.json to Mistral's backend
    if model.get("model_type") in OWN_CLASS_MODEL_TYPES or "model_name" in model:
        return False
    return not (folder / "tekken.json").exists()


def _special_tokens(folder: Path, config: dict, backend: Tokenizer) -> tuple[dict, list, dict]:
    """The special and added tokens transformers derives from tokenizer_config.json (and, in older
    folders, special_tokens_map.json and tokenizer.json), in its order: (named special tokens, then
    model-specific ones such as an image token; extra special tokens; added tokens by id).

    (transformers also swaps a named token for the added token of the same text; nothing seen
    from outside depends on which of the two objects is kept.)"""
    config = dict(config)
    if "additional_special_tokens" in config and not config.get("extra_special_tokens"):
        config["extra_special_tokens"] = config.pop("additional_special_tokens")
    # other *_token keys with text name model-specific special tokens
    late = {
        k: config.pop(k)
        for k in list(config)
        if k not in NAMED_TOKENS and k.endswith("_token") and isinstance(config[k], str)
    }
    if isinstance(config.get("extra_special_tokens"), dict):
        late.update(config.pop("extra_special_tokens"))

    added: dict[int, AddedToken] = {}
    if "added_tokens_decoder" in config:
        for idx, token in config["added_tokens_decoder"].items():
            added[int(idx)] = AddedToken(**token) if isinstance(token, dict) else token
    else:
        # older folders: special_tokens_map.json overrides the config, tokenizer.json lists the added tokens
        if (folder / "added_tokens.json").exists():
            raise ValueError("added_tokens.json is not supported")
        if (folder / "special_tokens_map.json").is_file():
            for key, value in _read_json(folder / "special_tokens_map.json").items():
                if isinstance(value, dict) and key != "extra_special_tokens":
                    value = AddedToken(**{k: v for k, v in value.items() if k != "special"}, special=True)
                elif key == "extra_special_tokens" and isinstance(value, list):
                    merged = list(config.get("extra_special_tokens") or [])
                    for token in value:
                        token = AddedToken(**token, special=True) if isinstance(token, dict) else token
                        if token not in merged:
                            merged.append(token)
                    value = merged
                config[key] = value
            if isinstance(config.get("extra_special_tokens"), dict):
                late.update(config.pop("extra_special_tokens"))
        added = backend.get_added_tokens_decoder()  # tokenizer.json's added tokens, as fresh copies

    config, late = _added_token(config), _added_token(late)
    if "additional_special_tokens" in config and "extra_special_tokens" not in config:
        config["extra_special_tokens"] = config.pop("additional_special_tokens")

    named: dict[str, Any] = dict.fromkeys(NAMED_TOKENS)
    extra: list = []
    early = {}  # *_token keys whose AddedToken dicts only now read as tokens come before the text ones
    for key, value in config.items():
        if key in NAMED_TOKENS and value is not None:
            named[key] = value
        elif key == "extra_special_tokens" and value is not None:
            if not isinstance(value, (list, tuple)):
                raise ValueError("extra_special_tokens must be a list here")
            extra = list(value)
        elif key not in NAMED_TOKENS and key.endswith("_token") and _is_token(value):
            early[key] = value
    model_specific = {**early, **late}
    if any(key in NAMED_TOKENS for key in model_specific):
        raise ValueError("a model-specific token may not redefine a named one")
    named.update(model_specific)
    if not all(v is None or _is_token(v) for v in named.values()) or not all(map(_is_token, extra)):
        raise ValueError("special tokens must be strings or AddedToken dicts")
    return named, extra, added


def _add_missing_tokens(backend: Tokenizer, named: dict, extra: list, added: dict) -> None:
    """Add the config's added tokens and any special token the vocabulary lacks, in transformers'
    order (ids of new tokens depend on it) and with its flags (a named token is always special)."""
    to_add = [token for _, token in sorted(added.items(), key=lambda item: item[0])]
    known = [t.content for _, t in sorted(backend.get_added_tokens_decoder().items())] + [
        str(t) for t in to_add
    ]
    for value in named.values():
        if value is not None and str(value) not in known and value not in to_add:
            to_add.append(value)
    for token in extra:
        if str(token) not in known and token not in to_add:
            to_add.append(token)
    if not to_add:
        return
    named_text = [str(v) for v in named.values() if v]
    tokens = []
    for token in to_add:
        if isinstance(token, str):
            token = AddedToken(token, special=True)
        elif not token.special and str(token) in named_text:
            token.special = True
        tokens.append(token)
    backend.add_tokens(tokens)


# ---- chat templates -------------------------------------------------------------------------------
def _jinja_version_ok(version: str) -> bool:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts) >= (3, 1, 6)


@lru_cache
def _compile(template: str):
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if not _jinja_version_ok(jinja2.__version__):
        # older releases have known sandbox escapes, and chat templates are untrusted code
        raise ImportError(f"chat templates need jinja2>=3.1.6, found {jinja2.__version__}")

    class GenerationBlock(Extension):
        """{% generation %} marks assistant text for training masks; rendering only keeps its body."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # jinja's own tojson escapes HTML characters, which chat prompts must keep as they are
        return json.dumps(
            value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
        )

    def strftime_now(fmt):
        return datetime.now().strftime(fmt)

    def check_name(name):
        # dunder and private names would reach CPython internals through a namespace
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a chat template cannot set {name!r} on a namespace")

    class SafeNamespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):
            self, rest = args[0], args[1:]
            attrs = dict(*rest, **kwargs)
            for name in attrs:
                check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            check_name(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

    class SafeDict:
        """`dict(...)` and `dict.fromkeys(...)` without handing the dict type itself to the template."""

        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now, dict=SafeDict())
    env.globals["namespace"] = SafeNamespace
    return env.from_string(template)


def _as_dicts(value: Any) -> Any:
    """Message objects (dataclasses, pydantic models) and those nested in them, as plain dicts."""
    if isinstance(value, Mapping):
        return {k: _as_dicts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_dicts(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_as_dicts(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _as_dicts(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _as_dicts(value.model_dump())
    return value


def _plain(value: Any) -> Any:
    """What a template may see: JSON-like values only (their subclasses could carry unsafe methods);
    any other object becomes the text "<TypeName>"."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    numpy = sys.modules.get("numpy")  # a numpy scalar exists only once numpy is imported
    if numpy is not None and isinstance(value, numpy.generic):
        return _plain(value.item())  # by its Python value: np.bool_(False) must stay false
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


def _with_reasoning_aliases(message: dict) -> dict:
    """Templates read a message's reasoning as reasoning_content (gpt-oss's as thinking): fill both
    from whichever of the names it came under."""
    reasoning = next((message[k] for k in REASONING_KEYS if message.get(k) is not None), None)
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


def _messages(conversation: Any) -> list[dict]:
    messages = _as_dicts(getattr(conversation, "messages", conversation))
    out = []
    for message in messages:
        if not isinstance(message, dict):
            raise TypeError(
                f"Chat messages should be dicts, dataclasses or pydantic models, but got {message!r}."
            )
        # keys set to None (content=None from some APIs) read as missing, which templates handle
        out.append({k: v for k, v in message.items() if v is not None})
    return out


# ---- the tokenizer --------------------------------------------------------------------------------
class FileTokenizer:
    """The subset of transformers' tokenizer API the runtime uses, with transformers' results."""

    def __init__(
        self,
        backend: Tokenizer,
        named: dict[str, str | AddedToken | None],
        extra: list[str | AddedToken],
        chat_template: str | dict[str, str] | None = None,
        clean_up_tokenization_spaces: bool = False,
        clean_up_bpe: bool = False,
        name_or_path: str = "",
    ):
        self._backend = backend
        self._named = named
        self._extra = extra
        self.chat_template = chat_template
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self._clean_up_bpe = clean_up_bpe
        self.name_or_path = name_or_path

    @classmethod
    def from_folder(cls, folder: Path, config: dict) -> FileTokenizer:
        """Build from the folder's files the way transformers' TokenizersBackend does."""
        backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        if backend.padding is not None or backend.truncation is not None:
            raise ValueError("padding or truncation saved in tokenizer.json is not supported")
        config = {
            k: v for k, v in config.items() if k not in ("tokenizer_class", "add_bos_token", "add_eos_token")
        }
        templates = _chat_templates(folder)
        if templates:
            config["chat_template"] = templates["default"] if list(templates) == ["default"] else templates
        named, extra, added = _special_tokens(folder, config, backend)

        chat_template = config.get("chat_template")
        if isinstance(chat_template, (list, tuple)):
            chat_template = {entry["name"]: entry["template"] for entry in chat_template}
        backend.encode_special_tokens = bool(config.get("split_special_tokens", False))
        _add_missing_tokens(backend, named, extra, added)
        if backend.post_processor is None:
            # transformers installs a template that adds nothing (add_bos/eos_token are ignored here)
            backend.post_processor = processors.TemplateProcessing(
                single="$A:0", pair="$A:0 $B:1", special_tokens=[]
            )
        return cls(
            backend,
            named,
            extra,
            chat_template=chat_template,
            clean_up_tokenization_spaces=config.get("clean_up_tokenization_spaces", False),
            clean_up_bpe=config.get(
                "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False
            ),
            name_or_path=str(folder),
        )

    # ---- vocabulary ---------------------------------------------------------------------------
    @property
    def backend_tokenizer(self) -> Tokenizer:
        return self._backend

    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return self._backend.get_added_tokens_decoder()

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """Named special tokens as text (bos_token, eos_token, ..., then model-specific ones)."""
        return {key: str(value) for key, value in self._named.items() if value is not None}

    @property
    def all_special_tokens(self) -> list[str]:
        texts = [str(v) for v in self._named.values() if v is not None] + [str(t) for t in self._extra]
        return list(dict.fromkeys(texts))

    @property
    def all_special_ids(self) -> list[int]:
        return [self.convert_tokens_to_ids(token) for token in self.all_special_tokens]

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | None | list[int | None]:
        if isinstance(tokens, str):
            found = self._backend.token_to_id(tokens)
            if found is None and self._named.get("unk_token") is not None:
                return self._backend.token_to_id(str(self._named["unk_token"]))
            return found
        return [self.convert_tokens_to_ids(token) for token in tokens]

    # ---- text <-> ids -------------------------------------------------------------------------
    def __call__(self, text: str | list[str], add_special_tokens: bool = True) -> Encoded:
        if isinstance(text, str):
            return Encoded(input_ids=self.encode(text, add_special_tokens))
        return Encoded(input_ids=[self.encode(t, add_special_tokens) for t in text])

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._backend.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids

    def decode(
        self,
        token_ids: Any,
        skip_special_tokens: bool = False,
        clean_up_tokenization_spaces: bool | None = None,
    ) -> str | list[str]:
        ids = _to_list(token_ids)
        if isinstance(ids, list) and ids and isinstance(ids[0], (list, tuple)):
            return [self.decode(seq, skip_special_tokens, clean_up_tokenization_spaces) for seq in ids]
        if isinstance(ids, int):
            ids = [ids]
        text = self._backend.decode(ids, skip_special_tokens=skip_special_tokens)
        clean = (
            self.clean_up_tokenization_spaces
            if clean_up_tokenization_spaces is None
            else clean_up_tokenization_spaces
        )
        # transformers skips the clean-up for BPE models, where it would eat real spaces before punctuation
        if clean and (type(self._backend.model).__name__ != "BPE" or self._clean_up_bpe):
            text = _clean_up(text)
        return text

    # ---- chat ---------------------------------------------------------------------------------
    def get_chat_template(self, chat_template: str | None = None, tools: list | None = None) -> str:
        if isinstance(self.chat_template, dict):
            templates = self.chat_template
            if chat_template is not None and chat_template in templates:
                return templates[chat_template]
            if chat_template is None:
                if tools is not None and "tool_use" in templates:
                    return templates["tool_use"]
                if "default" in templates:
                    return templates["default"]
                raise ValueError(
                    "This model has multiple chat templates with no default specified! Please either pass "
                    "a chat template or the name of the template you wish to use to the `chat_template` "
                    f"argument. Available template names are {sorted(templates)}."
                )
            return chat_template
        if chat_template is None:
            if self.chat_template is None:
                raise ValueError(
                    "Cannot use chat template functions because tokenizer.chat_template is not set"
                )
            return self.chat_template
        return chat_template

    def apply_chat_template(
        self,
        conversation: Any,
        tools: list[dict] | None = None,
        documents: list[dict] | None = None,
        chat_template: str | None = None,
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        return_dict: bool = True,
        **kwargs,
    ) -> Any:
        """Render (and by default encode, without added special tokens) a conversation or a batch of them."""
        for name, default in CHAT_DEFAULTS.items():
            if name in kwargs:
                if kwargs.pop(name) != default:
                    raise NotImplementedError(f"apply_chat_template({name}=...) is left to transformers")
        template = self.get_chat_template(chat_template, tools)
        if isinstance(conversation, (list, tuple)) and len(conversation) == 0:
            raise ValueError(
                "Cannot apply chat template to an empty conversation. Provide at least one message."
            )
        batched = isinstance(conversation, (list, tuple)) and (
            isinstance(conversation[0], (list, tuple)) or hasattr(conversation[0], "messages")
        )
        chats = [_messages(c) for c in (conversation if batched else [conversation])]

        if tools is not None:
            if not all(isinstance(tool, dict) for tool in tools):
                raise NotImplementedError(
                    "tools as Python functions are left to transformers; pass JSON schemas"
                )
        if documents is not None and not all(isinstance(doc, dict) for doc in documents):
            raise TypeError("Documents should be a list of dicts with 'title' and 'text' keys!")
        variables = _plain({**self.special_tokens_map, **kwargs})  # the caller's values beat the tokens'
        compiled = _compile(template)
        rendered = []
        for chat in chats:
            chat = [_with_reasoning_aliases(m) for m in _plain(chat)]
            rendered.append(
                compiled.render(
                    messages=chat,
                    tools=_plain(tools),
                    documents=_plain(documents),
                    add_generation_prompt=add_generation_prompt,
                    **variables,
                )
            )
        if not tokenize:
            return rendered if batched else rendered[0]
        ids = [self.encode(text, add_special_tokens=False) for text in rendered]
        ids = ids if batched else ids[0]
        return Encoded(input_ids=ids) if return_dict else ids

    def __repr__(self) -> str:
        special = self.special_tokens_map
        return f"FileTokenizer(name_or_path={self.name_or_path!r}, size={len(self)}, special={special})"


def _to_list(value: Any) -> Any:
    """Tensors and arrays (and lists of them) as plain Python ints and lists."""
    if callable(getattr(value, "tolist", None)):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_to_list(v) for v in value]
    return value


def _clean_up(text: str) -> str:
    """transformers' clean_up_tokenization: drop the spaces that word-piece decoding leaves before
    punctuation and English contractions."""
    for spaced, joined in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(spaced, joined)
    return text


def load_tokenizer(folder: Path) -> FileTokenizer | None:
    """The folder's tokenizer without transformers, or None where transformers must build it: no
    tokenizer.json or tokenizer_config.json, a tokenizer class other than the plain backend, remote
    code, or anything else whose result here could differ from AutoTokenizer's."""
    folder = Path(folder)
    if not (folder / "tokenizer.json").is_file() or not (folder / "tokenizer_config.json").is_file():
        return None
    try:
        config = _read_json(folder / "tokenizer_config.json")
        model = _read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    except (OSError, ValueError):
        return None
    if not _plain_backend(folder, config, model):
        return None
    try:
        return FileTokenizer.from_folder(folder, config)
    except Exception:  # whatever cannot be built here goes to transformers, which builds it or says why not
        return None
