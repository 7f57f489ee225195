"""WBDC rank-8 dual-stream model ("LXMERT", SPEC §3.8 model 3).

    text   = BERT(text_ids)                                                     (B, L, H)
    video  = BERT encoder([video CLS ‖ VideoEmbeddings(Linear(frames))])        (B, 1+T, H)
             (randomly initialised, `video_layers` layers, positions + type + LN as the seed's
             BertModel fed `inputs_embeds`)
    cross  = N × transformers `LxmertXLayer`: bidirectional cross-attention, per-stream
             self-attention, per-stream FFN
    embedding = mean(video states) ‖ mean(text states) → logits = Linear(2H → 200)

Frames are pre-extracted features or raw frames through a CLIP `VisionTower` (rank 8 trains ViT
layers 9–11). Pooling "mean" averages valid positions (default); "mean_all" is the seed's mean over
pads too. `clip_embeddings` gives the video–text CLIP views (mean projected frames, mean title states
of the text BERT) for `vmmlib.objectives.video_text.clip_terms` when built with `clip_head=True`.

Reference: Tan & Bansal, "LXMERT: Learning Cross-Modality Encoder Representations from
Transformers", EMNLP 2019.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LxmertConfig
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.bert.modeling_bert import BertEncoder
from transformers.models.lxmert.modeling_lxmert import LxmertXLayer

from vmmlib.models._registry import register_model
from vmmlib.models.layers import masked_mean
from vmmlib.models.text import FULL_TEXT_SIZES, text_backbone_for
from vmmlib.models.wbdc_video import (
    TINY_VISION,
    VideoEmbeddings,
    VideoInputConfig,
    build_vision_tower,
    frame_inputs,
)

POOLINGS = ("mean", "mean_all")


@dataclass
class DualStreamConfig(VideoInputConfig):
    num_classes: int = 200  # lv2 categories
    video_layers: int = 6  # layers of the randomly initialised video encoder (rank 8: 6)
    cross_layers: int = 3  # LxmertXLayer cross-modality layers (rank 8: 3)
    max_frames: int = 64  # positions of the video embeddings (≥ the loader's max_frames + 1 for the CLS)
    pooling: str = "mean"  # "mean" over valid positions | "mean_all": the seed's mean over pads too
    clip_head: bool = False  # build the learnable CLIP temperature for video–text pretraining
    text_model_dir: str | None = None  # local HF BERT directory; sizes below ignored
    vocab_size: int | None = None  # None: 21128 when built from a config, the directory's own when loaded
    text_layers: int = FULL_TEXT_SIZES["num_hidden_layers"]  # text encoder layers when built from a config
    text_hidden: int = FULL_TEXT_SIZES["hidden_size"]  # width of both streams when built from a config
    text_heads: int = FULL_TEXT_SIZES["num_attention_heads"]  # attention heads when built from a config
    text_intermediate: int = FULL_TEXT_SIZES["intermediate_size"]  # FFN width when built from a config


def _additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, L) 1/0 → (B, 1, 1, L) additive mask (0 keep, dtype min drop), the form LxmertXLayer adds."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class DualStream(nn.Module):
    """Text BERT + video encoder + LXMERT cross layers → 200 lv2 logits."""

    def __init__(self, cfg: DualStreamConfig):
        super().__init__()
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {cfg.pooling!r}; valid choices: {', '.join(POOLINGS)}")
        self.cfg = cfg
        self.bert = text_backbone_for(cfg)
        text_config = self.bert.config
        H = text_config.hidden_size
        self.vision = build_vision_tower(cfg)
        feature_dim = self.vision.dim if self.vision is not None else cfg.feature_dim
        self.frame_map = nn.Linear(feature_dim, H)
        self.video_cls = nn.Parameter(torch.randn(H) * 0.02)
        self.video_embeddings = VideoEmbeddings(
            H, cfg.max_frames, text_config.layer_norm_eps, text_config.hidden_dropout_prob
        )
        video_config = copy.deepcopy(text_config)  # keeps the attention implementation the text BERT resolved
        video_config.num_hidden_layers = cfg.video_layers
        self.video_config = video_config
        self.video_encoder = BertEncoder(video_config)
        cross_config = LxmertConfig(
            hidden_size=H,
            num_attention_heads=text_config.num_attention_heads,
            intermediate_size=text_config.intermediate_size,
            hidden_act=text_config.hidden_act,
            hidden_dropout_prob=text_config.hidden_dropout_prob,
            attention_probs_dropout_prob=text_config.attention_probs_dropout_prob,
        )
        self.cross = nn.ModuleList(LxmertXLayer(cross_config) for _ in range(cfg.cross_layers))
        self.classifier = nn.Linear(2 * H, cfg.num_classes)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07))) if cfg.clip_head else None

    def frame_features(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        return frame_inputs(self.vision, frames, frame_mask)

    def encode_video(
        self, features: torch.Tensor, frame_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) features → video states (B, 1+T, H) with the CLS prepended, and its (B, 1+T) mask."""
        x = self.frame_map(features)  # (B, T, H)
        x = torch.cat([self.video_cls.expand(x.shape[0], 1, -1), x], dim=1)  # (B, 1+T, H)
        x = self.video_embeddings(x)
        mask = torch.cat([frame_mask.new_ones(frame_mask.shape[0], 1), frame_mask], dim=1).float()
        attention = create_bidirectional_mask(config=self.video_config, inputs_embeds=x, attention_mask=mask)
        return self.video_encoder(x, attention_mask=attention).last_hidden_state, mask

    def clip_embeddings(
        self,
        frames: torch.Tensor,
        frame_mask: torch.Tensor,
        title_ids: torch.Tensor,
        title_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Video–text CLIP views: mean projected frame features, mean title states. Both (B, H)."""
        video = masked_mean(self.frame_map(self.frame_features(frames, frame_mask)), frame_mask)
        text = self.bert(input_ids=title_ids, attention_mask=title_mask).last_hidden_state
        return video, masked_mean(text, title_mask)

    def forward(
        self,
        frames: torch.Tensor,
        frame_mask: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        **_,
    ) -> dict[str, torch.Tensor]:
        """Batch contract in. Returns logits (B, num_classes), embedding (B, 2H) video ‖ text means."""
        text = self.bert(input_ids=text_ids, attention_mask=text_mask).last_hidden_state  # (B, L, H)
        video, video_mask = self.encode_video(self.frame_features(frames, frame_mask), frame_mask)
        text_add, video_add = _additive_mask(text_mask, text.dtype), _additive_mask(video_mask, video.dtype)
        for layer in self.cross:
            text, video = layer(text, text_add, video, video_add)
        if self.cfg.pooling == "mean":
            embedding = torch.cat([masked_mean(video, video_mask), masked_mean(text, text_mask)], dim=-1)
        else:
            embedding = torch.cat([video.mean(1), text.mean(1)], dim=-1)  # (B, 2H)
        return {"logits": self.classifier(embedding), "embedding": embedding}


TINY = dict(
    text_layers=2,
    text_hidden=64,
    text_heads=2,
    text_intermediate=128,
    video_layers=1,
    cross_layers=1,
    **TINY_VISION,
)


@register_model
def wbdc_dual_stream(**overrides) -> DualStream:
    return DualStream(DualStreamConfig(**overrides))


@register_model
def wbdc_dual_stream_tiny(**overrides) -> DualStream:
    return DualStream(DualStreamConfig(**{**TINY, **overrides}))
