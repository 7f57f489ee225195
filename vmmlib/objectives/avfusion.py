"""Pretraining objectives of the text + audio + video fusion model (seed 004, SPEC §3.11, §9.3).

One forward pass carries every task, as the seed's collator builds it:

- `mlm`: masked-language modelling of the text at 30 % (80/10/10), predicted from the fused text tokens;
- `video_mae`: VideoMAE reconstruction of the masked tubelets (tube mask, 90 %, an exact count per
  video), per-patch normalised pixels (`norm_pix`, VideoMAE's default);
- `audio_mae`: MAE reconstruction of masked spectrogram patches (30 % as the seed);
- `vtm`: video–text matching on the fused [CLS]: half the batch fused with another sample's video;
- `vtc`: symmetric InfoNCE between the unimodal video and text embeddings (`vmmlib.objectives.losses.info_nce`).

`pretrain_terms(model, batch, ...)` returns the raw, unweighted terms (weights are the task's); it is
an `objective(model, batch)` for `fit` once its keyword arguments are bound. `corrupt_batch` builds the
masked inputs and targets on its own (for inspection and tests). `mlm_accuracy` is the seed's
"VTM_acc", which its train.py computes from the text MLM logits (SPEC §2.6). `qa_terms` is the QA
fine-tuning term (`answered`: the answers it averages over).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vmmlib.objectives.classification import class_ce
from vmmlib.objectives.losses import info_nce, mlm_loss
from vmmlib.objectives.masking import (
    gaussian_threshold_mask,
    mlm_corrupt,
    random_patch_mask,
    shuffle_pairs,
    tube_mask,
)

PRETRAIN_TERMS = ("mlm", "video_mae", "audio_mae", "vtm", "vtc")
VIDEO_MASKINGS = ("tube", "seed_gaussian")


def patchify_video(frames: torch.Tensor, patch_size: int, tubelet_size: int) -> torch.Tensor:
    """Clips → tubelet patches in VideoMAE's token order (time, height, width).

    Args:
        frames: float (B, T, C, H, W).

    Returns:
        (B, (T/ts)·(H/p)·(W/p), ts·p·p·C), values ordered (ts, p, p, C) as VideoMAE's targets.
    """
    B, T, C, H, W = frames.shape
    p, ts = patch_size, tubelet_size
    x = frames.reshape(B, T // ts, ts, C, H // p, p, W // p, p)
    x = x.permute(0, 1, 4, 6, 2, 5, 7, 3)  # (B, T', H', W', ts, p, p, C)
    return x.reshape(B, (T // ts) * (H // p) * (W // p), ts * p * p * C)


def patchify_image(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Images (B, C, H, W) → patches (B, (H/p)·(W/p), p·p·C) in ViT-MAE's order (row-major grid)."""
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)  # (B, H', W', p, p, C)
    return x.reshape(B, (H // p) * (W // p), p * p * C)


def mae_loss(
    pred: torch.Tensor, patches: torch.Tensor, mask: torch.Tensor, norm_pix: bool = True
) -> torch.Tensor:
    """Mean squared error over the masked patches.

    Args:
        pred: float (B, M, D): predictions for the masked patches, in token order.
        patches: float (B, N, D): every patch of the input (`patchify_video` / `patchify_image`).
        mask: bool (B, N) with M Trues per row.
        norm_pix: normalise each target patch by its own mean and (unbiased) variance, eps 1e-6, as
            VideoMAE and MAE do. The patches are the model's (mean/std-normalised) inputs; VideoMAE
            undoes the ImageNet normalisation first, which after per-patch normalisation only
            changes the relative scale of the three colour channels.
    """
    target = patches.float()
    if norm_pix:
        target = (target - target.mean(-1, keepdim=True)) / (
            target.var(-1, keepdim=True, unbiased=True) + 1e-6
        ).sqrt()
    target = target[mask].reshape(pred.shape)  # (B, M, D)
    return F.mse_loss(pred.float(), target)


def mlm_accuracy(mlm_logits: torch.Tensor, mlm_labels: torch.Tensor) -> torch.Tensor:
    """Share of masked tokens (labels ≠ −100) predicted right: the seed's "VTM_acc" (SPEC §2.6)."""
    chosen = mlm_labels != -100
    if not chosen.any():
        return torch.zeros((), device=mlm_logits.device)
    return (mlm_logits.argmax(-1)[chosen] == mlm_labels[chosen]).float().mean()


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DDP / accelerate wrappers


def corrupt_batch(
    model: nn.Module,
    batch: dict,
    *,
    mask_id: int,
    special_ids: Iterable[int],
    terms: Sequence[str] = PRETRAIN_TERMS,
    mlm_prob: float = 0.3,
    video_mask_ratio: float = 0.9,
    video_masking: str = "tube",
    audio_mask_ratio: float = 0.3,
    match_ratio: float = 0.5,
    generator: torch.Generator | None = None,
) -> tuple[dict, dict]:
    """The model inputs and targets of one pretraining step.

    Args:
        model: an `AVFusion` (its frame, tubelet and patch geometry sizes the masks).
        batch: frames, text_ids, text_mask (and audio).
        mask_id, special_ids: the tokenizer's [MASK] id and the ids never masked ([CLS], [SEP], [PAD], ...).
        terms: which terms will be computed; masks are drawn only for those that need them.
        video_masking: `tube` (exact count per video, `video_mask_ratio` of each frame's patches) or
            `seed_gaussian` (seed 004: `randn < video_mask_ratio`, shared by the batch; pass 0.8 to
            reproduce it).
        generator: CPU generator for every draw (None: the global RNG).

    Returns:
        inputs for `model(**inputs)` (text_ids corrupted, video_mask, audio_mask, vt_perm, mlm) and
        targets (mlm_labels, itm_labels).
    """
    unknown = sorted(set(terms) - set(PRETRAIN_TERMS))
    if unknown:
        raise ValueError(
            f"unknown pretraining term(s) {', '.join(unknown)}; valid terms: {', '.join(PRETRAIN_TERMS)}"
        )
    if video_masking not in VIDEO_MASKINGS:
        raise ValueError(
            f"unknown video_masking {video_masking!r}; valid choices: {', '.join(VIDEO_MASKINGS)}"
        )
    net = _unwrap(model)
    device = batch["text_ids"].device
    B = batch["text_ids"].shape[0]
    inputs, targets = dict(batch), {}
    if "mlm" in terms:
        ids, labels = mlm_corrupt(
            batch["text_ids"].cpu(),
            batch["text_mask"].cpu(),
            vocab_size=net.text.config.vocab_size,
            special_ids=special_ids,
            mask_id=mask_id,
            prob=mlm_prob,
            generator=generator,
        )
        inputs["text_ids"], inputs["mlm"], targets["mlm_labels"] = ids.to(device), True, labels.to(device)
    if "video_mae" in terms:
        vc = net.video.config
        per_frame = (vc.image_size // vc.patch_size) ** 2
        if video_masking == "tube":
            mask = tube_mask(
                B,
                vc.num_frames,
                per_frame,
                tubelet_size=vc.tubelet_size,
                mask_ratio=video_mask_ratio,
                generator=generator,
            )
        else:
            mask = gaussian_threshold_mask(B, net.video_tokens, video_mask_ratio, generator=generator)
        inputs["video_mask"] = mask.to(device)
    if "audio_mae" in terms:
        if getattr(net, "audio", None) is None:
            raise ValueError("audio_mae needs a model with an audio tower (not an avfusion_vt model)")
        mask = random_patch_mask(
            B, net.audio_decoder.positions.shape[0], audio_mask_ratio, generator=generator
        )
        inputs["audio_mask"] = mask.to(device)
    if "vtm" in terms:
        perm, itm_labels = shuffle_pairs(B, match_ratio, generator=generator)
        inputs["vt_perm"], targets["itm_labels"] = perm.to(device), itm_labels.to(device)
    return inputs, targets


def pretrain_terms(
    model: nn.Module,
    batch: dict,
    *,
    mask_id: int,
    special_ids: Iterable[int],
    terms: Sequence[str] = PRETRAIN_TERMS,
    mlm_prob: float = 0.3,
    video_mask_ratio: float = 0.9,
    video_masking: str = "tube",
    audio_mask_ratio: float = 0.3,
    match_ratio: float = 0.5,
    norm_pix: bool = True,
    temperature: float = 0.07,
    clean_alignment: bool = True,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """One pretraining step's forward passes → the raw, unweighted terms named in `terms`.

    See `corrupt_batch` for the masking arguments; `norm_pix` for `mae_loss`; `temperature` for `vtc`.
    `clean_alignment`: the alignment terms (`vtc`, `vtm`) come from a second pass on the clean
    inputs, as ALPRO computes its contrastive and matching losses on unmasked text, and as they are
    scored (whole clips, uncorrupted text); the reconstruction terms keep the masked pass, with each
    text fused with its own video. False: the seed's single pass, where the contrastive embeddings
    see a quarter of the video's tubes and MLM-corrupted text (on the sample data it does not move
    held-out recall from chance in 60 steps; the clean pass lifts it).

    Returns:
        {"mlm", "video_mae", "audio_mae", "vtm", "vtc"} ∩ terms, each a scalar float32 tensor.
    """
    alignment = [t for t in terms if t in ("vtc", "vtm")]
    reconstruction = [t for t in terms if t not in ("vtc", "vtm")]
    if clean_alignment and alignment and reconstruction:
        masked = pretrain_terms(model, batch, mask_id=mask_id, special_ids=special_ids, terms=reconstruction,
                                mlm_prob=mlm_prob, video_mask_ratio=video_mask_ratio, video_masking=video_masking,
                                audio_mask_ratio=audio_mask_ratio, norm_pix=norm_pix, generator=generator)  # fmt: skip
        clean = pretrain_terms(model, batch, mask_id=mask_id, special_ids=special_ids, terms=alignment,
                               match_ratio=match_ratio, temperature=temperature, generator=generator)  # fmt: skip
        return {t: {**clean, **masked}[t] for t in terms}
    inputs, targets = corrupt_batch(
        model,
        batch,
        mask_id=mask_id,
        special_ids=special_ids,
        terms=terms,
        mlm_prob=mlm_prob,
        video_mask_ratio=video_mask_ratio,
        video_masking=video_masking,
        audio_mask_ratio=audio_mask_ratio,
        match_ratio=match_ratio,
        generator=generator,
    )
    out = model(**inputs)
    net = _unwrap(model)
    result = {}
    if "mlm" in terms:
        result["mlm"] = mlm_loss(out["mlm_logits"], targets["mlm_labels"])
    if "video_mae" in terms:
        vc = net.video.config
        patches = patchify_video(batch["frames"], vc.patch_size, vc.tubelet_size)
        result["video_mae"] = mae_loss(out["video_pred"], patches, inputs["video_mask"], norm_pix)
    if "audio_mae" in terms:
        patches = patchify_image(batch["audio"], net.audio.config.patch_size)
        result["audio_mae"] = mae_loss(out["audio_pred"], patches, inputs["audio_mask"], norm_pix)
    if "vtm" in terms:
        result["vtm"] = F.cross_entropy(out["itm_logits"].float(), targets["itm_labels"])
    if "vtc" in terms:
        result["vtc"] = info_nce(out["video_embedding"], out["text_embedding"], temperature)
    return result


def qa_terms(model: nn.Module, batch: dict, *, label_smoothing: float = 0.0) -> dict[str, torch.Tensor]:
    """Fine-tuning for QA: `qa`, the answer classifier's cross-entropy (`class_ce`; label −100, an
    answer outside the training vocabulary, is ignored)."""
    out = model(frames=batch["frames"], text_ids=batch["text_ids"], text_mask=batch["text_mask"],
                audio=batch.get("audio"))  # fmt: skip
    return {"qa": class_ce(out["qa_logits"], batch["labels"], label_smoothing)}


def answered(batch: dict) -> torch.Tensor:
    """The answers `qa` averages over (those in the vocabulary): `fit`'s `count_items` for accumulation."""
    return (batch["labels"] != -100).sum()
