"""VLAD-family YouTube-8M frame models: NetVLAD / GatedNetVLAD, NeXtVLAD and MixNeXtVLAD (seed 003).

Input is the YT8M batch contract: `frames` (B, T, 1152) = 1024 dequantised rgb ‖ 128 audio, and
`frame_mask` (B, T); every model returns `logits` (B, C) (C = 3862 by default, `num_classes`).

- `GatedNetVLAD` (SPEC 3.4; Willow's `NetVLADModelLF --gating=True` as run by seed 003's
  `hugh_netvlad_hs1024_cs8.sh`): video NetVLAD(1024, K) ‖ audio NetVLAD(128, K/2) → FC H (no bias)
  → BN → ReLU6 → FC 2H + bias → context gating ``h ⊙ σ(BN(h W))`` → MoE with probability gating.
  The seed README calls this model "GatedNetVLAD(H1024C16)", but its script and ensemble file use
  hs = 1024, cs = 8: the registered variant follows the script. `netvlad_yt8m` drops both gatings.
- `NeXtVLADYT8M` (SPEC 3.1 "model head", linrongc's `NeXtVLADModel`): video NeXtVLAD(1024, K, G) ‖
  audio NeXtVLAD(128, K/2, G/2), both with cluster BN and VLAD BN → dropout → FC H (no bias) → BN →
  SE gating with BN (reduction r) → logistic (or MoE) classifier.
- `MixNeXtVLADYT8M` (SPEC 3.2): M such branches mixed by ``a = softmax(W BN(x̄) + b)``,
  ``logits = Σ_m a_m z_m``; `branch_logits` (M, B, C) and `gate` (B, M) feed
  `vmmlib.objectives.losses.mixture_distillation` (seed: T = 3, cl_lambda = 9, no per-branch BCE).

Frame draws (`sample_frames`): the seed's `SampleRandomFrames` draws `iterations` frames uniformly
with replacement among the valid ones, and does so at inference too, which makes its predictions
random. Here the draw is random only in training; in eval the frames are evenly spaced
(``index_j = ⌊j·n / iterations⌋``, each frame iterations/n times when n divides it, which is the
expected draw), unless `sample_at_inference=True` reproduces the seed.

The hidden FC over the concatenated VLADs is kept as the two streams' `NeXtVLAD.fc` without bias:
``FC_H(dropout([v ‖ a])) = W_v dropout(v) + W_a dropout(a)`` exactly, with the same weight count as
linrongc's `hidden1_weights`. BatchNorms use PyTorch's momentum/eps, not slim's (0.999 / 1e-3).

References: Arandjelović et al., "NetVLAD", CVPR 2016; Miech et al., "Learnable pooling with Context
Gating for video classification", 2017; Lin et al., "NeXtVLAD", ECCV-W 2018.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vmmlib.models._registry import register_model
from vmmlib.models.layers import NeXtVLAD, SEGating, masked_batch_norm, masked_mean
from vmmlib.models.moe import build_classifier

GATE_INPUTS = ("frames", "feature_axis")


def draw_frames(
    frames: torch.Tensor, frame_mask: torch.Tensor, iterations: int, random: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick `iterations` frames per video among its valid ones (the seed's `SampleRandomFrames`).

    Args:
        frames: float (B, T, D).
        frame_mask: (B, T), 1 = real frame (need not be a prefix).
        iterations: I, frames drawn per video.
        random: True: ``⌊u·n⌋`` for u ~ U[0, 1), i.e. uniform with replacement and unsorted, as the
            seed; False: evenly spaced ``⌊j·n / I⌋``, sorted.

    Returns:
        frames float (B, I, D) and mask (B, I): all ones, except all zeros for a video with no frame.
    """
    B, T, D = frames.shape
    n = (frame_mask > 0).sum(1, keepdim=True)  # (B, 1)
    if random:
        pos = (torch.rand(B, iterations, device=frames.device) * n).long()  # (B, I)
    else:
        pos = torch.arange(iterations, device=frames.device) * n // iterations  # (B, I)
    pos = torch.minimum(pos, (n - 1).clamp_min(0))
    # valid positions first, in time order, so pos indexes the n real frames wherever they are
    order = torch.argsort((frame_mask <= 0).to(torch.int8), dim=1, stable=True)  # (B, T)
    index = order.gather(1, pos)  # (B, I)
    drawn = frames.gather(1, index.unsqueeze(-1).expand(B, iterations, D))  # (B, I, D)
    mask = (n > 0).to(frames.dtype).expand(B, iterations)
    return drawn, mask


