"""Multi-label tag terms of the video-tagging tasks (qqbrowser, yt8m), raw and unweighted.

- `multilabel_loss`: a tag loss by name (`losses.TAG_LOSSES`: summed over classes, mean over the
  batch), or BCE weighted per (sample, class) entry (YT8M segments: only the rated entries count).
- `branch_loss`: each MixNeXtVLAD branch's own loss, summed over the branches.
- `tag_terms`: `tag` on the head's logits plus `branch_tag` on the branches' (seed 000 sums them).
- `vision_text_nce`: InfoNCE between the vision and the text embeddings before fusion (seed 000).
- `l2_term`: the model's own `l2_penalty()` (YT8M's TF L2 regulariser of MoE / logistic heads).
- `tag_pretrain_terms`: seed 000's QQ pretraining terms tag (+ branch_tag), mlm, nce and distill.
- `pair_terms`: seed 000's QQ pair fine-tuning, both videos in one pass: mse, kl, tag (SPEC §4.3).
- `video_label_terms`: YT8M's video-level and segment terms bce, branch_bce, distill and l2.

References: Ridnik et al., ASL (ICCV 2021); Lin et al., NeXtVLAD / MixNeXtVLAD (2018) §3.4 for the
on-the-fly distillation; Chen et al., UNITER (ECCV 2020) for MLM on the text of a video–text model.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from vmmlib.objectives.losses import (
    info_nce,
    mixture_distillation,
    mlm_loss,
    mlm_mask,
    pair_objective_terms,
    tag_loss_fn,
)
from vmmlib.objectives.masking import TokenSpec


def multilabel_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    tag_loss: str = "bce",
    label_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Σ over classes, mean over the batch (the seeds' CrossEntropyLoss).

    Args:
        logits: float (B, C); labels: (B, C) multi-hot (or rated scores, clamped to [0, 1] when weighted).
        tag_loss: the loss by name when unweighted (`tag_loss_fn`).
        label_weights: float (B, C) per-entry weights of a BCE (None: the plain `tag_loss`).
    """
    if label_weights is None:
        return tag_loss_fn(tag_loss)(logits, labels)
    per_entry = F.binary_cross_entropy_with_logits(
        logits.float(), labels.float().clamp(0, 1), reduction="none"
    )
    return (per_entry * label_weights).sum(-1).mean()


