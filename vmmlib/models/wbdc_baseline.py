"""WBDC 2022 official preliminary baseline (SPEC §3.8, §9.1; `challenge@da81f3f:model.py`).

    title  = BERT(title ids).pooler_output                       (B, H)   dense + tanh on [CLS]
    vision = SENet(NeXtVLAD(frames, frame_mask))                  (B, 1024)
    fused  = SENet(Linear(dropout([vision ‖ title])))             (B, 512)  no activation on the FC
    logits = Linear(fused)                                        (B, 200)

The baseline's NeXtVLAD ignores `frame_mask` ("# todo mask"), so zero-padded frames take part in
the aggregation; `ignore_frame_mask=True` reproduces that, the default honours the mask. Its NeXtVLAD
has no cluster BatchNorm (`cluster_bn=False`). Frames are pre-extracted features, or raw frames
through a CLIP `VisionTower` (`vision_tower=True`), as every WBDC family.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vmmlib.models._registry import register_model
from vmmlib.models.layers import NeXtVLAD, SEGating
from vmmlib.models.text import FULL_TEXT_SIZES, TitleEncoder, text_backbone_for
from vmmlib.models.wbdc_video import TINY_VISION, VideoInputConfig, build_vision_tower, frame_inputs


@dataclass
class WBDCBaselineConfig(VideoInputConfig):
    num_classes: int = 200  # lv2 categories
    clusters: int = 64  # NeXtVLAD K (vlad_cluster_size)
    groups: int = 8  # NeXtVLAD G
    expansion: float = 2  # NeXtVLAD λ (tiny: a fraction)
    vlad_dim: int = 1024  # NeXtVLAD output width (vlad_hidden_size)
    cluster_bn: bool = False  # BN on the cluster logits; the baseline has none
    ignore_frame_mask: bool = False  # True: the baseline's NeXtVLAD, padded frames aggregated too
    se_ratio: int = 8  # SENet reduction r
    fusion_dim: int = 512  # ConcatDenseSE width (fc_size)
    dropout: float = 0.3  # NeXtVLAD and fusion dropout
    text_model_dir: str | None = None  # local HF BERT directory (chinese-macbert-base); sizes below ignored
    vocab_size: int | None = None  # None: 21128 when built from a config, the directory's own when loaded
    text_layers: int = FULL_TEXT_SIZES["num_hidden_layers"]  # encoder layers when built from a config
    text_hidden: int = FULL_TEXT_SIZES["hidden_size"]  # encoder width when built from a config
    text_heads: int = FULL_TEXT_SIZES["num_attention_heads"]  # attention heads when built from a config
    text_intermediate: int = FULL_TEXT_SIZES["intermediate_size"]  # FFN width when built from a config


class WBDCBaseline(nn.Module):
    """Title pooler ‖ SENet(NeXtVLAD(frames)) → dropout → Linear → SENet → 200 logits."""

    def __init__(self, cfg: WBDCBaselineConfig):
        super().__init__()
        self.cfg = cfg
        self.text = TitleEncoder(text_backbone_for(cfg, add_pooling_layer=True), "pooler")
        self.vision = build_vision_tower(cfg)
        feature_dim = self.vision.dim if self.vision is not None else cfg.feature_dim
        self.nextvlad = NeXtVLAD(
            feature_dim, cfg.clusters, cfg.groups, cfg.expansion, cfg.vlad_dim, cfg.dropout, cfg.cluster_bn
        )
        self.enhance = SEGating(cfg.vlad_dim, cfg.se_ratio)
        self.fusion_dropout = nn.Dropout(cfg.dropout)
        self.fusion = nn.Linear(cfg.vlad_dim + self.text.dim, cfg.fusion_dim)
        self.fusion_se = SEGating(cfg.fusion_dim, cfg.se_ratio)
        self.classifier = nn.Linear(cfg.fusion_dim, cfg.num_classes)

    def forward(
        self,
        frames: torch.Tensor,
        frame_mask: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        **_,
    ) -> dict[str, torch.Tensor]:
        """Batch contract in (text = the title, 50 tokens in the baseline).

        Returns:
            logits (B, num_classes), embedding (B, fusion_dim) the fused vector,
            vision_embedding (B, vlad_dim), text_embedding (B, H).
        """
        features = frame_inputs(self.vision, frames, frame_mask)  # (B, T, D)
        mask = torch.ones_like(frame_mask) if self.cfg.ignore_frame_mask else frame_mask
        vision = self.enhance(self.nextvlad(features, mask))  # (B, vlad_dim)
        text = self.text(text_ids, text_mask)  # (B, H)
        embedding = self.fusion_se(self.fusion(self.fusion_dropout(torch.cat([vision, text], dim=-1))))
        return {
            "logits": self.classifier(embedding),
            "embedding": embedding,
            "vision_embedding": vision,
            "text_embedding": text,
        }


TINY = dict(
    clusters=8,
    groups=4,
    expansion=0.125,
    vlad_dim=128,
    fusion_dim=64,
    text_layers=2,
    text_hidden=64,
    text_heads=2,
    text_intermediate=128,
    **TINY_VISION,
)


@register_model
def wbdc_baseline(**overrides) -> WBDCBaseline:
    return WBDCBaseline(WBDCBaselineConfig(**overrides))


@register_model
def wbdc_baseline_tiny(**overrides) -> WBDCBaseline:
    return WBDCBaseline(WBDCBaselineConfig(**{**TINY, **overrides}))
