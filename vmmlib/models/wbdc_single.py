"""WBDC rank-8 single-stream model ("UniBERT", VisualBERT-like; SPEC §3.8, models 1, 2 and 4).

    text  = BERT embeddings([CLS] title [SEP] ocr [SEP] asr [SEP])               (B, L, H)
    video = VideoEmbeddings(Linear(frame features))   positions + type + LN     (B, T, H)
    h     = BERT encoder([text ‖ video], mask = [text_mask ‖ frame_mask])       (B, L+T, H)
    embedding = mean(h) → logits = Linear(embedding)                           (B, 200)

Frame features are the pre-extracted 768-d vectors, or the CLIP ViT `pooler_output` of raw frames
through a `VisionTower` trained end to end (`vision_tower=True`). Pooling: "mean" over valid
positions (the default), or "mean_all", the seed's `torch.mean(features, 1)` over pads too.

With `pretrain_heads=True` the model also carries the heads of rank 8's pretraining tasks (SPEC
§4.4), used by `vmmlib.objectives.video_text`: a tied MLM head, the MFM head (Dense → GELU → LN →
Linear back to the frame-feature width), the frame–text matching head on position 0, and the
learnable CLIP temperature `logit_scale` (ln(1/0.07) at init). The methods `frame_features`,
`encode`, `mlm_logits`, `mfm_predict`, `itm_logits` and `clip_embeddings` are that interface.

Reference: Li et al., "VisualBERT: A Simple and Performant Baseline for Vision and Language", 2019.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

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
class SingleStreamConfig(VideoInputConfig):
    num_classes: int = 200  # lv2 categories
    max_frames: int = 64  # positions of the video embeddings (≥ the loader's max_frames)
    pooling: str = "mean"  # "mean" over valid positions | "mean_all": the seed's mean over pads too
    classifier_dropout: float = 0.0  # dropout on the pooled vector before the classifier
    pretrain_heads: bool = False  # build the MLM / MFM / ITM heads and the CLIP logit scale
    text_model_dir: str | None = (
        None  # local HF BERT directory (e.g. chinese-macbert-base); sizes below ignored
    )
    vocab_size: int | None = None  # None: 21128 when built from a config, the directory's own when loaded
    text_layers: int = FULL_TEXT_SIZES["num_hidden_layers"]  # encoder layers when built from a config
    text_hidden: int = FULL_TEXT_SIZES["hidden_size"]  # encoder width when built from a config
    text_heads: int = FULL_TEXT_SIZES["num_attention_heads"]  # attention heads when built from a config
    text_intermediate: int = FULL_TEXT_SIZES["intermediate_size"]  # FFN width when built from a config


class PretrainHeads(nn.Module):
    """Rank 8's pretraining heads on hidden width H, frame-feature width D and vocabulary V."""

    def __init__(self, hidden: int, feature_dim: int, vocab: int, embed_dim: int, eps: float = 1e-12):
        super().__init__()
        self.mlm_transform = nn.Sequential(
            nn.Linear(hidden, embed_dim), nn.GELU(), nn.LayerNorm(embed_dim, eps=eps)
        )
        self.mlm_bias = nn.Parameter(torch.zeros(vocab))
        self.mfm = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.LayerNorm(hidden, eps=eps),
            nn.Linear(hidden, feature_dim),
        )
        self.itm = nn.Linear(hidden, 2)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP init, unclamped (SPEC §3.10)


