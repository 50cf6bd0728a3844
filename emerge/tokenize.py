"""Tokenisation without special tokens, with character offsets, shared by spans and embedding.

Both stages must see the exact same token sequence: span token indices are positions in it.
"""

from __future__ import annotations

import numpy as np


def tokenize_batch(tokenizer, texts: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(input_ids int32[n], offsets int64[n, 2])] for each text; no truncation, no specials."""
    if not texts:
        return []
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, truncation=False,
                    return_attention_mask=False, verbose=False)
    out = []
    for ids, offs in zip(enc["input_ids"], enc["offset_mapping"]):
        offsets = np.asarray(offs, dtype=np.int64).reshape(-1, 2)
        out.append((np.asarray(ids, dtype=np.int32), offsets))
    return out


def require_fast_tokenizer(tokenizer) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"{type(tokenizer).__name__} is not a fast (Rust) tokenizer; Emerge needs character "
                        "offsets, which only fast tokenizers provide")
