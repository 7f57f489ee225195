"""MixNeXtVLAD, seed 000's QQ Browser port (SPEC 3.2; `cqrmodel_mix.py: MultiModal_mix`).

M branches, each a NeXtVLAD over the frames + ConcatDenseSE with the shared (mapped) title vector +
its own tag head, mixed by a gate:

    t   = ReLU(Dense_1024(title vector))                       text_map, shared by the branches
    v_m = NeXtVLAD_m(frames, mask)  (zero for a video without frames)
    e_m = ConcatDenseSE_m(v_m, t)   z_m = TagHead_m(e_m)
    a   = softmax(Linear(BN(gate input)))                      gate input: see `gate_input`
    tag_logits = Σ_m a_m z_m        embedding = Σ_m a_m e_m

Training terms (in `vmmlib.objectives.losses`): BCE on the mixture and on every branch, the on-the-fly
distillation `mixture_distillation(branch_tag_logits, tag_logits, T=2)` × 10, and
`info_nce(vision_embedding, text_embedding)` (averaged over branches) × 10.
Reference: Lin et al., NeXtVLAD, ECCV-W 2018, §3.4.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vmmlib.models._registry import register_model
from vmmlib.models.layers import ConcatDenseSE, NeXtVLAD, masked_mean, tag_head
from vmmlib.models.text import FULL_TEXT_SIZES, TitleEncoder, text_backbone_for

GATE_INPUTS = ("frames_text", "frames", "feature_axis")


@dataclass
class MixNeXtVLADConfig:
    num_tags: int = 10000  # width of the tag heads: the tag vocabulary (tag_list.txt has 10,000)
    tag_prior_count: float | None = (
        3.0  # tag-head bias starts at logit(count/num_tags); None: the seed's zero bias (see layers.tag_head)
    )
    num_branches: int = 3  # M, the mixture size (`mix_number`)
    feature_dim: int = 1536  # frame feature width N
    max_frames: int = 32  # T; only the "feature_axis" gate depends on it
    clusters: int = 64  # NeXtVLAD K
    groups: int = 8  # NeXtVLAD G
    expansion: float = 2  # NeXtVLAD λ (tiny: a fraction)
    vlad_dim: int = 1024  # NeXtVLAD output width; must equal text_map_dim for the InfoNCE term
    vlad_dropout: float = 0.2  # dropout before the NeXtVLAD output FC
    cluster_bn: bool = True  # BN on the cluster logits (seed 000 "modify bn"); False = TF baseline
    vlad_bn: bool = False  # BN on the flattened VLAD (linrongc YT8M code)
    text_map_dim: int = 1024  # Dense+ReLU map of the title vector (`bert_map`)
    embedding_dim: int = 256  # fused (submitted) embedding width
    se_ratio: int = 8  # SE gating reduction r
    fusion_dropout: float = 0.2  # dropout on the concatenation before the fusion Dense
    gate_input: str = "frames_text"  # "frames_text": [mean of valid frames ‖ t] (QQ port); "frames": mean
    # of valid frames (paper); "feature_axis": per-frame mean over features, (B, T) (linrongc's code)
    text_kind: str = "bert"  # "bert" | "roformer"
    text_model_dir: str | None = (
        None  # local HF directory to load the text encoder from (sizes below ignored)
    )
    vocab_size: int | None = None  # None: 21128 when built from a config, the directory's own when loaded
    text_pooling: str = "pooler"  # "pooler": pooled [CLS] (BERT pooler; own dense+tanh for RoFormer); "cls"
    text_layers: int = FULL_TEXT_SIZES["num_hidden_layers"]  # encoder layers when built from a config
    text_hidden: int = FULL_TEXT_SIZES["hidden_size"]  # encoder width when built from a config
    text_heads: int = FULL_TEXT_SIZES["num_attention_heads"]  # attention heads when built from a config
    text_intermediate: int = FULL_TEXT_SIZES["intermediate_size"]  # FFN width when built from a config


class MixNeXtVLADBranch(nn.Module):
    """One mixture member: NeXtVLAD → ConcatDenseSE(vision, text) → tag head."""

    def __init__(self, cfg: MixNeXtVLADConfig):
        super().__init__()
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
            cfg.vlad_dim + cfg.text_map_dim, cfg.embedding_dim, cfg.se_ratio, cfg.fusion_dropout
        )
        self.tag_head = tag_head(cfg.embedding_dim, cfg.num_tags, cfg.tag_prior_count)

    def forward(self, frames, frame_mask, has_frames, text):
        vision = self.nextvlad(frames, frame_mask) * has_frames  # (B, vlad_dim)
        embedding = self.fusion(vision, text)  # (B, 256)
        return vision, embedding, self.tag_head(embedding)


class MixNeXtVLAD(nn.Module):
    """Gated mixture of NeXtVLAD+ConcatDenseSE branches sharing one title encoder."""

    def __init__(self, cfg: MixNeXtVLADConfig):
        super().__init__()
        if cfg.gate_input not in GATE_INPUTS:
            raise ValueError(f"unknown gate_input {cfg.gate_input!r}; choose from {GATE_INPUTS}")
        self.cfg = cfg
        pooler = cfg.text_kind == "bert" and cfg.text_pooling == "pooler"
        backbone = text_backbone_for(cfg, cfg.text_kind, add_pooling_layer=pooler)
        self.text = TitleEncoder(backbone, cfg.text_pooling)
        self.text_map = nn.Sequential(nn.Linear(self.text.dim, cfg.text_map_dim), nn.ReLU())
        self.branches = nn.ModuleList(MixNeXtVLADBranch(cfg) for _ in range(cfg.num_branches))
        gate_dim = {
            "frames_text": cfg.feature_dim + cfg.text_map_dim,
            "frames": cfg.feature_dim,
            "feature_axis": cfg.max_frames,
        }[cfg.gate_input]
        self.gate_bn = nn.BatchNorm1d(gate_dim)
        self.gate = nn.Linear(gate_dim, cfg.num_branches)

    def _gate_input(self, frames: torch.Tensor, frame_mask: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self.cfg.gate_input == "feature_axis":
            return frames.mean(-1) * frame_mask.to(frames.dtype)  # (B, T, N) -> (B, T), pads 0
        frame_mean = masked_mean(frames, frame_mask)  # (B, T, N) -> (B, N)
        if self.cfg.gate_input == "frames":
            return frame_mean
        return torch.cat([frame_mean, text], dim=-1)  # (B, N + text_map_dim)

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
            embedding (B, 256) gate-mixed; tag_logits (B, C) gate-mixed; gate (B, M);
            branch_tag_logits (M, B, C); branch_embeddings (M, B, 256);
            vision_embedding (M, B, vlad_dim), each branch's NeXtVLAD vector before fusion (zero for
            a video without frames); text_embedding (B, text_map_dim), the mapped title vector.
        """
        text = self.text_map(self.text(text_ids, text_mask))  # (B, text_map_dim)
        gate = torch.softmax(
            self.gate(self.gate_bn(self._gate_input(frames, frame_mask, text))), dim=-1
        )  # (B, M)
        has_frames = (frame_mask.sum(1, keepdim=True) > 0).to(frames.dtype)  # (B, 1)
        vision, embeddings, logits = zip(
            *(branch(frames, frame_mask, has_frames, text) for branch in self.branches)
        )
        vision, embeddings, logits = (
            torch.stack(vision),
            torch.stack(embeddings),
            torch.stack(logits),
        )  # (M, B, ·)
        weights = gate.T.unsqueeze(-1)  # (B, M) -> (M, B, 1)
        return {
            "embedding": (weights * embeddings).sum(0),  # (M, B, 256) -> (B, 256)
            "tag_logits": (weights * logits).sum(0),  # (M, B, C) -> (B, C)
            "gate": gate,
            "branch_tag_logits": logits,
            "branch_embeddings": embeddings,
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
    text_map_dim=128,
    text_layers=2,
    text_hidden=64,
    text_heads=2,
    text_intermediate=128,
)


@register_model
def mixnextvlad_qq(**overrides) -> MixNeXtVLAD:
    return MixNeXtVLAD(MixNeXtVLADConfig(**overrides))


@register_model
def mixnextvlad_qq_tiny(**overrides) -> MixNeXtVLAD:
    return MixNeXtVLAD(MixNeXtVLADConfig(**{**TINY, **overrides}))


@register_model
def mixnextvlad_roformer_qq(**overrides) -> MixNeXtVLAD:
    return MixNeXtVLAD(MixNeXtVLADConfig(**{"text_kind": "roformer", **overrides}))


@register_model
def mixnextvlad_roformer_qq_tiny(**overrides) -> MixNeXtVLAD:
    return MixNeXtVLAD(MixNeXtVLADConfig(**{**TINY, "text_kind": "roformer", **overrides}))
