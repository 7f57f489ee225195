"""Text tokenisation with a BERT WordPiece vocabulary from a local file (one token per Chinese char)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from transformers import BertTokenizer


def load_tokenizer(vocab_path: str | Path) -> BertTokenizer:
    """A BERT WordPiece tokenizer from a local `vocab.txt` (or a folder holding one).

    Chinese characters become one token each (`tokenize_chinese_chars`). In transformers 5 the
    vocabulary is passed as `vocab=`; the older `vocab_file=` keyword is silently ignored there.
    """
    path = Path(vocab_path)
    if path.is_dir():
        path = path / "vocab.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no BERT vocabulary at {path}")
    tokenizer = BertTokenizer(vocab=str(path), do_lower_case=True)
    if tokenizer.vocab_size < 10 or tokenizer.unk_token_id is None:
        raise ValueError(f"{path} does not look like a BERT vocab ({tokenizer.vocab_size} tokens)")
    return tokenizer


def encode_texts(tokenizer: BertTokenizer, texts: list[str], max_length: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise to fixed length: `[CLS] text [SEP]`, padded with 0 and truncated (SPEC §1.1).

    Returns:
        ids (N, max_length) int64 and attention mask (N, max_length) int64. An empty text gives
        `[CLS] [SEP]`.
    """
    enc = tokenizer(
        list(texts), max_length=max_length, padding="max_length", truncation=True, return_tensors="np"
    )
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
