"""Blocks shared by several model families.

- `NeXtVLAD`: Lin, Xiao & Fan, "NeXtVLAD: An Efficient Neural Network to Aggregate Frame-level
  Features for Large-scale Video Classification", ECCV-W 2018 (SPEC 3.1), with the QQ Browser
  baseline's output FC and the frame mask honoured.
- `SEGating`: SE context gating (NeXtVLAD paper §3.3) in the QQ / WBDC form without BN.
- `ConcatDenseSE`: the QQ baseline fusion, concat → dropout → Dense+ReLU → SE (SPEC 3.7).
- `masked_batch_norm`, `masked_mean`: helpers that keep padded frames out of statistics.
- `check_mask_counts`: the guard of a masked-autoencoder input: one masked-token count per sample.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over axis 1 counting only positions where `mask` is 1.

    Args:
        x: float (B, T, D).
        mask: (B, T), 1 = valid, 0 = pad. A row with no valid position gives a zero vector.

    Returns:
        float (B, D).
    """
    mask = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def check_mask_counts(mask: torch.Tensor, what: str = "mask") -> int:
    """The number of masked tokens per row; ValueError if the rows disagree (tokens would mix across
    samples in `x[~mask].reshape(B, -1, C)`) or if a row masks everything."""
    counts = mask.sum(dim=1)
    if (counts != counts[0]).any():
        raise ValueError(
            f"{what}: masked-token counts differ across the batch ({counts.tolist()}); every sample must "
            "mask the same number of tokens (use vmmlib.objectives.masking.tube_mask / random_patch_mask)"
        )
    if int(counts[0]) >= mask.shape[1]:
        raise ValueError(f"{what}: every token is masked")
    return int(counts[0])


