"""Video-level classifiers of the YouTube-8M starter code (SPEC 3.3), shared by the YT8M families.

- `MoEClassifier`: per class a softmax gate over E logistic experts plus a dummy "none" expert,
  ``P(c|x) = Σ_{e<E} softmax_{E+1}(W_g x)_{c,e} · σ(W_e x + b_e)_c``, with the optional probability
  gating of Willow's GatedNetVLAD, ``p' = p ⊙ σ(BN(p W_pp))``.
- `LogisticClassifier`: one linear layer (linrongc's `LogisticModel`, L2 1e-5 in the NeXtVLAD scripts).

Both return a dict with `logits` (B, C), so losses can always use BCE-with-logits. The MoE computes a
probability, not a logit: it returns `probs` (B, C) and ``logits = logit(clamp(probs, eps, 1 − eps))``;
a loss on `probs` (the seed's cross-entropy on probabilities) and one on `logits` agree up to the clamp.

The L2 regularisers of the TF code (`slim.l2_regularizer(scale)`, i.e. ``scale · Σ w² / 2``) are not
weight decay: each classifier keeps its scale in `l2` and `l2_penalty()` returns the term for the
objective to add. Parameter layout follows the TF reshapes: gate column ``c·(E+1) + e`` and expert
column ``c·E + e`` belong to class c, mixture e, so TF checkpoints map over without a permutation.

References: Abu-El-Haija et al., "YouTube-8M: A Large-Scale Video Classification Benchmark", 2016
(`google/youtube-8m` `video_level_models.MoeModel`); Miech et al., "Learnable pooling with Context
Gating for video classification", 2017 (probability gating).
"""

from __future__ import annotations

import math

import torch
from torch import nn

PROB_GATING_INPUTS = ("prob", "input")


class MoEClassifier(nn.Module):
    """Mixture of logistic experts per class, with an optional probability gating.

    Args:
        in_dim: D, the width of the input vector.
        num_classes: C.
        num_mixtures: E, experts per class excluding the dummy one (2 in google's code, 5 in the
            seed 003 / Willow flags).
        l2: scale of the L2 penalty on the gate and expert weights (`moe_l2`: 1e-8 default, 1e-6 in
            seed 003). Only reported by `l2_penalty()`; the objective adds it.
        prob_gating: Willow's `moe_prob_gating`: ``p' = p ⊙ σ(BN(g W_pp))`` (GatedNetVLAD).
        prob_gating_input: "prob": g = p and W_pp is (C, C) (the default flag); "input": g = x and
            W_pp is (D, C).
        eps: clamp of the probabilities before the logit.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        num_mixtures: int = 2,
        l2: float = 1e-8,
        prob_gating: bool = False,
        prob_gating_input: str = "prob",
        eps: float = 1e-6,
    ):
        super().__init__()
        if prob_gating_input not in PROB_GATING_INPUTS:
            raise ValueError(
                f"unknown prob_gating_input {prob_gating_input!r}; choose from {PROB_GATING_INPUTS}"
            )
        self.num_classes, self.num_mixtures, self.l2, self.eps = num_classes, num_mixtures, l2, eps
        self.gates = nn.Linear(in_dim, num_classes * (num_mixtures + 1), bias=False)
        self.experts = nn.Linear(in_dim, num_classes * num_mixtures)
        for layer in (self.gates, self.experts):  # slim.fully_connected defaults: glorot-uniform, zero bias
            nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(self.experts.bias)
        self.prob_gating_input = prob_gating_input
        if prob_gating:
            gate_in = num_classes if prob_gating_input == "prob" else in_dim
            self.prob_gating = nn.Linear(gate_in, num_classes, bias=False)  # W_pp, no L2 in the TF code
            nn.init.normal_(self.prob_gating.weight, std=1 / math.sqrt(num_classes))
            self.prob_gating_bn = nn.BatchNorm1d(num_classes)
        else:
            self.prob_gating = self.prob_gating_bn = None

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x float (B, D) → {"probs": (B, C) in [0, 1], "logits": (B, C) = logit of the clamped probs}."""
        B, C, E = x.shape[0], self.num_classes, self.num_mixtures
        gate = torch.softmax(self.gates(x).reshape(B, C, E + 1), dim=-1)  # (B, C, E+1), last = dummy
        expert = torch.sigmoid(self.experts(x).reshape(B, C, E))  # (B, C, E)
        probs = (gate[..., :E] * expert).sum(-1)  # (B, C); the dummy expert always predicts 0
        if self.prob_gating is not None:
            g = self.prob_gating(probs if self.prob_gating_input == "prob" else x)  # (B, C)
            probs = probs * torch.sigmoid(self.prob_gating_bn(g))
        return {"probs": probs, "logits": torch.logit(probs, eps=self.eps)}

    def l2_penalty(self) -> torch.Tensor:
        """``l2 · (‖W_g‖² + ‖W_e‖²) / 2``, TF's `l2_regularizer` on the gate and expert weights."""
        return self.l2 * (self.gates.weight.square().sum() + self.experts.weight.square().sum()) / 2


class LogisticClassifier(nn.Module):
    """``logits = W x + b`` (linrongc's / google's `LogisticModel`), He-normal initialised.

    Args:
        in_dim: D.
        num_classes: C.
        l2: scale of the L2 penalty on weights and bias (`l2_penalty`: 1e-8 default, 1e-5 in the
            NeXtVLAD scripts); reported by `l2_penalty()`.
    """

    def __init__(self, in_dim: int, num_classes: int, l2: float = 1e-8):
        super().__init__()
        self.l2 = l2
        self.fc = nn.Linear(in_dim, num_classes)
        nn.init.kaiming_normal_(self.fc.weight)  # slim.variance_scaling_initializer() in linrongc's code
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x float (B, D) → {"logits": (B, C)}."""
        return {"logits": self.fc(x)}

    def l2_penalty(self) -> torch.Tensor:
        """``l2 · (‖W‖² + ‖b‖²) / 2`` (weights and biases are both regularised in the TF code)."""
        return self.l2 * (self.fc.weight.square().sum() + self.fc.bias.square().sum()) / 2


def build_classifier(
    kind: str,
    in_dim: int,
    num_classes: int,
    *,
    moe_mixtures: int,
    moe_l2: float,
    logistic_l2: float,
    **moe_kwargs,
) -> nn.Module:
    """`kind` "moe" → `MoEClassifier`, "logistic" → `LogisticClassifier` (a clear error otherwise)."""
    if kind == "moe":
        return MoEClassifier(in_dim, num_classes, moe_mixtures, moe_l2, **moe_kwargs)
    if kind == "logistic":
        return LogisticClassifier(in_dim, num_classes, logistic_l2)
    raise ValueError(f"unknown classifier {kind!r}; choose from ('moe', 'logistic')")
