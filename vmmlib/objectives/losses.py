"""Loss functions on tensors: each returns a scalar tensor (the terms built from them: `vmmlib.objectives`).

- `tag_bce`: multi-label BCE, summed over tags (the seeds' "× num_tags"), mean over the batch.
- `asl_loss`: Asymmetric Loss, Ridnik et al., ICCV 2021, the official form (SPEC 4.1), NaN-free.
- `asl_loss_seed`: seed 000's probability-form ASL (γ⁻ = 1, γ⁺ = 0, weight with gradients), made finite.
- `mlm_mask`, `mlm_loss`: BERT masked-language-model corruption (15 %, 80/10/10) and its loss.
- `info_nce`: symmetric in-batch InfoNCE on L2-normalised vectors (seed 000, τ = 0.07, SPEC 4.2).
- `pair_mse`, `keras_kl`, `pair_objective_terms`: seed 000's pair fine-tuning loss (SPEC 4.3).
- `mixture_distillation`: MixNeXtVLAD on-the-fly distillation, Lin et al. 2018 §3.4 (SPEC 3.2).
- `tag_loss_fn`: the one lookup of a multi-label loss by name (`TAG_LOSSES`).

Losses compute in float32 whatever the autocast dtype of their inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

TAG_LOSSES = ("bce", "asl", "asl_seed")
REDUCTIONS = ("batchmean", "sum", "none")


def tag_loss_fn(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The multi-label loss called `name` (`TAG_LOSSES`): bce, asl (official) or asl_seed (seed 000)."""
    if name not in TAG_LOSSES:
        raise ValueError(f"unknown tag_loss {name!r}; valid choices: {', '.join(TAG_LOSSES)}")
    return {"bce": tag_bce, "asl": asl_loss, "asl_seed": asl_loss_seed}[name]


def _reduce(per_sample: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "batchmean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    if reduction == "none":
        return per_sample
    raise ValueError(f"unknown reduction {reduction!r}; choose from {REDUCTIONS}")


def tag_bce(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "batchmean") -> torch.Tensor:
    """Multi-label binary cross-entropy from logits, summed over tags.

    The seeds compute Keras BCE (a mean over tags) and multiply by num_tags: a sum over tags.

    Args:
        logits: float (B, C).
        labels: float (B, C) multi-hot.
        reduction: "batchmean" (mean over samples), "sum", or "none" (per-sample (B,)).
    """
    per_tag = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    return _reduce(per_tag.sum(-1), reduction)


def asl_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma_neg: float = 4.0,
    gamma_pos: float = 1.0,
    clip: float = 0.05,
    eps: float = 1e-8,
    reduction: str = "batchmean",
) -> torch.Tensor:
    """Asymmetric Loss, official `AsymmetricLoss` semantics (Alibaba-MIIL/ASL), computed stably.

    With p = σ(x) and the shifted negative probability p_m = min(1 − p + clip, 1):

        L = −Σ_c [ y log max(p, eps) + (1 − y) log max(p_m, eps) ] · w,
        w = (1 − p_t)^(γ⁺ y + γ⁻ (1 − y)),   p_t = p for positives, p_m for negatives,

    with w computed under `no_grad` (`disable_torch_grad_focal_loss=True`, the official default), so
    it acts as a constant. The logs come from `log_sigmoid` (log max(p, eps) = max(log σ(x), log eps)),
    so logits of ±50 give finite values and gradients. `clip=0` (or None) disables the shift.

    Reduction: the official loss sums over tags and samples; here the default sums over tags and
    averages over samples ("batchmean" = official / B), as `tag_bce` does; "sum" is the official one.

    Args:
        logits: (B, C) raw scores.
        labels: (B, C) multi-hot {0, 1}.
    """
    x, y = logits.float(), labels.float()
    log_eps = math.log(eps)
    log_pos = F.logsigmoid(x).clamp_min(log_eps)  # log max(p, eps)
    if clip:
        q = torch.sigmoid(-x) + clip  # 1 − p + m
        log_neg = torch.log(q.clamp(min=eps, max=1.0))  # log max(min(1 − p + m, 1), eps)
    else:
        log_neg = F.logsigmoid(-x).clamp_min(log_eps)
    loss = y * log_pos + (1 - y) * log_neg
    if gamma_neg > 0 or gamma_pos > 0:
        with torch.no_grad():
            one_minus_pt_pos = torch.sigmoid(-x)  # 1 − p
            one_minus_pt_neg = (
                (torch.sigmoid(x) - clip).clamp_min(0.0) if clip else torch.sigmoid(x)
            )  # 1 − p_m
            one_minus_pt = y * one_minus_pt_pos + (1 - y) * one_minus_pt_neg
            weight = torch.pow(one_minus_pt, gamma_pos * y + gamma_neg * (1 - y))
        loss = loss * weight
    return _reduce(-loss.sum(-1), reduction)