def _select_frames(module: nn.Module, cfg, frames: torch.Tensor, frame_mask: torch.Tensor):
    """The frames a model aggregates: the input itself, or `iterations` draws (see module docstring)."""
    expected = cfg.rgb_dim + cfg.audio_dim
    if frames.shape[-1] != expected:
        raise ValueError(
            f"frames have {frames.shape[-1]} features; expected rgb_dim + audio_dim = {expected}"
        )
    if not cfg.sample_frames:
        return frames, frame_mask.to(frames.dtype)
    return draw_frames(frames, frame_mask, cfg.iterations, random=module.training or cfg.sample_at_inference)


# ---------------------------------------------------------------- NetVLAD / GatedNetVLAD (SPEC 3.4)


class NetVLAD(nn.Module):
    """NetVLAD over a masked frame sequence, Willow's form (soft assignment, learned centres).

    ``a = softmax_K(BN(x W))``, ``v_k = Σ_i a_ik (x_i − c_k)`` over valid frames, L2 over the feature
    axis per cluster (intra-normalisation), flatten (feature-major, as TF's reshape of (N, K)), global L2.

    Args:
        feature_dim: N.
        clusters: K.
        cluster_bn: BN on the cluster logits (statistics over valid frames); without it the cluster FC
            gets a bias instead (Willow's `add_batch_norm=False`).
    """

    def __init__(self, feature_dim: int, clusters: int, cluster_bn: bool = True):
        super().__init__()
        std = 1 / math.sqrt(feature_dim)  # the TF random_normal_initializer of every NetVLAD weight
        self.cluster_logits = nn.Linear(feature_dim, clusters, bias=not cluster_bn)
        nn.init.normal_(self.cluster_logits.weight, std=std)
        if self.cluster_logits.bias is not None:
            nn.init.normal_(self.cluster_logits.bias, std=std)
        self.cluster_bn = nn.BatchNorm1d(clusters) if cluster_bn else None
        self.centers = nn.Parameter(torch.randn(1, feature_dim, clusters) * std)  # (1, N, K)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """frames float (B, T, N), frame_mask (B, T) → float (B, N·K), unit L2 norm."""
        B, T, N = frames.shape
        mask = frame_mask.to(frames.dtype)
        logits = self.cluster_logits(frames)  # (B, T, K)
        if self.cluster_bn is not None:
            logits = masked_batch_norm(self.cluster_bn, logits, mask)
        assign = torch.softmax(logits, dim=-1) * mask.unsqueeze(-1)  # (B, T, K), pads weigh 0
        a = assign.sum(1, keepdim=True) * self.centers  # (B, 1, K) * (1, N, K) -> (B, N, K)
        vlad = torch.bmm(frames.transpose(1, 2), assign) - a  # (B, N, T) @ (B, T, K) -> (B, N, K)
        vlad = F.normalize(vlad, dim=1)  # intra-normalisation over the feature axis
        return F.normalize(vlad.reshape(B, -1), dim=1)  # (B, N*K)


@dataclass
class NetVLADConfig:
    num_classes: int = 3862  # C; segment fine-tuning keeps the 3862-way head (data picks 1,000 columns)
    rgb_dim: int = 1024  # leading frame features: dequantised rgb
    audio_dim: int = 128  # trailing frame features: audio
    clusters: int = 8  # K of the video NetVLAD; the audio one has K/2 (`netvlad_cluster_size`, cs8)
    hidden: int = 1024  # H; the second FC has 2H (`netvlad_hidden_size`, hs1024)
    cluster_bn: bool = True  # BN on cluster logits, hidden 1 and the context gate (`netvlad_add_batch_norm`)
    context_gating: bool = True  # h ⊙ σ(BN(h W)) after the second FC (`--gating=True`)
    classifier: str = "moe"  # "moe" | "logistic"
    moe_mixtures: int = 5  # E (`moe_num_mixtures`, 5 in seed 003's flags)
    moe_l2: float = 1e-6  # MoE L2 scale (`--moe_l2=1e-6`); reported by l2_penalty()
    prob_gating: bool = True  # MoE probability gating p ⊙ σ(BN(p W)) (`--moe_prob_gating=True`)
    logistic_l2: float = 1e-8  # L2 scale of the logistic classifier, if chosen
    sample_frames: bool = True  # aggregate `iterations` drawn frames (seed default) instead of all frames
    iterations: int = 5  # frames drawn per example (`--iterations=5`)
    sample_at_inference: bool = False  # True = the seed: random draws in eval too (stochastic predictions)


