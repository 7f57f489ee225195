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


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "spm.model")


def has_tokenizer(model_dir: str | Path) -> bool:
    """Whether a local Hugging Face model folder holds a saved tokenizer."""
    return any((Path(model_dir) / name).is_file() for name in TOKENIZER_FILES)


def tokenizer_for(text_model_dir: str | Path | None, fallback_vocab: str | Path):
    """The tokenizer of a text model: the one saved in `text_model_dir` (the Hugging Face convention,
    as seed 000 passes `--bert-dir`), else a WordPiece tokenizer over the data's `fallback_vocab`.

    Raises:
        FileNotFoundError: `text_model_dir` is given but is not a folder.
    """
    if text_model_dir:
        folder = Path(text_model_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"text_model_dir {folder} is not a folder")
        if has_tokenizer(folder):
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    try:
        return load_tokenizer(fallback_vocab)
    except FileNotFoundError:  # a real competition folder brings no vocabulary: name who supplies one
        brought = (
            f"text_model_dir {text_model_dir} holds no tokenizer file ({', '.join(TOKENIZER_FILES)}) and "
            if text_model_dir
            else ""
        )
        raise FileNotFoundError(
            f"{brought}no BERT vocabulary at {fallback_vocab}: set text_model_dir to a local Hugging Face text "
            "model folder that holds its tokenizer (e.g. a copy of hfl/chinese-macbert-base with vocab.txt), or "
            'data_options {"vocab_path": ".../vocab.txt"}'
        ) from None


def encode_texts(
    tokenizer: BertTokenizer, texts: list[str], max_length: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Tokenise to fixed length: `[CLS] text [SEP]`, padded with 0 and truncated (SPEC §1.1).

    Returns:
        ids (N, max_length) int64 and attention mask (N, max_length) int64. An empty text gives
        `[CLS] [SEP]`.
    """
    enc = tokenizer(
        list(texts), max_length=max_length, padding="max_length", truncation=True, return_tensors="np"
    )
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)