def branch_loss(
    branch_logits: Iterable[torch.Tensor],
    labels: torch.Tensor,
    tag_loss: str = "bce",
    label_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Σ over the branches (M, B, C) of each branch's `multilabel_loss` (linrongc's auxiliary losses)."""
    return sum(multilabel_loss(z, labels, tag_loss, label_weights) for z in branch_logits)


def tag_terms(out: dict, labels: torch.Tensor, tag_loss: str = "bce") -> dict[str, torch.Tensor]:
    """`tag` on `out["tag_logits"]`, plus `branch_tag` on each MixNeXtVLAD branch's logits when the model
    has them (seed 000 sums them; the objective's `shares_weight` gives `branch_tag` the tag weight)."""
    terms = {"tag": multilabel_loss(out["tag_logits"], labels, tag_loss)}
    if "branch_tag_logits" in out:
        terms["branch_tag"] = branch_loss(out["branch_tag_logits"], labels, tag_loss)
    return terms


def vision_text_nce(model, out: dict, temperature: float = 0.07) -> torch.Tensor:
    """Symmetric InfoNCE between `vision_embedding` and `text_embedding` (one width, before fusion)."""
    if "vision_embedding" not in out or out["vision_embedding"].shape[-1] != out["text_embedding"].shape[-1]:
        raise ValueError(
            f"{type(model).__name__} has no vision and text embeddings of one width before fusion, "
            "which the nce term needs (MixNeXtVLAD maps the text to the vision width; set nce to 0)"
        )
    return info_nce(out["vision_embedding"], out["text_embedding"], temperature)


def l2_term(model) -> torch.Tensor:
    """The (unwrapped) model's `l2_penalty()`; a model without one refuses the term."""
    net = getattr(model, "module", model)
    if not hasattr(net, "l2_penalty"):
        raise ValueError(f"{type(net).__name__} has no l2_penalty(); set the l2 weight to 0")
    return net.l2_penalty()


def tag_pretrain_terms(
    model,
    batch: dict,
    *,
    terms: Iterable[str],
    tokens: TokenSpec,
    tag_loss: str = "bce",
    mlm_prob: float = 0.15,
    distill_temperature: float = 2.0,
    nce_temperature: float = 0.07,
) -> dict[str, torch.Tensor]:
    """Seed 000's pretraining terms on one batch of videos (`tag`, `branch_tag`, `mlm`, `nce`, `distill`).

    `mlm` masks the text (`mlm_mask`, 80/10/10 at `mlm_prob`) and asks the model for `mlm_logits`
    (`model(..., mlm=True)`); the other terms read the same forward pass. `distill` needs a mixture
    model's `branch_tag_logits` (skipped without them).
    """
    inputs, mlm_labels = dict(batch), None
    if "mlm" in terms:
        inputs["text_ids"], mlm_labels = mlm_mask(
            batch["text_ids"],
            batch["text_mask"],
            tokens.vocab_size,
            tokens.special_ids,
            prob=mlm_prob,
            mask_id=tokens.mask_id,
        )
    out = model(**inputs, **({"mlm": True} if mlm_labels is not None else {}))
    raw = tag_terms(out, batch["labels"], tag_loss) if "tag" in terms else {}
    if mlm_labels is not None:
        raw["mlm"] = mlm_loss(out["mlm_logits"], mlm_labels)
    if "nce" in terms:
        raw["nce"] = vision_text_nce(model, out, nce_temperature)
    if "distill" in terms and "branch_tag_logits" in out:
        raw["distill"] = mixture_distillation(
            out["branch_tag_logits"], out["tag_logits"], distill_temperature
        )
    return raw


def concat_pair(batch: dict) -> dict:
    """[videos a; videos b] as one video batch, so BatchNorm sees both sides in one forward pass."""
    a, b = batch["a"], batch["b"]
    return {k: torch.cat([a[k], b[k]]) if torch.is_tensor(a[k]) else list(a[k]) + list(b[k]) for k in a}


def pair_terms(model, batch: dict, *, tag_loss: str = "bce") -> dict[str, torch.Tensor]:
    """Seed 000's pair fine-tuning terms (`pair_objective_terms`: mse, kl, tag) of a batch of pairs
    {"a": videos, "b": videos, "sim": (B,) labelled similarity}, both sides in one forward pass."""
    out = model(**concat_pair(batch))
    emb_a, emb_b = out["embedding"].chunk(2)
    labels = torch.cat([batch["a"]["labels"], batch["b"]["labels"]])
    return pair_objective_terms(emb_a, emb_b, batch["sim"], out["tag_logits"], labels, tag_loss=tag_loss)


def video_label_terms(
    model,
    batch: dict,
    *,
    terms: Iterable[str],
    tag_loss: str = "bce",
    distill_temperature: float = 3.0,
    rated_entries: bool = False,
    unrated_as_negative: bool = False,
) -> dict[str, torch.Tensor]:
    """YT8M's terms on one batch of frames: `bce`, `branch_bce` and `distill` (MixNeXtVLAD's branches,
    skipped for other models) and `l2` (`l2_term`).

    Args:
        rated_entries: weigh the BCE by the batch's `label_weights` (segments: only the rated
            (segment, class) entries, the ones the metric reads); `unrated_as_negative` then weighs
            every entry 1 instead (every unrated class a negative, as the seeds' train.py).
    """
    out = model(frames=batch["frames"], frame_mask=batch["frame_mask"])
    weights = batch.get("label_weights") if rated_entries else None
    if weights is not None and unrated_as_negative:
        weights = torch.ones_like(weights)
    raw = {}
    if "bce" in terms:
        raw["bce"] = multilabel_loss(out["logits"], batch["labels"], tag_loss, weights)
    if "branch_bce" in terms and "branch_logits" in out:  # linrongc's aux losses (not hughshaoqz's)
        raw["branch_bce"] = branch_loss(out["branch_logits"], batch["labels"], tag_loss, weights)
    if "distill" in terms and "branch_logits" in out:
        raw["distill"] = mixture_distillation(out["branch_logits"], out["logits"], distill_temperature)
    if "l2" in terms:
        raw["l2"] = l2_term(model)
    return raw
