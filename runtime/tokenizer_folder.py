"""What a model folder's tokenizer files say, read as transformers 5.24 reads them: whether its plain
backend would serve tokenizer.json as it is, the chat templates, and the named, extra and added
special tokens (runtime/tokenizer_files.py builds the tokenizer from them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer

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


def read_json(path: Path) -> Any:
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


def chat_templates(folder: Path) -> dict[str, str]:
    """chat_template.jinja (as "default") and additional_chat_templates/*.jinja; both beat the config's."""
    templates = {}
    if (folder / "chat_template.jinja").is_file():
        templates["default"] = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    extra = folder / "additional_chat_templates"
    if extra.is_dir():
        for path in extra.glob("*.jinja"):
            templates[path.name.removesuffix(".jinja")] = path.read_text(encoding="utf-8")
    return templates


def plain_backend(folder: Path, config: Any, model: Any) -> bool:
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


def special_tokens(folder: Path, config: dict, backend: Tokenizer) -> tuple[dict, list, dict]:
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
            for key, value in read_json(folder / "special_tokens_map.json").items():
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


def add_missing_tokens(backend: Tokenizer, named: dict, extra: list, added: dict) -> None:
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