class GatedNetVLAD(nn.Module):
    """Willow's NetVLADModelLF: two NetVLADs → FC → BN → ReLU6 → FC 2H → context gating → MoE."""

    def __init__(self, cfg: NetVLADConfig):
        super().__init__()
        self.cfg = cfg
        K, H = cfg.clusters, cfg.hidden
        self.video = NetVLAD(cfg.rgb_dim, K, cfg.cluster_bn)
        self.audio = NetVLAD(cfg.audio_dim, K // 2, cfg.cluster_bn)
        vlad_dim = cfg.rgb_dim * K + cfg.audio_dim * (K // 2)
        self.hidden1 = nn.Linear(vlad_dim, H, bias=False)
        nn.init.normal_(self.hidden1.weight, std=1 / math.sqrt(vlad_dim))
        self.hidden1_bn = nn.BatchNorm1d(H)
        self.hidden2 = nn.Linear(H, 2 * H)
        nn.init.normal_(self.hidden2.weight, std=1 / math.sqrt(H))
        nn.init.normal_(self.hidden2.bias, std=0.01)
        if cfg.context_gating:
            self.gating = nn.Linear(2 * H, 2 * H, bias=not cfg.cluster_bn)
            nn.init.normal_(self.gating.weight, std=1 / math.sqrt(2 * H))
            if self.gating.bias is not None:
                nn.init.normal_(self.gating.bias, std=0.01)
            self.gating_bn = nn.BatchNorm1d(2 * H) if cfg.cluster_bn else None
        else:
            self.gating = self.gating_bn = None
        moe_kwargs = {"prob_gating": cfg.prob_gating} if cfg.classifier == "moe" else {}
        self.classifier = build_classifier(
            cfg.classifier,
            2 * H,
            cfg.num_classes,
            moe_mixtures=cfg.moe_mixtures,
            moe_l2=cfg.moe_l2,
            logistic_l2=cfg.logistic_l2,
            **moe_kwargs,
        )

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor, **_) -> dict[str, torch.Tensor]:
        """frames float (B, T, 1152), frame_mask (B, T).

        Returns:
            logits (B, C); probs (B, C) with the MoE classifier (its output is a probability and
            logits = logit(clamped probs)); embedding (B, 2H), the classifier input.
        """
        frames, mask = _select_frames(self, self.cfg, frames, frame_mask)  # (B, T', 1152), (B, T')
        rgb = self.cfg.rgb_dim
        vlad = torch.cat([self.video(frames[..., :rgb], mask), self.audio(frames[..., rgb:], mask)], -1)
        h = F.relu6(self.hidden1_bn(self.hidden1(vlad)))  # (B, N_v K + N_a K/2) -> (B, H)
        h = self.hidden2(h)  # (B, 2H); Willow applies no activation here
        if self.gating is not None:
            g = self.gating(h)
            h = h * torch.sigmoid(self.gating_bn(g) if self.gating_bn is not None else g)
        return {**self.classifier(h), "embedding": h}

    def l2_penalty(self) -> torch.Tensor:
        """The classifier's TF-style L2 term (add it to the loss; it is not weight decay)."""
        return self.classifier.l2_penalty()


# ---------------------------------------------------------------- NeXtVLAD / MixNeXtVLAD (SPEC 3.1, 3.2)


class SEGatingBN(SEGating):
    """SE context gating in linrongc's YT8M form: ``x ⊙ σ(W₂ ReLU(BN(W₁ x)))`` (QQ's `SEGating` + BN)."""

    def __init__(self, dim: int, ratio: int = 8):
        super().__init__(dim, ratio)
        self.bn = nn.BatchNorm1d(dim // ratio)  # `gating_bn`

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, D)
        return x * torch.sigmoid(self.excite(F.relu(self.bn(self.squeeze(x)))))


@dataclass
class NeXtVLADYT8MConfig:
    num_classes: int = 3862  # C; segment fine-tuning keeps the 3862-way head (data picks 1,000 columns)
    rgb_dim: int = 1024  # leading frame features: N of the video NeXtVLAD
    audio_dim: int = 128  # trailing frame features: N of the audio NeXtVLAD
    clusters: int = 128  # K of the video NeXtVLAD; audio has K/2 (112 in the MixNeXtVLAD scripts)
    groups: int = 8  # G of the video NeXtVLAD; audio has G/2
    expansion: int = 2  # λ
    hidden: int = 2048  # H, the FC after the concatenated VLADs (`nextvlad_hidden_size`)
    dropout: float = 0.5  # dropout on the concatenated VLADs (`drop_rate`)
    se_ratio: int = 8  # SE gating reduction r (`gating_reduction`: 8 local runs, 16 MixNeXtVLAD)
    cluster_bn: bool = True  # BN on the cluster logits (linrongc's `cluster_bn`)
    vlad_bn: bool = True  # BN on each flattened VLAD (linrongc's `vlad_bn`)
    classifier: str = "logistic"  # "logistic" (`LogisticModel`, the NeXtVLAD scripts) | "moe"
    logistic_l2: float = 1e-5  # L2 scale of the logistic classifier (`--l2_penalty=1e-5`)
    moe_mixtures: int = 5  # E, with classifier="moe"
    moe_l2: float = 1e-6  # MoE L2 scale, with classifier="moe"
    sample_frames: bool = False  # draw `iterations` frames (seed 003) instead of all frames (linrongc)
    iterations: int = 300  # frames drawn per example (seed 003: "Iter 300" / "Iter 60")
    sample_at_inference: bool = False  # True = the seed: random draws in eval too (stochastic predictions)
    num_branches: int = 3  # MixNeXtVLAD only: M (`mix_number`)
    gate_input: str = "frames"  # MixNeXtVLAD only: "frames" = mean of the valid frames, (B, 1152) (paper);
    # "feature_axis" = per-frame mean over features, (B, T) (linrongc's / seed 003's code)
    max_frames: int = 300  # MixNeXtVLAD "feature_axis" gate without sample_frames: the padded T


class NeXtVLADBranch(nn.Module):
    """linrongc's NeXtVLAD model on already selected frames: two NeXtVLADs → FC → BN → SE → classifier."""

    def __init__(self, cfg: NeXtVLADYT8MConfig):
        super().__init__()
        K, G, lam, H, p = cfg.clusters, cfg.groups, cfg.expansion, cfg.hidden, cfg.dropout
        self.video = NeXtVLAD(cfg.rgb_dim, K, G, lam, H, p, cfg.cluster_bn, cfg.vlad_bn)
        self.audio = NeXtVLAD(cfg.audio_dim, K // 2, G // 2, lam, H, p, cfg.cluster_bn, cfg.vlad_bn)
        for stream in (self.video, self.audio):  # the two halves of one bias-free `hidden1_weights`
            stream.fc.register_parameter("bias", None)
        self.hidden_bn = nn.BatchNorm1d(H)  # `hidden1_bn`, no activation after it
        self.se = SEGatingBN(H, cfg.se_ratio)
        self.classifier = build_classifier(
            cfg.classifier,
            H,
            cfg.num_classes,
            moe_mixtures=cfg.moe_mixtures,
            moe_l2=cfg.moe_l2,
            logistic_l2=cfg.logistic_l2,
        )

    def forward(self, frames: torch.Tensor, mask: torch.Tensor, rgb_dim: int) -> dict[str, torch.Tensor]:
        # FC_H(dropout([v ‖ a])) as the sum of the streams' bias-free output FCs: (B, H)
        h = self.video(frames[..., :rgb_dim], mask) + self.audio(frames[..., rgb_dim:], mask)
        h = self.se(self.hidden_bn(h))  # (B, H)
        return {**self.classifier(h), "embedding": h}


class NeXtVLADYT8M(nn.Module):
    """A single NeXtVLAD model (linrongc's `NeXtVLADModel`)."""

    def __init__(self, cfg: NeXtVLADYT8MConfig):
        super().__init__()
        self.cfg = cfg
        self.branch = NeXtVLADBranch(cfg)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor, **_) -> dict[str, torch.Tensor]:
        """frames float (B, T, 1152), frame_mask (B, T).

        Returns:
            logits (B, C); embedding (B, H), the SE-gated hidden vector; probs (B, C) with the MoE.
        """
        frames, mask = _select_frames(self, self.cfg, frames, frame_mask)
        return self.branch(frames, mask, self.cfg.rgb_dim)

    def l2_penalty(self) -> torch.Tensor:
        """The classifier's TF-style L2 term (add it to the loss; it is not weight decay)."""
        return self.branch.classifier.l2_penalty()


class MixNeXtVLADYT8M(nn.Module):
    """Gated mixture of M NeXtVLAD branches (linrongc's / seed 003's `MixNeXtVladModel`)."""

    def __init__(self, cfg: NeXtVLADYT8MConfig):
        super().__init__()
        if cfg.gate_input not in GATE_INPUTS:
            raise ValueError(f"unknown gate_input {cfg.gate_input!r}; choose from {GATE_INPUTS}")
        self.cfg = cfg
        self.branches = nn.ModuleList(NeXtVLADBranch(cfg) for _ in range(cfg.num_branches))
        if cfg.gate_input == "frames":
            gate_dim = cfg.rgb_dim + cfg.audio_dim
        else:
            gate_dim = cfg.iterations if cfg.sample_frames else cfg.max_frames
        self.gate_bn = nn.BatchNorm1d(gate_dim)  # `mix_weights_bn`
        self.gate = nn.Linear(gate_dim, cfg.num_branches)  # `mix_weights`
        nn.init.kaiming_normal_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor, **_) -> dict[str, torch.Tensor]:
        """frames float (B, T, 1152), frame_mask (B, T).

        Returns:
            logits (B, C) = Σ_m gate_m · branch_logits_m; gate (B, M), softmax weights;
            branch_logits (M, B, C), for `mixture_distillation` and per-branch BCE;
            branch_embeddings (M, B, H).
        """
        frames, mask = _select_frames(self, self.cfg, frames, frame_mask)  # (B, T', 1152), (B, T')
        if self.cfg.gate_input == "frames":
            x = masked_mean(frames, mask)  # (B, T', 1152) -> (B, 1152)
        else:
            x = frames.mean(-1) * mask  # (B, T', 1152) -> (B, T'), pads 0
            if x.shape[1] != self.gate_bn.num_features:
                raise ValueError(
                    f"gate_input='feature_axis' needs {self.gate_bn.num_features} frames, got {x.shape[1]}"
                )
        gate = torch.softmax(self.gate(self.gate_bn(x)), dim=-1)  # (B, M)
        outs = [branch(frames, mask, self.cfg.rgb_dim) for branch in self.branches]
        logits = torch.stack([o["logits"] for o in outs])  # (M, B, C)
        return {
            "logits": (gate.T.unsqueeze(-1) * logits).sum(0),  # (M, B, C) -> (B, C)
            "gate": gate,
            "branch_logits": logits,
            "branch_embeddings": torch.stack([o["embedding"] for o in outs]),  # (M, B, H)
        }

    def l2_penalty(self) -> torch.Tensor:
        """Sum of the branch classifiers' TF-style L2 terms."""
        return sum(branch.classifier.l2_penalty() for branch in self.branches)


