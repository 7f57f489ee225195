"""Transformer frame models of seed 003 (SPEC 3.5): FrameBERT and BertCross, each with the MoE head.

    FrameBERT:  x = frames (B, T, 1152)  → [position]  → BERT encoder (L layers, 1152-d)  → pool → MoE
    BertCross:  rgb (B, T, 1024) → encoder (L−1 layers, 1024-d) ┐
                audio (B, T, 128) → encoder (L−1 layers, 128-d) ┴ concat per step → encoder (1 layer,
                1152-d) → pool → MoE          (with 8 heads the head widths are 128, 16 and 144)

The stacks are Hugging Face `BertEncoder`s (post-LN BERT layers, as Google BERT's
`transformer_model`) fed the frame vectors directly: no word/type embeddings and, by default, no
positions (`use_position`: "none" | "sinusoidal" (x + sinusoid, dropout) | "learned" (BERT position
embeddings + LayerNorm + dropout)). All stacks share the seed's `bert_config.json` sizes:
intermediate 3072 (also for the 128-d audio stack), GELU (Google's tanh approximation), dropout 0.1.

Poolings (`pooling`): "none" flattens T×D (T = `num_frames` = 5: a segment; shorter inputs are
zero-padded); "mean" over valid frames; "first" = the first frame; "last" = the last valid frame;
"attn" = learned query q, ``w_t = softmax_t(h_t·q / √D)``, ``Σ_t w_t h_t`` (weights returned as
`pool_weights`). **The seed's "BERTFirst" takes ``sequence_output[:, -1]``, the last token**: its
checkpoints and scores correspond to ``pooling="last"`` here, not to "first".

Padding (`mask_padding`): by default padded frames are masked out of attention and pooling, so a
padded final segment gives the same output as its real frames alone. The seed passes no attention
mask; ``mask_padding=False`` reproduces it (pads are attended, "mean" averages all T, "last" is
index −1, "none" flattens the pad states).

Training-time frame window (`train_window`): when a training batch is longer than `train_window`
(video-level pretraining on up to 300 frames), each example is cut to a random contiguous window of
valid frames, the seed's `SampleRandomSequence` (start uniform in [0, max(n − w, 0)]; when n < w
the seed repeats the last frame, here those positions are masked unless mask_padding=False). Eval
never samples.

Reference: Shao & Liu, "BERT for Large-scale Video Segment Classification with Test-time
Augmentation", arXiv:1912.01127 (`hughshaoqz/3rd-Youtube8M-TM`, `frame_level_models.Bert/BertCross`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.bert.modeling_bert import BertEncoder, BertPreTrainedModel

from vmmlib.models._registry import register_model
from vmmlib.models.layers import masked_mean
from vmmlib.models.moe import MoEClassifier

POOLINGS = ("none", "mean", "first", "last", "attn")
POSITIONS = ("none", "sinusoidal", "learned")


class FrameEncoder(BertPreTrainedModel):
    """A bare `BertEncoder` (no embeddings, no pooler) over vectors already in the hidden width.

    Wrapped in `BertPreTrainedModel` for BERT's initialisation (normal 0.02) and attention dispatch.
    """

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.encoder = BertEncoder(config)
        self.post_init()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x float (B, T, H), mask (B, T) 1 = attend, or None (attend everywhere) → (B, T, H)."""
        if mask is not None:
            mask = create_bidirectional_mask(config=self.config, inputs_embeds=x, attention_mask=mask)
        return self.encoder(x, attention_mask=mask).last_hidden_state


def bert_config(hidden: int, layers: int, heads: int, intermediate: int, dropout: float) -> BertConfig:
    """The seed's `bert_config.json` with its per-model overrides (hidden, layers, heads, dropout)."""
    if hidden % heads:
        raise ValueError(f"hidden width {hidden} is not divisible by {heads} heads")
    return BertConfig(
        vocab_size=1,  # unused: no embeddings are built
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        hidden_act="gelu_new",  # Google BERT's tanh-approximated GELU
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )


class FramePositions(nn.Module):
    """The seed's optional position step before an encoder (`use_position`, `bert_position`).

    "none": identity (the seed's default). "sinusoidal": ``x + PE`` (sin on even, cos on odd
    channels, Vaswani et al.), then dropout. "learned": ``LayerNorm(x + E_pos)``, then dropout
    (BERT's `embedding_postprocessor` without token types).
    """

    def __init__(self, kind: str, hidden: int, max_positions: int = 512, dropout: float = 0.1):
        super().__init__()
        if kind not in POSITIONS:
            raise ValueError(f"unknown use_position {kind!r}; choose from {POSITIONS}")
        self.kind = kind
        self.dropout = nn.Dropout(dropout)
        if kind == "learned":
            self.embeddings = nn.Embedding(max_positions, hidden)
            nn.init.trunc_normal_(self.embeddings.weight, std=0.02, a=-0.04, b=0.04)
            self.norm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, T, H)
        if self.kind == "none":
            return x
        T, H = x.shape[1], x.shape[2]
        if self.kind == "learned":
            return self.dropout(self.norm(x + self.embeddings.weight[:T]))
        pos = torch.arange(T, device=x.device, dtype=torch.float32).unsqueeze(1)  # (T, 1)
        freq = torch.exp(torch.arange(0, H, 2, device=x.device) * (-math.log(10000.0) / H))  # (H/2,)
        pe = torch.zeros(T, H, device=x.device)
        pe[:, 0::2] = torch.sin(pos * freq)
        pe[:, 1::2] = torch.cos(pos * freq[: H // 2])
        return self.dropout(x + pe.to(x.dtype))


def pool_frames(
    h: torch.Tensor, mask: torch.Tensor, pooling: str, query: torch.Tensor | None = None, num_frames: int = 5
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pool an encoded frame sequence (see the module docstring for the choices).

    Args:
        h: float (B, T, D).
        mask: (B, T), 1 = frame to pool over (all ones reproduces the seed's unmasked pooling).
        pooling: one of POOLINGS.
        query: float (D,), the learned query of "attn".
        num_frames: the fixed T of "none"; shorter sequences are zero-padded, longer ones rejected.

    Returns:
        pooled float (B, D), or (B, num_frames·D) for "none"; and the attention weights (B, T) for
        "attn", else None.
    """
    B, T, D = h.shape
    valid = mask > 0
    if pooling == "mean":
        return masked_mean(h, mask), None
    if pooling in ("first", "last"):
        steps = torch.arange(T, device=h.device)
        if pooling == "first":  # first valid frame (index 0 for a padded-at-the-end sequence)
            index = torch.where(valid, T - 1 - steps, -1).argmax(1)
        else:  # last valid frame (index −1 when nothing is padded, the seed's `[:, -1]`)
            index = torch.where(valid, steps, -1).argmax(1)
        return h[torch.arange(B, device=h.device), index], None  # (B, D)
    if pooling == "attn":
        scores = (h @ query) / math.sqrt(D)  # (B, T)
        weights = torch.softmax(scores.masked_fill(~valid, torch.finfo(scores.dtype).min), dim=1)
        weights = weights * valid  # exact zeros on pads; a row without frames pools to zero
        return (weights.unsqueeze(-1) * h).sum(1), weights
    if pooling == "none":
        if T > num_frames:
            raise ValueError(f'pooling="none" flattens exactly num_frames={num_frames} frames; got T={T}')
        h = F.pad(h * valid.unsqueeze(-1).to(h.dtype), (0, 0, 0, num_frames - T))  # (B, num_frames, D)
        return h.reshape(B, num_frames * D), None
    raise ValueError(f"unknown pooling {pooling!r}; choose from {POOLINGS}")


def random_window(
    frames: torch.Tensor, frame_mask: torch.Tensor, window: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random contiguous window of `window` valid frames per example (`SampleRandomSequence`).

    Returns frames (B, window, D) and mask (B, window): 0 where the window runs past the n valid
    frames (the seed repeats frame n−1 there; so does the returned `frames`).
    """
    B, T, D = frames.shape
    n = (frame_mask > 0).sum(1, keepdim=True)  # (B, 1)
    start = (torch.rand(B, 1, device=frames.device) * ((n - window).clamp_min(0) + 1)).long()
    pos = start + torch.arange(window, device=frames.device)  # (B, W)
    mask = (pos < n).to(frames.dtype)
    pos = torch.minimum(pos, (n - 1).clamp_min(0))
    order = torch.argsort((frame_mask <= 0).to(torch.int8), dim=1, stable=True)  # valid frames first
    index = order.gather(1, pos)
    return frames.gather(1, index.unsqueeze(-1).expand(B, window, D)), mask


@dataclass
class FrameBertConfig:
    num_classes: int = 3862  # C; segment fine-tuning keeps the 3862-way head (data picks 1,000 columns)
    feature_dim: int = 1152  # frame width: 1024 rgb ‖ 128 audio
    hidden_size: int = 1152  # encoder width; ≠ feature_dim adds an input Linear (tiny variants only)
    num_layers: int = 2  # L (`bert_hidden_layer`: 2 or 3)
    num_heads: int = 12  # `bert_attention_heads`
    intermediate_size: int = 3072  # FFN width (bert_config.json)
    dropout: float = 0.1  # hidden and attention-probability dropout (`bert_dropout_prob`)
    pooling: str = "none"  # "none" | "mean" | "first" | "last" (= the seed's "first") | "attn"
    num_frames: int = 5  # T flattened by pooling "none" (a segment)
    use_position: str = "none"  # "none" (seed default) | "sinusoidal" | "learned" (BERT positions + LN)
    max_positions: int = 512  # size of the learned position table (bert_config.json)
    mask_padding: bool = True  # mask padded frames in attention and pooling; False = the seed (no mask)
    train_window: int = 5  # training inputs longer than this are cut to a random window; 0 = never
    moe_mixtures: int = 5  # E of the MoE classifier (`moe_num_mixtures`)
    moe_l2: float = 1e-6  # MoE L2 scale (`--moe_l2=1e-6`); reported by l2_penalty()


class _FrameModel(nn.Module):
    """Shared input handling, pooling and MoE head of FrameBERT and BertCross."""

    def _init_head(self, cfg, width: int) -> None:
        if cfg.pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {cfg.pooling!r}; choose from {POOLINGS}")
        self.query = nn.Parameter(torch.randn(width) * 0.02) if cfg.pooling == "attn" else None
        pooled_dim = cfg.num_frames * width if cfg.pooling == "none" else width
        self.classifier = MoEClassifier(pooled_dim, cfg.num_classes, cfg.moe_mixtures, cfg.moe_l2)

    def _inputs(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.cfg
        if self.training and cfg.train_window and frames.shape[1] > cfg.train_window:
            return random_window(frames, frame_mask, cfg.train_window)
        return frames, frame_mask.to(frames.dtype)

    def _head(self, h: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        pool_mask = mask if cfg.mask_padding else torch.ones_like(mask)
        pooled, weights = pool_frames(h, pool_mask, cfg.pooling, self.query, cfg.num_frames)
        out = {**self.classifier(pooled), "embedding": pooled}
        if weights is not None:
            out["pool_weights"] = weights
        return out

    def l2_penalty(self) -> torch.Tensor:
        """The MoE's TF-style L2 term (add it to the loss; it is not weight decay)."""
        return self.classifier.l2_penalty()


class FrameBert(_FrameModel):
    """Seed 003's `Bert` model: a BERT encoder over the 1152-d frames, pooled, MoE classifier."""

    def __init__(self, cfg: FrameBertConfig):
        super().__init__()
        self.cfg = cfg
        H = cfg.hidden_size
        self.input_proj = nn.Linear(cfg.feature_dim, H) if H != cfg.feature_dim else None
        self.position = FramePositions(cfg.use_position, H, cfg.max_positions, cfg.dropout)
        self.encoder = FrameEncoder(
            bert_config(H, cfg.num_layers, cfg.num_heads, cfg.intermediate_size, cfg.dropout)
        )
        self._init_head(cfg, H)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor, **_) -> dict[str, torch.Tensor]:
        """frames float (B, T, 1152), frame_mask (B, T); T ≤ num_frames for pooling "none" in eval.

        Returns:
            probs (B, C), the MoE output; logits (B, C) = logit(clamped probs); embedding the pooled
            vector (B, D) or (B, num_frames·D); pool_weights (B, T) for pooling "attn".
        """
        frames, mask = self._inputs(frames, frame_mask)
        x = self.input_proj(frames) if self.input_proj is not None else frames  # (B, T, H)
        h = self.encoder(self.position(x), mask if self.cfg.mask_padding else None)  # (B, T, H)
        return self._head(h, mask)


@dataclass
class BertCrossConfig:
    num_classes: int = 3862  # C; segment fine-tuning keeps the 3862-way head (data picks 1,000 columns)
    rgb_dim: int = 1024  # leading frame features
    audio_dim: int = 128  # trailing frame features
    rgb_hidden: int = 1024  # rgb stack width; ≠ rgb_dim adds an input Linear (tiny variants only)
    audio_hidden: int = 128  # audio stack width; ≠ audio_dim adds an input Linear (tiny variants only)
    num_layers: int = 2  # L: the rgb and audio stacks have L−1 layers, the joint stack 1
    num_heads: int = 8  # heads of all three stacks (head widths 128, 16, 144 at full size)
    intermediate_size: int = 3072  # FFN width of all three stacks (one bert_config.json in the seed)
    dropout: float = 0.1  # hidden and attention-probability dropout (`bert_dropout_prob`)
    pooling: str = "mean"  # "mean" (BERTCrossMean) | "attn" (BERTCrossAttn) | "none" | "first" | "last"
    num_frames: int = 5  # T flattened by pooling "none" (a segment)
    use_position: str = "none"  # per stack, as the seed's BertTransformer: "none" | "sinusoidal" | "learned"
    max_positions: int = 512  # size of each learned position table
    mask_padding: bool = True  # mask padded frames in attention and pooling; False = the seed (no mask)
    train_window: int = 5  # training inputs longer than this are cut to a random window; 0 = never
    moe_mixtures: int = 5  # E of the MoE classifier (`moe_num_mixtures`)
    moe_l2: float = 1e-6  # MoE L2 scale (`--moe_l2=1e-6`); reported by l2_penalty()


class BertCross(_FrameModel):
    """Seed 003's `BertCross`: per-modality encoders, then a 1-layer joint encoder, pooled, MoE."""

    def __init__(self, cfg: BertCrossConfig):
        super().__init__()
        self.cfg = cfg
        widths = {
            "rgb": cfg.rgb_hidden,
            "audio": cfg.audio_hidden,
            "joint": cfg.rgb_hidden + cfg.audio_hidden,
        }
        layers = {"rgb": cfg.num_layers - 1, "audio": cfg.num_layers - 1, "joint": 1}
        dims = {"rgb": cfg.rgb_dim, "audio": cfg.audio_dim}
        self.input_proj = nn.ModuleDict(
            {k: nn.Linear(dims[k], widths[k]) for k in dims if dims[k] != widths[k]}
        )
        self.position = nn.ModuleDict(
            {
                k: FramePositions(cfg.use_position, w, cfg.max_positions, cfg.dropout)
                for k, w in widths.items()
            }
        )
        self.encoders = nn.ModuleDict(
            {
                k: FrameEncoder(bert_config(w, layers[k], cfg.num_heads, cfg.intermediate_size, cfg.dropout))
                for k, w in widths.items()
            }
        )
        self._init_head(cfg, widths["joint"])

    def _encode(self, key: str, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if key in self.input_proj:
            x = self.input_proj[key](x)
        return self.encoders[key](self.position[key](x), mask)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor, **_) -> dict[str, torch.Tensor]:
        """frames float (B, T, 1152), frame_mask (B, T); outputs as `FrameBert.forward`."""
        frames, mask = self._inputs(frames, frame_mask)
        attn_mask = mask if self.cfg.mask_padding else None
        rgb = self._encode("rgb", frames[..., : self.cfg.rgb_dim], attn_mask)  # (B, T, H_rgb)
        audio = self._encode("audio", frames[..., self.cfg.rgb_dim :], attn_mask)  # (B, T, H_audio)
        h = self._encode("joint", torch.cat([rgb, audio], -1), attn_mask)  # (B, T, H_rgb + H_audio)
        return self._head(h, mask)


# ---------------------------------------------------------------- registered variants
# Tiny: seconds on CPU; the 1152-d input kept and projected to narrow stacks, MoE with 2 mixtures.
BERT_TINY = dict(hidden_size=32, num_heads=2, intermediate_size=64, moe_mixtures=2)
CROSS_TINY = dict(rgb_hidden=24, audio_hidden=8, num_heads=2, intermediate_size=32, moe_mixtures=2)


@register_model
def framebert_yt8m(**overrides) -> FrameBert:  # BERT(L2H12): flatten the 5 frames
    return FrameBert(FrameBertConfig(**overrides))


@register_model
def framebert_yt8m_tiny(**overrides) -> FrameBert:
    return FrameBert(FrameBertConfig(**{**BERT_TINY, **overrides}))


@register_model
def framebert_l3_yt8m(**overrides) -> FrameBert:  # BERT(L3H12)
    return FrameBert(FrameBertConfig(**{"num_layers": 3, **overrides}))


@register_model
def framebert_l3_yt8m_tiny(**overrides) -> FrameBert:
    return FrameBert(FrameBertConfig(**{**BERT_TINY, "num_layers": 3, **overrides}))


@register_model
def framebert_mean_yt8m(**overrides) -> FrameBert:  # BERTMean(L2H12)
    return FrameBert(FrameBertConfig(**{"pooling": "mean", **overrides}))


@register_model
def framebert_mean_yt8m_tiny(**overrides) -> FrameBert:
    return FrameBert(FrameBertConfig(**{**BERT_TINY, "pooling": "mean", **overrides}))


@register_model
def framebert_first_yt8m(**overrides) -> FrameBert:  # index 0; the seed's BERTFirst is pooling="last"
    return FrameBert(FrameBertConfig(**{"pooling": "first", **overrides}))


@register_model
def framebert_first_yt8m_tiny(**overrides) -> FrameBert:
    return FrameBert(FrameBertConfig(**{**BERT_TINY, "pooling": "first", **overrides}))


@register_model
def bertcross_yt8m(**overrides) -> BertCross:  # BERTCrossMean(L2H8)
    return BertCross(BertCrossConfig(**overrides))


@register_model
def bertcross_yt8m_tiny(**overrides) -> BertCross:
    return BertCross(BertCrossConfig(**{**CROSS_TINY, **overrides}))


@register_model
def bertcross_attn_yt8m(**overrides) -> BertCross:  # BERTCrossAttn(L2H8)
    return BertCross(BertCrossConfig(**{"pooling": "attn", **overrides}))


@register_model
def bertcross_attn_yt8m_tiny(**overrides) -> BertCross:
    return BertCross(BertCrossConfig(**{**CROSS_TINY, "pooling": "attn", **overrides}))