def asl_loss_seed(
    probs_or_logits: torch.Tensor,
    labels: torch.Tensor,
    gamma_neg: float = 1.0,
    gamma_pos: float = 0.0,
    eps: float = 1e-7,
    from_logits: bool = True,
    reduction: str = "batchmean",
) -> torch.Tensor:
    """Seed 000's ASL (`train_pair_*_asl.py: ASLoss`): probability form, no clip, weight with gradients.

        L = −Σ_c [ y log p̂ + (1 − y) log(1 − p̂) ] · (1 − p_t)^(γ⁺ y + γ⁻ (1 − y)),
        p̂ = clip(p, eps, 1 − eps),  p_t = p for positives, 1 − p for negatives.

    Unlike `asl_loss` the focusing weight keeps its gradient. The seed's NaN ("rerun when ASL gives
    NaN") comes from TF differentiating b^0 at b = 1 − p = 0 (a saturated positive) as 0·∞. Here the
    logs come from `log_sigmoid` and the weight's base is clamped to ≥ eps, so values and gradients
    stay finite for any logits and any γ (the value moves by < eps^γ where the clamp acts).

    Args:
        probs_or_logits: (B, C) logits (`from_logits=True`, computed stably) or probabilities.
        labels: (B, C) multi-hot.
        reduction: the seed sums over tags per sample; "batchmean" then averages over samples.
    """
    y = labels.float()
    lo, hi = math.log(eps), math.log1p(-eps)
    if from_logits:
        x = probs_or_logits.float()
        p = torch.sigmoid(x)
        log_p, log_1mp = F.logsigmoid(x).clamp(lo, hi), F.logsigmoid(-x).clamp(lo, hi)
        one_minus_p = torch.sigmoid(-x)
    else:
        p = probs_or_logits.float().clamp(eps, 1 - eps)
        log_p, log_1mp = torch.log(p), torch.log1p(-p)
        one_minus_p = 1 - p
    loss = y * log_p + (1 - y) * log_1mp
    base = (y * one_minus_p + (1 - y) * p).clamp_min(eps)  # 1 − p_t
    loss = loss * torch.pow(base, gamma_pos * y + gamma_neg * (1 - y))
    return _reduce(-loss.sum(-1), reduction)


