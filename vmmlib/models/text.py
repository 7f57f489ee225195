"""Text backbones: Hugging Face `BertModel` / `RoFormerModel`, built from a config or loaded from disk.

No weights are ever downloaded: a backbone is either built from a config (random init, tiny by
default, bert-base-chinese sizes with `FULL_TEXT_SIZES`) or loaded with
``from_pretrained(dir, local_files_only=True)`` from a local Hugging Face directory (e.g.
bert-base-chinese, chinese-roberta-wwm-ext, which is a BERT checkpoint, or roformer_chinese_base).

`TitleEncoder` turns title ids into the one vector the NeXtVLAD families fuse: BERT's pooled output
(dense+tanh on [CLS], what the QQ TF baseline takes as ``bert(...)[1]``) or the raw [CLS] state.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers import BertConfig, BertModel, PreTrainedModel, RoFormerConfig, RoFormerModel

TEXT_KINDS = ("bert", "roformer")

BERT_CHINESE_VOCAB_SIZE = 21128  # bert-base-chinese WordPiece vocabulary: the batch contract's text_ids

# Encoder sizes (HF config keys). Tiny: a few seconds of CPU training; full: bert-base-chinese.
TINY_TEXT_SIZES = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128)
FULL_TEXT_SIZES = dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072)


def build_text_backbone(
    kind: str = "bert",
    text_model_dir: str | Path | None = None,
    vocab_size: int | None = None,
    add_pooling_layer: bool = False,
    **config_overrides,
) -> PreTrainedModel:
    """Build a BERT or RoFormer encoder from a config, or load one from a local directory.

    Args:
        kind: "bert" (`BertModel`) or "roformer" (`RoFormerModel`, rotary positions, no pooler).
        text_model_dir: a local Hugging Face model directory (config.json + weights). When given, the
            architecture and weights come from it; its `model_type` must match `kind`.
        vocab_size: vocabulary size. Built from a config: defaults to 21128 (bert-base-chinese).
            Loaded: must equal the directory's vocabulary size if given (a guard against pairing
            token ids with the wrong vocabulary).
        add_pooling_layer: BERT only: create the pooler (dense+tanh on [CLS]). Leave it off when the
            pooled output is unused, so that every parameter receives a gradient.
        **config_overrides: HF config keys. Built from a config they override `TINY_TEXT_SIZES` and
            the defaults (pass `**FULL_TEXT_SIZES` for bert-base sizes); loaded, they are passed to
            `from_pretrained` (e.g. dropout probabilities; `dtype`, float32 by default).

    Returns:
        the `BertModel` / `RoFormerModel`.
    """
    if kind not in TEXT_KINDS:
        raise ValueError(f"unknown text backbone kind {kind!r}; choose from {TEXT_KINDS}")
    model_cls = BertModel if kind == "bert" else RoFormerModel
    extra = {"add_pooling_layer": add_pooling_layer} if kind == "bert" else {}
    if text_model_dir is not None:
        text_model_dir = Path(text_model_dir)
        config_file = text_model_dir / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(
                f"{config_file} not found: text_model_dir must be a local Hugging Face model directory"
            )
        saved = json.loads(config_file.read_text())
        if saved.get("model_type", kind) != kind:  # old configs may lack model_type: trust `kind`
            raise ValueError(
                f"{text_model_dir} holds a {saved.get('model_type')!r} model but kind={kind!r}; "
                f"use a {kind} directory or pick the matching model variant"
            )
        if vocab_size is not None and saved.get("vocab_size") != vocab_size:
            raise ValueError(
                f"vocab_size={vocab_size} but {text_model_dir} has vocab_size={saved.get('vocab_size')}"
            )
        # float32 whatever the checkpoint's dtype (mixed precision is autocast's job); and training
        # mode like every freshly built nn.Module (from_pretrained returns the model in eval mode)
        kwargs = {"dtype": torch.float32, **extra, **config_overrides}
        return model_cls.from_pretrained(text_model_dir, local_files_only=True, **kwargs).train()
    settings = {**TINY_TEXT_SIZES, "vocab_size": vocab_size or BERT_CHINESE_VOCAB_SIZE, **config_overrides}
    config = (BertConfig if kind == "bert" else RoFormerConfig)(**settings)
    return model_cls(config, **extra)


def text_sizes(layers: int, hidden: int, heads: int, intermediate: int) -> dict[str, int]:
    """HF config keys for an encoder of the given sizes (what the model configs store)."""
    return dict(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=intermediate,
    )


def text_backbone_for(cfg, kind: str = "bert", add_pooling_layer: bool = False) -> PreTrainedModel:
    """`build_text_backbone` from a model config's text fields: `cfg.text_model_dir` when set (its
    architecture and weights), else an encoder of `cfg.text_layers`/`text_hidden`/`text_heads`/
    `text_intermediate`; `cfg.vocab_size` either way."""
    sizes = (
        {}
        if cfg.text_model_dir
        else text_sizes(cfg.text_layers, cfg.text_hidden, cfg.text_heads, cfg.text_intermediate)
    )
    return build_text_backbone(
        kind, cfg.text_model_dir, cfg.vocab_size, add_pooling_layer=add_pooling_layer, **sizes
    )


class TitleEncoder(nn.Module):
    """Title ids → one vector: BERT pooled output (`pooling="pooler"`) or the [CLS] state ("cls").

    Hugging Face's RoFormerModel has no pooler, so for kind="roformer" with `pooling="pooler"` this
    module adds the same dense+tanh on [CLS] itself (randomly initialised even when the encoder is
    loaded from a directory).

    Args:
        backbone: a `BertModel` (with its pooler when pooling="pooler") or a `RoFormerModel`.
        pooling: "pooler" or "cls".
    """

    def __init__(self, backbone: PreTrainedModel, pooling: str = "pooler"):
        super().__init__()
        if pooling not in ("pooler", "cls"):
            raise ValueError(f"unknown title pooling {pooling!r}; choose from ('pooler', 'cls')")
        self.backbone = backbone
        self.pooling = pooling
        hidden = backbone.config.hidden_size
        has_pooler = getattr(backbone, "pooler", None) is not None
        self.pooler = (
            nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
            if pooling == "pooler" and not has_pooler
            else None
        )
        self.dim = hidden

    def forward(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """text_ids int64 (B, L), text_mask (B, L) → float (B, hidden)."""
        out = self.backbone(input_ids=text_ids, attention_mask=text_mask)
        if self.pooling == "cls":
            return out.last_hidden_state[:, 0]  # (B, L, H) -> (B, H)
        if self.pooler is not None:
            return self.pooler(out.last_hidden_state[:, 0])
        return out.pooler_output  # BERT pooler: tanh(W h_[CLS] + b)
