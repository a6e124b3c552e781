"""Chat templates rendered as transformers renders them, with jinja2 alone: a sandboxed
environment with trim_blocks / lstrip_blocks, loop controls and {% generation %}, the tojson
filter and the raise_exception / strftime_now globals; messages and variables reduced to plain
JSON-like data first. Used by runtime/tokenizer_files.py."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

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


def take_default_options(kwargs: dict[str, Any]) -> None:
    """Remove CHAT_DEFAULTS' options from apply_chat_template's kwargs; any other value is left to
    transformers (NotImplementedError)."""
    for name, default in CHAT_DEFAULTS.items():
        if name in kwargs and kwargs.pop(name) != default:
            raise NotImplementedError(f"apply_chat_template({name}=...) is left to transformers")


def jinja_version_ok(version: str) -> bool:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts) >= (3, 1, 6)


@lru_cache
def compile_template(template: str):
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if not jinja_version_ok(jinja2.__version__):
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


def as_dicts(value: Any) -> Any:
    """Message objects (dataclasses, pydantic models) and those nested in them, as plain dicts."""
    if isinstance(value, Mapping):
        return {k: as_dicts(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_dicts(v) for v in value]
    if isinstance(value, tuple):
        return tuple(as_dicts(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: as_dicts(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return as_dicts(value.model_dump())
    return value


def plain_data(value: Any) -> Any:
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
        return {plain_data(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_data(v) for v in value]
    if isinstance(value, tuple):
        return tuple(plain_data(v) for v in value)
    numpy = sys.modules.get("numpy")  # a numpy scalar exists only once numpy is imported
    if numpy is not None and isinstance(value, numpy.generic):
        return plain_data(value.item())  # by its Python value: np.bool_(False) must stay false
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return plain_data(value.model_dump())
    return f"<{type(value).__name__}>"


REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


def with_reasoning_aliases(message: dict) -> dict:
    """Templates read a message's reasoning as reasoning_content (gpt-oss's as thinking): fill both
    from whichever of the names it came under."""
    reasoning = next((message[k] for k in REASONING_KEYS if message.get(k) is not None), None)
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


def chat_messages(conversation: Any) -> list[dict]:
    messages = as_dicts(getattr(conversation, "messages", conversation))
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
