"""QQ Browser 2021 official TF baseline (SPEC 3.7): BERT title + NeXtVLAD frames → ConcatDenseSE → 256-d.

The 256-d fused vector is the submitted embedding; a Linear(256, num_tags) head is trained with
tag BCE during pretraining. Differences from the TF baseline, each a config switch:
`cluster_bn=True` restores the NeXtVLAD cluster BN the baseline commented out (seed 000's "the BN
must stay"; `cluster_bn=False` is the baseline), and `text_map_dim` adds the Dense+ReLU map of the
title vector that seed 000's contrastive variant (`cqrmodel.py: MultiModal`, `bert_map`) uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vmmlib.models._registry import register_model
from vmmlib.models.layers import ConcatDenseSE, NeXtVLAD, tag_head
from vmmlib.models.text import FULL_TEXT_SIZES, TitleEncoder, text_backbone_for


@dataclass
class QQBaselineConfig:
    num_tags: int = 10000  # width of the tag head: the tag vocabulary (tag_list.txt has 10,000)
    tag_prior_count: float | None = (
        3.0  # tag-head bias starts at logit(count/num_tags); None: the seed's zero bias (see layers.tag_head)
    )
    feature_dim: int = 1536  # frame feature width N
    clusters: int = 64  # NeXtVLAD K
    groups: int = 8  # NeXtVLAD G
    expansion: float = 2  # NeXtVLAD λ (tiny: a fraction)
    vlad_dim: int = 1024  # NeXtVLAD output FC width (the vision vector)
    vlad_dropout: float = 0.2  # dropout before the NeXtVLAD output FC
    cluster_bn: bool = True  # BN on the cluster logits (seed 000); False = the TF baseline
    vlad_bn: bool = False  # BN on the flattened VLAD (linrongc YT8M code); off in the QQ models
    embedding_dim: int = 256  # fused (submitted) embedding width, ≤ 256 by the competition rule
    se_ratio: int = 8  # SE gating reduction r
    fusion_dropout: float = 0.2  # dropout on the concatenation before the fusion Dense
    text_map_dim: int | None = None  # None: fuse the title vector as is; else Dense(text_map_dim)+ReLU first
    text_kind: str = "bert"  # "bert" | "roformer"
    text_model_dir: str | None = (
        None  # local HF directory to load the text encoder from (sizes below ignored)
    )
    vocab_size: int | None = None  # None: 21128 when built from a config, the directory's own when loaded
    text_pooling: str = "pooler"  # "pooler": BERT pooled output as the baseline; "cls": raw [CLS] state
    text_layers: int = FULL_TEXT_SIZES["num_hidden_layers"]  # encoder layers when built from a config
    text_hidden: int = FULL_TEXT_SIZES["hidden_size"]  # encoder width when built from a config
    text_heads: int = FULL_TEXT_SIZES["num_attention_heads"]  # attention heads when built from a config
    text_intermediate: int = FULL_TEXT_SIZES["intermediate_size"]  # FFN width when built from a config


class QQBaseline(nn.Module):
    """Title vector ‖ NeXtVLAD(frames) → ConcatDenseSE → 256-d embedding → tag logits."""

    def __init__(self, cfg: QQBaselineConfig):
        super().__init__()
        self.cfg = cfg
        pooler = cfg.text_kind == "bert" and cfg.text_pooling == "pooler"
        backbone = text_backbone_for(cfg, cfg.text_kind, add_pooling_layer=pooler)
        self.text = TitleEncoder(backbone, cfg.text_pooling)
        self.text_map = (
            nn.Sequential(nn.Linear(self.text.dim, cfg.text_map_dim), nn.ReLU())
            if cfg.text_map_dim
            else nn.Identity()
        )
        text_dim = cfg.text_map_dim or self.text.dim
        self.nextvlad = NeXtVLAD(
            cfg.feature_dim,
            cfg.clusters,
            cfg.groups,
            cfg.expansion,
            cfg.vlad_dim,
            cfg.vlad_dropout,
            cfg.cluster_bn,
            cfg.vlad_bn,
        )
        self.fusion = ConcatDenseSE(
            cfg.vlad_dim + text_dim, cfg.embedding_dim, cfg.se_ratio, cfg.fusion_dropout
        )
        self.tag_head = tag_head(cfg.embedding_dim, cfg.num_tags, cfg.tag_prior_count)

    def forward(
        self,
        frames: torch.Tensor,
        frame_mask: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        **_,
    ) -> dict[str, torch.Tensor]:
        """Batch contract in (frames (B, T, N), frame_mask (B, T), text_ids/text_mask (B, L)).

        Returns:
            embedding (B, 256), tag_logits (B, num_tags), vision_embedding (B, vlad_dim) (zero for a
            video without frames), text_embedding (B, text dim): the two vectors before fusion.
        """
        text = self.text_map(self.text(text_ids, text_mask))  # (B, H)
        has_frames = (frame_mask.sum(1, keepdim=True) > 0).to(frames.dtype)  # (B, 1)
        vision = self.nextvlad(frames, frame_mask) * has_frames  # (B, vlad_dim)
        embedding = self.fusion(vision, text)  # (B, 256)
        return {
            "embedding": embedding,
            "tag_logits": self.tag_head(embedding),  # (B, num_tags)
            "vision_embedding": vision,
            "text_embedding": text,
        }


# Tiny: trains in seconds on CPU; same structure, feature_dim 1536 and the 256-d embedding kept.
TINY = dict(
    num_tags=100,  # the data reader passes its own tag count
    clusters=8,
    groups=4,
    expansion=0.125,
    vlad_dim=128,
    text_layers=2,
    text_hidden=64,
    text_heads=2,
    text_intermediate=128,
)


@register_model
def qq_baseline(**overrides) -> QQBaseline:
    return QQBaseline(QQBaselineConfig(**overrides))


@register_model
def qq_baseline_tiny(**overrides) -> QQBaseline:
    return QQBaseline(QQBaselineConfig(**{**TINY, **overrides}))
