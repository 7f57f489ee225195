"""UNITER-style single-stream encoder for video + title, seed 000 (SPEC 3.6; `cqrmodel.py: Uniter`).

    text  = BERT embeddings(text_ids)          word + position + token type → LN → dropout  (B, L, H)
    video = ReLU(Linear(frames))                no position / type embedding, no LN       (B, T, H)
    h     = Encoder([text ‖ video], mask = [text_mask ‖ frame_mask])                      (B, L+T, H)
    seq   = Dense_256(h)                                                                  (B, L+T, 256)
    embedding = pool(seq)  → tag_logits = Linear(embedding)
    mlm_logits = tied MLM head(seq[:, :L])      (only with mlm=True)

The frames join the sequence after the embedding layer and run through the Hugging Face encoder
stack (`BertModel.encoder` / `RoFormerModel.encoder`) with the joint attention mask. With RoFormer
there are no absolute positions: its rotary positions are applied inside every attention layer to
all L+T positions, so frames do get rotary positions L…L+T-1 there (the seed's RoFormer variant
behaves the same way).

Pooling: "mean" averages the valid positions (text and frame masks); "mean_all" is the seed's
``reduce_mean`` over all L+T positions including pads; "cls" takes position 0; "max" takes the max
over valid positions (the seed fills pads with −1000).

Tag-head init (a deviation, `tag_prior_count`; None restores the seed's zero bias): the head's bias
starts at logit(count / num_tags) (cf. the prior init of Lin et al., "Focal Loss", ICCV 2017). With a
zero bias every tag starts at p = 0.5 while ~1% are positive, so the summed BCE's gradient on the
embedding is almost all one shared direction (the same for every video); Adam moves the bias by
only ~lr per step, so the "most tags are absent" prior is instead written into a common component
of the pooled embedding, which grows until every pair has cosine ≈ 1. The tiny model fine-tuned
from scratch on the sample pairs never recovers in 120 steps (Spearman ≈ 0.07 instead of ≈ 0.8). The
seed fine-tunes from its pretrained head, whose bias has already learned the prior, so only a head
trained from scratch is affected; a loaded checkpoint overwrites the bias anyway.

Reference: Chen et al., "UNITER: UNiversal Image-TExt Representation Learning", ECCV 2020.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from vmmlib.models._registry import register_model
from vmmlib.models.layers import masked_mean, tag_head
from vmmlib.models.text import FULL_TEXT_SIZES, text_backbone_for

POOLINGS = ("mean", "mean_all", "cls", "max")


@dataclass
class UniterConfig:
    num_tags: int = 10000  # width of the tag head: the tag vocabulary (tag_list.txt has 10,000)
    feature_dim: int = 1536  # frame feature width, mapped to the encoder width by Linear+ReLU
    embedding_dim: int = 256  # Dense applied to every position; the pooled (submitted) embedding width
    pooling: str = "mean"  # "mean" (valid positions) | "mean_all" (seed: pads included) | "cls" | "max"
    mlm_head: bool = True  # build the tied MLM head (pretraining); False for a fine-tune-only model
    # Deviation, init only (module docstring): the fresh tag head's bias is logit(count / num_tags),
    # i.e. it starts out predicting this many tags per video; None: zero bias, the seed's Keras Dense
    tag_prior_count: float | None = 3.0
    text_kind: str = "bert"  # "bert" | "roformer": the encoder stack the joint sequence runs through
    text_model_dir: str | None = None  # local HF directory to load the encoder from (sizes below ignored)
    vocab_size: int | None = None  # None: 21128 when built from a config, the directory's own when loaded
    text_layers: int = FULL_TEXT_SIZES["num_hidden_layers"]  # encoder layers when built from a config
    text_hidden: int = FULL_TEXT_SIZES["hidden_size"]  # encoder width when built from a config
    text_heads: int = FULL_TEXT_SIZES["num_attention_heads"]  # attention heads when built from a config
    text_intermediate: int = FULL_TEXT_SIZES["intermediate_size"]  # FFN width when built from a config


class TiedMLMHead(nn.Module):
    """BERT MLM head on the 256-d sequence: Dense(256→E)+GELU+LN, then the decoder whose weight is the
    word-embedding matrix (tied: passed in at call time, so it is never a second copy) plus a bias.

    E is the word-embedding width (the hidden size for BERT; `embedding_size` for RoFormer).
    """

    def __init__(self, in_dim: int, vocab_size: int, embed_dim: int, layer_norm_eps: float = 1e-12):
        super().__init__()
        self.transform = nn.Linear(in_dim, embed_dim)
        self.norm = nn.LayerNorm(embed_dim, eps=layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """x (B, L, in_dim), word_embeddings (vocab, E) → logits (B, L, vocab)."""
        x = self.norm(F.gelu(self.transform(x)))
        return F.linear(x, word_embeddings, self.bias)


class Uniter(nn.Module):
    """Single-stream transformer over [title tokens ‖ projected frames]."""

    def __init__(self, cfg: UniterConfig):
        super().__init__()
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {cfg.pooling!r}; choose from {POOLINGS}")
        self.cfg = cfg
        self.encoder = text_backbone_for(cfg, cfg.text_kind)
        config = self.encoder.config
        self.frame_map = nn.Linear(cfg.feature_dim, config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, cfg.embedding_dim)
        self.tag_head = tag_head(cfg.embedding_dim, cfg.num_tags, cfg.tag_prior_count)
        vocab, embed_dim = self.encoder.get_input_embeddings().weight.shape
        self.mlm = (
            TiedMLMHead(cfg.embedding_dim, vocab, embed_dim, config.layer_norm_eps) if cfg.mlm_head else None
        )

    def _embed_text(self, text_ids: torch.Tensor) -> torch.Tensor:
        """Word (+ position for BERT) + token-type embeddings → LN → dropout, in the encoder width."""
        x = self.encoder.embeddings(input_ids=text_ids)  # (B, L, E)
        if hasattr(self.encoder, "embeddings_project"):  # RoFormer with embedding_size != hidden_size
            x = self.encoder.embeddings_project(x)
        return x  # (B, L, H)

    def forward(
        self,
        frames: torch.Tensor,
        frame_mask: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        mlm: bool = False,
        **_,
    ) -> dict[str, torch.Tensor]:
        """Batch contract in; pass the MLM-masked ids as `text_ids` together with `mlm=True`.

        Returns:
            embedding (B, 256), tag_logits (B, num_tags), sequence (B, L+T, 256) the projected
            joint sequence, and with mlm=True mlm_logits (B, L, vocab) on the text positions.
        """
        L = text_ids.shape[1]
        text = self._embed_text(text_ids)  # (B, L, H)
        video = F.relu(self.frame_map(frames))  # (B, T, N) -> (B, T, H)
        x = torch.cat([text, video], dim=1)  # (B, L+T, H)
        mask = torch.cat([text_mask.to(frame_mask.dtype), frame_mask], dim=1)  # (B, L+T)
        attention_mask = create_bidirectional_mask(
            config=self.encoder.config, inputs_embeds=x, attention_mask=mask
        )
        h = self.encoder.encoder(x, attention_mask=attention_mask).last_hidden_state  # (B, L+T, H)
        seq = self.proj(h)  # (B, L+T, 256)
        embedding = self._pool(seq, mask)  # (B, 256)
        out = {"embedding": embedding, "tag_logits": self.tag_head(embedding), "sequence": seq}
        if mlm:
            if self.mlm is None:
                raise ValueError("this model was built with mlm_head=False")
            word_embeddings = self.encoder.get_input_embeddings().weight  # (vocab, E): the tied decoder
            out["mlm_logits"] = self.mlm(seq[:, :L], word_embeddings)  # (B, L, vocab)
        return out

    def _pool(self, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooling = self.cfg.pooling
        if pooling == "mean":
            return masked_mean(seq, mask)
        if pooling == "mean_all":
            return seq.mean(1)
        if pooling == "cls":
            return seq[:, 0]
        return seq.masked_fill(mask.unsqueeze(-1) == 0, -1000.0).amax(1)  # "max"


# Tiny: trains in seconds on CPU; same structure, feature_dim 1536 and the 256-d embedding kept.
TINY = dict(
    num_tags=100,  # the data reader passes its own tag count
    text_layers=2,
    text_hidden=64,
    text_heads=2,
    text_intermediate=128,
)


@register_model
def uniter_qq(**overrides) -> Uniter:
    return Uniter(UniterConfig(**overrides))


@register_model
def uniter_qq_tiny(**overrides) -> Uniter:
    return Uniter(UniterConfig(**{**TINY, **overrides}))


@register_model
def uniter_roformer_qq(**overrides) -> Uniter:
    return Uniter(UniterConfig(**{"text_kind": "roformer", **overrides}))


@register_model
def uniter_roformer_qq_tiny(**overrides) -> Uniter:
    return Uniter(UniterConfig(**{**TINY, "text_kind": "roformer", **overrides}))