class SingleStream(nn.Module):
    """Single-stream transformer over [text tokens ‖ frame embeddings] → 200 lv2 logits."""

    def __init__(self, cfg: SingleStreamConfig):
        super().__init__()
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {cfg.pooling!r}; valid choices: {', '.join(POOLINGS)}")
        self.cfg = cfg
        self.bert = text_backbone_for(cfg)
        config = self.bert.config
        H = config.hidden_size
        self.vision = build_vision_tower(cfg)
        feature_dim = self.vision.dim if self.vision is not None else cfg.feature_dim
        self.frame_map = nn.Linear(feature_dim, H)
        self.video_embeddings = VideoEmbeddings(
            H, cfg.max_frames, config.layer_norm_eps, config.hidden_dropout_prob
        )
        self.dropout = nn.Dropout(cfg.classifier_dropout)
        self.classifier = nn.Linear(H, cfg.num_classes)
        vocab, embed_dim = self.bert.get_input_embeddings().weight.shape
        self.heads = (
            PretrainHeads(H, feature_dim, vocab, embed_dim, config.layer_norm_eps)
            if cfg.pretrain_heads
            else None
        )

    # ---- the interface of vmmlib.objectives.video_text

    def frame_features(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, D) features, or pixels (B, T, 3, S, S) → (B, T, D) through the vision tower."""
        return frame_inputs(self.vision, frames, frame_mask)

    def encode(
        self,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        features: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint encoding: text ids (B, L) [+ frame features (B, T, D)] → hidden (B, L(+T), H), mask.

        Without `features` the text runs alone (the title pass of the inverse cloze task).
        """
        x = self.bert.embeddings(input_ids=text_ids)  # (B, L, H): word + position + type 0, LN
        mask = text_mask.float()
        if features is not None:
            video = self.video_embeddings(self.frame_map(features))  # (B, T, D) -> (B, T, H)
            x = torch.cat([x, video], dim=1)  # (B, L+T, H)
            mask = torch.cat([mask, frame_mask.float()], dim=1)  # (B, L+T)
        attention = create_bidirectional_mask(config=self.bert.config, inputs_embeds=x, attention_mask=mask)
        return self.bert.encoder(x, attention_mask=attention).last_hidden_state, mask

    def _heads(self) -> PretrainHeads:
        if self.heads is None:
            raise ValueError("this model was built without pretraining heads (pretrain_heads=True)")
        return self.heads

    def mlm_logits(self, hidden_text: torch.Tensor) -> torch.Tensor:
        """(B, L, H) → (B, L, vocab), decoder tied to the word embeddings."""
        heads = self._heads()
        return F.linear(
            heads.mlm_transform(hidden_text), self.bert.get_input_embeddings().weight, heads.mlm_bias
        )

    def mfm_predict(self, hidden_video: torch.Tensor) -> torch.Tensor:
        """(B, T, H) → (B, T, D): the predicted frame features."""
        return self._heads().mfm(hidden_video)

    def itm_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, L+T, H) → (B, 2) frame–text match logits from position 0 ([CLS])."""
        return self._heads().itm(hidden[:, 0])

    @property
    def logit_scale(self) -> torch.Tensor:
        return self._heads().logit_scale

    def clip_embeddings(
        self,
        frames: torch.Tensor,
        frame_mask: torch.Tensor,
        title_ids: torch.Tensor,
        title_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Video–text CLIP views (SPEC §3.10): mean of the projected frame features over valid frames,
        and the mean of the title's hidden states over valid tokens. Both (B, H), unnormalised."""
        video = masked_mean(self.frame_map(self.frame_features(frames, frame_mask)), frame_mask)
        text, mask = self.encode(title_ids, title_mask)
        return video, masked_mean(text, mask)

    # ---- classification

    def forward(
        self,
        frames: torch.Tensor,
        frame_mask: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        **_,
    ) -> dict[str, torch.Tensor]:
        """Batch contract in (frames (B, T, D) or (B, T, 3, S, S), frame_mask (B, T), text (B, L)).

        Returns:
            logits (B, num_classes), embedding (B, H) the pooled joint sequence.
        """
        hidden, mask = self.encode(text_ids, text_mask, self.frame_features(frames, frame_mask), frame_mask)
        embedding = masked_mean(hidden, mask) if self.cfg.pooling == "mean" else hidden.mean(1)  # (B, H)
        return {"logits": self.classifier(self.dropout(embedding)), "embedding": embedding}


# Tiny: trains in seconds on CPU; the 768-d feature input and 200 classes kept.
TINY = dict(
    text_layers=2,
    text_hidden=64,
    text_heads=2,
    text_intermediate=128,
    **TINY_VISION,
)


@register_model
def wbdc_single_stream(**overrides) -> SingleStream:
    return SingleStream(SingleStreamConfig(**overrides))


@register_model
def wbdc_single_stream_tiny(**overrides) -> SingleStream:
    return SingleStream(SingleStreamConfig(**{**TINY, **overrides}))