def mlm_mask(
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    vocab_size: int,
    special_ids: Iterable[int],
    prob: float = 0.15,
    generator: torch.Generator | None = None,
    mask_id: int = 103,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT MLM corruption of the text: each maskable token is chosen with probability `prob`; a chosen
    token becomes [MASK] 80 % of the time, a random non-special token 10 %, stays itself 10 %.

    Padding (text_mask 0) and `special_ids` ([CLS], [SEP], [PAD], ...) are never chosen.

    Args:
        text_ids: int64 (B, L).
        text_mask: (B, L), 1 = real token.
        vocab_size: size of the vocabulary random replacements are drawn from.
        special_ids: ids never masked and never drawn as replacements.
        prob: masking probability (0.15).
        generator: a torch.Generator on text_ids' device, for reproducible masks.
        mask_id: the [MASK] id (103 in bert-base-chinese's vocabulary).

    Returns:
        masked_ids int64 (B, L); mlm_labels int64 (B, L): the original id where chosen, −100 elsewhere.
    """
    device = text_ids.device
    specials = torch.tensor(sorted(set(special_ids)), dtype=text_ids.dtype, device=device)
    maskable = text_mask.bool() & ~torch.isin(text_ids, specials)
    chosen = maskable & (torch.rand(text_ids.shape, generator=generator, device=device) < prob)
    action = torch.rand(text_ids.shape, generator=generator, device=device)
    candidates = torch.ones(vocab_size, dtype=torch.bool, device=device)
    candidates[specials[specials < vocab_size]] = False
    candidates = candidates.nonzero().squeeze(1)  # the non-special ids
    random_ids = candidates[
        torch.randint(len(candidates), text_ids.shape, generator=generator, device=device)
    ]
    masked = torch.where(chosen & (action < 0.8), torch.full_like(text_ids, mask_id), text_ids)
    masked = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_ids, masked)
    labels = torch.where(chosen, text_ids, torch.full_like(text_ids, -100))
    return masked, labels


def mlm_loss(mlm_logits: torch.Tensor, mlm_labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the masked tokens (labels ≠ −100); 0 when none is masked.

    Args:
        mlm_logits: float (B, L, V).
        mlm_labels: int64 (B, L), −100 where not masked.
    """
    logits = mlm_logits.float().reshape(-1, mlm_logits.shape[-1])
    labels = mlm_labels.reshape(-1)
    total = F.cross_entropy(logits, labels, ignore_index=-100, reduction="sum")
    return total / (labels != -100).sum().clamp_min(1)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """Symmetric in-batch InfoNCE on L2-normalised vectors: pair i of `a` matches pair i of `b`.

        S = â b̂ᵀ / τ,  loss = ½ [ CE(S, I) + CE(Sᵀ, I) ],  CE averaged over the batch.

    Args:
        a: float (B, D), or (M, B, D) for M branches sharing `b` (MixNeXtVLAD's vision vectors):
            the loss is then averaged over the branches (seed 000: Σ_m loss_m / M).
        b: float (B, D).
        temperature: τ (fixed 0.07 in seed 000).
    """
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature  # (..., B, B)
    logits = logits.reshape(-1, *logits.shape[-2:])  # (M, B, B)
    M, B, _ = logits.shape
    target = torch.arange(B, device=logits.device).repeat(M)  # (M*B,)
    a_to_b = F.cross_entropy(logits.reshape(M * B, B), target)
    b_to_a = F.cross_entropy(logits.transpose(1, 2).reshape(M * B, B), target)
    return (a_to_b + b_to_a) / 2


def pair_mse(sim: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ_i (sim_i − target_i)²: a sum over the batch, as seed 000 (`tf.reduce_sum`). sim, target: (B,)."""
    return (sim.float() - target.float()).square().sum()


def keras_kl(target: torch.Tensor, sim: torch.Tensor) -> torch.Tensor:
    """`tf.keras.losses.KLDivergence()(target, sim)` semantics.

    Both are clipped to [1e-7, 1]; then Σ y log(y / s) over the last axis, averaged over any leading
    axes. On seed 000's 1-D vectors (B,) that is one sum over the batch axis: the "distributions" are
    the un-normalised label similarities and predicted cosines of the batch; a negative cosine is
    clipped to 1e-7 (and gets no gradient). Not a softmax KL (SPEC 4.3).
    """
    y = target.float().clamp(1e-7, 1.0)
    s = sim.float().clamp(1e-7, 1.0)
    return (y * torch.log(y / s)).sum(-1).mean()


def pair_objective_terms(
    emb_a: torch.Tensor,
    emb_b: torch.Tensor,
    sim_target: torch.Tensor,
    tag_logits: torch.Tensor,
    tag_labels: torch.Tensor,
    tag_loss: str = "bce",
) -> dict[str, torch.Tensor]:
    """Seed 000's pair fine-tuning loss (`train_pair_mix.py`) as raw named terms; the seed weighs
    them mse 1, kl 0.5, tag 1 (`weighted` applies the weights).

        s_i  = cos(emb_a_i, emb_b_i)                       (dot of L2-normalised embeddings)
        mse  = Σ_i (s_i − y_i)²                             `pair_mse`, sum over pairs
        kl   = KerasKL(y, s)                                `keras_kl` (seed weight 0.5)
        tag  = mean_{j<2B} Σ_c ℓ(z_jc, t_jc)                ℓ = BCE | ASL | seed ASL on both videos

    The seed adds the scalar mse and kl to the per-sample tag vector (2B,) and lets GradientTape
    differentiate the vector, i.e. the sum of its 2B entries: 2B·(mse + 0.5·kl) + Σ_j tag_j =
    2B·(mse + kl + tag) with the terms above. So this sum is the seed's loss divided by 2B: the
    same gradient direction (a constant factor, which Adam's update ignores).

    Args:
        emb_a, emb_b: float (B, D) embeddings of the two videos of each pair.
        sim_target: float (B,) labelled similarity.
        tag_logits: float (2B, C) tag logits of [videos a; videos b].
        tag_labels: float (2B, C) their multi-hot tags.
        tag_loss: "bce" (`tag_bce`), "asl" (`asl_loss`), "asl_seed" (`asl_loss_seed`).

    Returns:
        {"mse", "kl", "tag"}: unweighted scalars.
    """
    tag_fn = tag_loss_fn(tag_loss)
    sim = (F.normalize(emb_a.float(), dim=-1) * F.normalize(emb_b.float(), dim=-1)).sum(-1)  # (B,)
    return {
        "mse": pair_mse(sim, sim_target),
        "kl": keras_kl(sim_target, sim),
        "tag": tag_fn(tag_logits, tag_labels),
    }


def mixture_distillation(
    branch_logits: torch.Tensor, mixture_logits: torch.Tensor, temperature: float = 2.0, eps: float = 1e-8
) -> torch.Tensor:
    """MixNeXtVLAD on-the-fly distillation: KL of each branch from the mixture, summed over branches.

        p_e = softmax(z_e / T),  p_m = softmax(z_m / T)            (over the C classes)
        KL_m = Σ_c p_e (log(p_e + eps) − log(p_m + eps))
        loss = mean over batch of Σ_m KL_m

    Gradients flow into both the branches and the mixture, as in the seeds. The weight is the
    caller's: `cl_lambda` = T² = 9 at T = 3 in linrongc's YT8M scripts; seed 000's QQ port uses T = 2,
    λ = 1 and adds the term × 10.

    Args:
        branch_logits: float (M, B, C).
        mixture_logits: float (B, C).
    """
    p_e = torch.softmax(mixture_logits.float() / temperature, dim=-1)  # (B, C)
    p_m = torch.softmax(branch_logits.float() / temperature, dim=-1)  # (M, B, C)
    kl = (p_e * (torch.log(p_e + eps) - torch.log(p_m + eps))).sum(-1)  # (M, B)
    return kl.sum(0).mean()
