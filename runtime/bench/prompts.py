"""Benchmark prompts: exactly `prompt_tokens` ids per row, deterministic from the seed, with no
special tokens (no eos/bos, nothing the tokenizer marks special). No tokenizer is needed: random
weights have none, and the ids are drawn straight from the vocabulary.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any


def special_ids(eos_ids: Iterable[int], bos_id: int | None, tokenizer: Any | None) -> set[int]:
    """Ids a prompt must not contain: the spec's eos/bos and every token the tokenizer calls special."""
    ids = {int(i) for i in eos_ids}
    if bos_id is not None:
        ids.add(int(bos_id))
    if tokenizer is not None:
        ids.update(int(i) for i in getattr(tokenizer, "all_special_ids", []) or [])
        for token_id, token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
            if getattr(token, "special", False):
                ids.add(int(token_id))
    return ids


def usable_vocab(vocab: int, tokenizer: Any | None) -> int:
    """Embedding tables are often padded past the tokenizer's last id; draw only real ids."""
    if tokenizer is None:
        return vocab
    try:
        return max(1, min(vocab, len(tokenizer)))
    except TypeError:
        return vocab


def make_prompts(batch: int, length: int, vocab: int, exclude: set[int], seed: int) -> list[list[int]]:
    """`batch` rows of `length` ids in [0, vocab) minus `exclude`; row r depends only on (seed, r)."""
    if length < 1 or batch < 1:
        raise ValueError("a prompt needs at least one row and one token")
    if vocab <= len({i for i in exclude if 0 <= i < vocab}):
        raise ValueError(f"every id of a vocabulary of {vocab} is special: no prompt can be drawn")
    prompts = []
    for row in range(batch):
        rng = random.Random(f"bench-prompt/{seed}/{row}")  # str seeds are stable across processes
        ids: list[int] = []
        while len(ids) < length:
            token = rng.randrange(vocab)
            if token not in exclude:
                ids.append(token)
        prompts.append(ids)
    return prompts
