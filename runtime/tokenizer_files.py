"""A model folder's tokenizer built from its files with the `tokenizers` library and jinja2 alone.

transformers' AutoTokenizer costs seconds of imports at every start. Where a folder's files say that
transformers would serve tokenizer.json as it is (its plain TokenizersBackend class), FileTokenizer
rebuilds the same thing: the same added and special tokens, ids, decoded text and chat prompts
(checked against transformers 5.24 in tests/test_tokenizer_files.py). Every other folder is left to
transformers: load_tokenizer returns None.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer, processors

from runtime.chat_templates import (
    chat_messages,
    compile_template,
    plain_data,
    take_default_options,
    with_reasoning_aliases,
)
from runtime.tokenizer_folder import (
    add_missing_tokens,
    chat_templates,
    plain_backend,
    read_json,
    special_tokens,
)


class Encoded(dict):
    """What calling the tokenizer gives: input_ids as a key and as an attribute."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


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
        templates = chat_templates(folder)
        if templates:
            config["chat_template"] = templates["default"] if list(templates) == ["default"] else templates
        named, extra, added = special_tokens(folder, config, backend)

        chat_template = config.get("chat_template")
        if isinstance(chat_template, (list, tuple)):
            chat_template = {entry["name"]: entry["template"] for entry in chat_template}
        backend.encode_special_tokens = bool(config.get("split_special_tokens", False))
        add_missing_tokens(backend, named, extra, added)
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
        take_default_options(kwargs)
        template = self.get_chat_template(chat_template, tools)
        if isinstance(conversation, (list, tuple)) and len(conversation) == 0:
            raise ValueError(
                "Cannot apply chat template to an empty conversation. Provide at least one message."
            )
        batched = isinstance(conversation, (list, tuple)) and (
            isinstance(conversation[0], (list, tuple)) or hasattr(conversation[0], "messages")
        )
        chats = [chat_messages(c) for c in (conversation if batched else [conversation])]

        if tools is not None:
            if not all(isinstance(tool, dict) for tool in tools):
                raise NotImplementedError(
                    "tools as Python functions are left to transformers; pass JSON schemas"
                )
        if documents is not None and not all(isinstance(doc, dict) for doc in documents):
            raise TypeError("Documents should be a list of dicts with 'title' and 'text' keys!")
        variables = plain_data({**self.special_tokens_map, **kwargs})  # the caller's values beat the tokens'
        compiled = compile_template(template)
        rendered = []
        for chat in chats:
            chat = [with_reasoning_aliases(m) for m in plain_data(chat)]
            rendered.append(
                compiled.render(
                    messages=chat,
                    tools=plain_data(tools),
                    documents=plain_data(documents),
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
        config = read_json(folder / "tokenizer_config.json")
        model = read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    except (OSError, ValueError):
        return None
    if not plain_backend(folder, config, model):
        return None
    try:
        return FileTokenizer.from_folder(folder, config)
    except Exception:  # whatever cannot be built here goes to transformers, which builds it or says why not
        return None