def masked_batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Apply `bn` to every row of `x`, taking batch statistics from the valid rows only.

    In training mode the mean/variance (and the running-statistics update) use only rows where
    `mask` is 1, so the amount of padding in a batch does not shift the normalisation. The seeds'
    TF BatchNorm also counted padded frames; their outputs are discarded by the masked attention
    either way. In eval mode this is exactly `bn` (running statistics, row-wise).

    Args:
        bn: the BatchNorm1d holding the affine parameters and running statistics (C features).
        x: float (..., C).
        mask: (...) matching x's leading axes; 1 = valid row.

    Returns:
        float (..., C).
    """
    shape = x.shape
    if not bn.training and bn.track_running_stats:
        return bn(x.reshape(-1, shape[-1])).reshape(shape)
    flat = x.reshape(-1, shape[-1]).float()  # (N, C); statistics in float32 under autocast too
    w = mask.reshape(-1, 1).to(flat.dtype)  # (N, 1)
    n = w.sum()
    mean = (flat * w).sum(0) / n.clamp_min(1.0)  # (C,)
    var = ((flat - mean).square() * w).sum(0) / n.clamp_min(1.0)  # biased, as BatchNorm normalises
    out = (flat - mean) * torch.rsqrt(var + bn.eps)
    if bn.affine:
        out = out * bn.weight + bn.bias
    if bn.training and bn.track_running_stats:
        with torch.no_grad():
            momentum = 0.1 if bn.momentum is None else bn.momentum
            has_rows = n > 0  # a batch of empty videos leaves the running statistics alone
            unbiased = var * n / (n - 1).clamp_min(1.0)
            bn.running_mean.copy_(
                torch.where(has_rows, torch.lerp(bn.running_mean, mean, momentum), bn.running_mean)
            )
            bn.running_var.copy_(
                torch.where(has_rows, torch.lerp(bn.running_var, unbiased, momentum), bn.running_var)
            )
            bn.num_batches_tracked.add_(1)
    return out.reshape(shape).to(x.dtype)


class SEGating(nn.Module):
    """SE context gating, QQ form: ``x * sigmoid(W2 relu(W1 x))``, both linears without bias.

    `W1: dim → dim/ratio`, `W2: dim/ratio → dim` (2·dim²/ratio parameters). He-normal initialisation
    as the QQ TF baseline (`kernel_initializer='he_normal'`).
    """

    def __init__(self, dim: int, ratio: int = 8):
        super().__init__()
        self.squeeze = nn.Linear(dim, dim // ratio, bias=False)
        self.excite = nn.Linear(dim // ratio, dim, bias=False)
        for layer in (self.squeeze, self.excite):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, D)
        return x * torch.sigmoid(self.excite(F.relu(self.squeeze(x))))


class ConcatDenseSE(nn.Module):
    """QQ baseline fusion: concat(inputs) → dropout → Linear+ReLU → SE gating.

    Args:
        in_dim: total width of the concatenated inputs.
        out_dim: output width (the 256-d submitted embedding in the QQ task).
        se_ratio: SE reduction ratio r.
        dropout: dropout on the concatenation (0.2 in the baseline).
    """

    def __init__(self, in_dim: int, out_dim: int = 256, se_ratio: int = 8, dropout: float = 0.2):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fusion = nn.Linear(in_dim, out_dim)
        self.se = SEGating(out_dim, se_ratio)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x = torch.cat(inputs, dim=-1)  # (B, sum of D_i)
        x = F.relu(self.fusion(self.dropout(x)))  # (B, out_dim)
        return self.se(x)


class NeXtVLAD(nn.Module):
    """NeXtVLAD aggregation of a masked frame sequence, followed by dropout and an output FC.

    Forward pass (SPEC 3.1), for frames x (B, T, N) and mask (B, T):

    1. padded frames are zeroed, then ``ẋ = FC(x)`` expands to λN (B, T, λN);
    2. group attention ``σ(FC_G(ẋ))`` (B, T, G), multiplied by the mask so pads contribute nothing;
    3. cluster logits ``FC_{λN→G·K}(ẋ)`` without bias, then the cluster BatchNorm (`cluster_bn`; the
       QQ TF baseline commented it out, seed 000 restored it: "the BN must stay"), softmax over K;
    4. soft assignments times attention, VLAD residuals against learned centres C (λN/G, K),
       intra-normalisation (L2 over the feature axis), flatten to K·λN/G;
    5. optional post-VLAD BatchNorm (`vlad_bn`, linrongc's YT8M code), dropout, FC to `output_dim`.

    Args:
        feature_dim: N, the frame feature width (1536 for QQ Browser).
        clusters: K.
        groups: G.
        expansion: λ; a fraction (e.g. 0.125) shrinks the expanded width for tiny CPU models.
        output_dim: width of the output FC (1024 in the QQ baseline).
        dropout: dropout before the output FC.
        cluster_bn: BatchNorm on the cluster logits (statistics over valid frames only).
        vlad_bn: BatchNorm on the flattened VLAD descriptor.
    """

    def __init__(
        self,
        feature_dim: int,
        clusters: int,
        groups: int = 8,
        expansion: float = 2,
        output_dim: int = 1024,
        dropout: float = 0.2,
        cluster_bn: bool = True,
        vlad_bn: bool = False,
    ):
        super().__init__()
        expanded = round(expansion * feature_dim)  # λN
        if expanded % groups or expanded != expansion * feature_dim:
            raise ValueError(
                f"expansion*feature_dim ({expansion * feature_dim}) must be an integer divisible by groups ({groups})"
            )
        self.clusters, self.groups = clusters, groups
        self.group_dim = expanded // groups  # λN/G
        self.expand = nn.Linear(feature_dim, expanded)
        self.group_attention = nn.Linear(expanded, groups)
        self.cluster_logits = nn.Linear(expanded, groups * clusters, bias=False)
        self.cluster_bn = nn.BatchNorm1d(groups * clusters) if cluster_bn else None
        # glorot-normal over (λN/G, K) as the TF baseline's add_weight(glorot_normal)
        std = math.sqrt(2.0 / (self.group_dim + clusters))
        self.centers = nn.Parameter(torch.randn(1, self.group_dim, clusters) * std)
        self.vlad_bn = nn.BatchNorm1d(clusters * self.group_dim) if vlad_bn else None
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(clusters * self.group_dim, output_dim)

    def forward(self, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """frames float (B, T, N), frame_mask (B, T) 1 = real frame → float (B, output_dim)."""
        B, T, _ = frames.shape
        G, K, D = self.groups, self.clusters, self.group_dim
        mask = frame_mask.to(frames.dtype)
        x = self.expand(frames * mask.unsqueeze(-1))  # (B, T, N) -> (B, T, λN)
        attention = torch.sigmoid(self.group_attention(x)) * mask.unsqueeze(-1)  # (B, T, G)
        attention = attention.reshape(B, T * G, 1)
        logits = self.cluster_logits(x)  # (B, T, G*K)
        if self.cluster_bn is not None:
            logits = masked_batch_norm(self.cluster_bn, logits, mask)
        assign = torch.softmax(logits.reshape(B, T * G, K), dim=-1) * attention  # (B, T*G, K)
        a = assign.sum(1, keepdim=True) * self.centers  # (B, 1, K) * (1, D, K) -> (B, D, K)
        vlad = torch.bmm(assign.transpose(1, 2), x.reshape(B, T * G, D))  # (B, K, D)
        vlad = F.normalize(vlad.transpose(1, 2) - a, dim=1)  # (B, D, K), intra-normalised
        vlad = vlad.reshape(B, D * K)  # same (D, K) flattening order as the TF reshape
        if self.vlad_bn is not None:
            vlad = self.vlad_bn(vlad)
        return self.fc(self.dropout(vlad))  # (B, output_dim)


def tag_head(in_dim: int, num_tags: int, prior_count: float | None = 3.0) -> nn.Linear:
    """Linear(in_dim, num_tags) whose bias starts at the tag prior logit(prior_count / num_tags).

    With a zero bias (Keras' default, the seeds) every tag starts at p = 0.5 while ~1 % are positive;
    under BCE summed over tags the gradient on the embedding is then mostly one shared direction,
    Adam moves the bias by only ~lr per step, and the model writes "most tags are absent" into a
    component common to all embeddings — cosines collapse towards 1 (cf. the prior init of Lin et
    al., "Focal Loss", ICCV 2017). `prior_count` is the expected number of tags per video; None
    keeps the seeds' zero bias. Loading a checkpoint overwrites the bias, so only fresh heads differ.
    """
    head = nn.Linear(in_dim, num_tags)
    if prior_count is None:
        nn.init.zeros_(head.bias)
    else:
        prior = min(prior_count / num_tags, 0.5)
        nn.init.constant_(head.bias, math.log(prior / (1 - prior)))
    return head