# ---------------------------------------------------------------- registered variants
# Tiny: seconds on CPU, same structure and the 1024 + 128 inputs; fewer clusters, narrow hidden layers.
NETVLAD_TINY = dict(clusters=4, hidden=32, moe_mixtures=2)
NEXTVLAD_TINY = dict(clusters=4, groups=4, expansion=1, hidden=32, se_ratio=4)
# Seed 003 MixNeXtVLAD scripts: K=112, G=8, λ=2, H=2048, drop 0.5, r=16, 3 branches, logistic L2 1e-5,
# sample_random_frames (default True) with --iterations=300 ("Iter 300"; pass iterations=60 for "Iter 60").
MIX_SEED = dict(clusters=112, se_ratio=16, sample_frames=True, iterations=300)


@register_model
def netvlad_yt8m(**overrides) -> GatedNetVLAD:
    return GatedNetVLAD(NetVLADConfig(**{"context_gating": False, "prob_gating": False, **overrides}))


@register_model
def netvlad_yt8m_tiny(**overrides) -> GatedNetVLAD:
    return GatedNetVLAD(
        NetVLADConfig(**{**NETVLAD_TINY, "context_gating": False, "prob_gating": False, **overrides})
    )


@register_model
def gated_netvlad_yt8m(**overrides) -> GatedNetVLAD:
    return GatedNetVLAD(NetVLADConfig(**overrides))


@register_model
def gated_netvlad_yt8m_tiny(**overrides) -> GatedNetVLAD:
    return GatedNetVLAD(NetVLADConfig(**{**NETVLAD_TINY, **overrides}))


@register_model
def nextvlad_yt8m(**overrides) -> NeXtVLADYT8M:
    return NeXtVLADYT8M(NeXtVLADYT8MConfig(**overrides))


@register_model
def nextvlad_yt8m_tiny(**overrides) -> NeXtVLADYT8M:
    return NeXtVLADYT8M(NeXtVLADYT8MConfig(**{**NEXTVLAD_TINY, **overrides}))


@register_model
def mixnextvlad_yt8m(**overrides) -> MixNeXtVLADYT8M:
    return MixNeXtVLADYT8M(NeXtVLADYT8MConfig(**{**MIX_SEED, **overrides}))


@register_model
def mixnextvlad_yt8m_tiny(**overrides) -> MixNeXtVLADYT8M:
    return MixNeXtVLADYT8M(NeXtVLADYT8MConfig(**{**MIX_SEED, **NEXTVLAD_TINY, "iterations": 8, **overrides}))
