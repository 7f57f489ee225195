"""WBDC rank-8 video–text pretraining objectives (SPEC §4.4, §4.2, §3.10), as raw named terms.

`video_text_terms(model, batch, terms=...)` returns `{"mlm": t, "mfm": t, "itm": t, "ict": t,
"mmm": t, "clip": t}` for the requested terms, unweighted. The model is a single-stream encoder
with the interface of `vmmlib.models.wbdc_single.SingleStream` (built with `pretrain_heads=True`):
`frame_features`, `encode`, `mlm_logits`, `mfm_predict`, `itm_logits`, and for "clip" any model
with `clip_embeddings` and `logit_scale` (the dual stream too).

- **mlm**: 30 % of the non-special tokens, 80 % [MASK] / 10 % random / 10 % kept; CE on them.
- **mfm**: 13.5 % of the valid frames (0.9 × 0.15) replaced by zeros; the MFM head's output at every
  video position is scored against every input frame feature of the batch (dot products, no
  normalisation, no temperature; padded frames excluded), −log softmax of the true frame averaged
  over the masked positions, then halved (the seed's /2).
- **itm** (frame–text matching): the first half of the sub-batch keeps its videos, the second half's
  videos are reversed; 2-way CE on position 0 (matched = index unchanged).
- **mmm** (mask modality, VLM): on the first B/4 samples, the first half has every valid frame
  zeroed and reconstructed with the MFM NCE, the second half has every non-pad token (with
  [CLS]/[SEP]) replaced by [MASK] and predicted with MLM CE; the term is their sum. The other
  samples carry mlm, mfm and itm (in one pass).
- **ict** (inverse cloze): the title alone vs. ocr+asr with the frames; masked means, L2-normalised,
  cosine logits (÷ `ict_temperature`, 1 in the seed), CE both directions summed.
- **clip** (ActionCLIP-style): mean frame vs. mean title embedding, L2-normalised, logits scaled by
  exp(learnable log-scale), symmetric CE averaged (`vmmlib.objectives.contrastive.clip_loss`, gathered
  across processes).

The seed's two quirks are off unless asked for: `seed_masked_tokens_visible=True` keeps MLM-masked
tokens visible to attention (the seed meant to hide them, but its call discards the new mask), and
`seed_mfm_targets_unshuffled=True` scores the MFM of ITM-shuffled samples against the un-shuffled
frames (the seed masks and shuffles the same samples). By default masked tokens are hidden from
attention and MFM targets follow the shuffled videos.

References: Devlin et al., BERT (NAACL 2019); Li et al., HERO (EMNLP 2020) for MFM with NCE; Lee et
al., ORQA (ACL 2019) for the inverse cloze task; Xu et al., VLM (ACL Findings 2021) for mask
modality; Wang et al., ActionCLIP (arXiv:2109.08472).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from vmmlib.models.layers import masked_mean
from vmmlib.objectives.contrastive import clip_loss
from vmmlib.objectives.losses import mlm_loss, mlm_mask
from vmmlib.objectives.masking import TokenSpec

TERMS = ("mlm", "mfm", "itm", "ict", "mmm", "clip")
SEED_TERMS = ("mlm", "mfm", "itm", "ict", "mmm")  # rank 8's single-stream pretraining (model_1_pretrain)
PAD_LOGIT = -1e8  # the seed's score for pairs with a padded frame


def mask_frames(
    frame_mask: torch.Tensor, prob: float = 0.135, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, T) bool: each valid frame chosen with probability `prob` (the seed: 0.9 × 0.15)."""
    draw = torch.rand(frame_mask.shape, generator=generator, device=frame_mask.device)
    return (frame_mask > 0) & (draw < prob)


def mfm_nce(
    pred: torch.Tensor, target: torch.Tensor, target_mask: torch.Tensor, chosen: torch.Tensor
) -> torch.Tensor:
    """Masked-frame NCE over all B·T positions of the batch.

    Args:
        pred: float (B, T, D), the MFM head's output at every video position.
        target: float (B, T, D), the input frame features (the positives and the negatives).
        target_mask: (B, T), 1 = a real frame (padded frames are never a candidate).
        chosen: (B, T) bool, the masked positions the loss is averaged over.

    Returns:
        scalar: mean over chosen positions of −log softmax(pred_i · target_j)[j = i], halved (seed).
    """
    B, T, D = pred.shape
    logits = pred.float().reshape(B * T, D) @ target.float().reshape(B * T, D).T  # (B*T, B*T)
    logits = logits.masked_fill(target_mask.reshape(1, B * T) == 0, PAD_LOGIT)
    nll = -torch.diagonal(F.log_softmax(logits, dim=-1))  # (B*T,)
    picked = chosen.reshape(-1)
    if not picked.any():
        return pred.sum() * 0.0  # keeps the graph: a batch with nothing masked contributes 0
    return nll[picked].mean() / 2


def itm_permutation(n: int, device=None) -> torch.Tensor:
    """The seed's deterministic shuffle: first half in place, second half reversed. (n,) int64."""
    half = n // 2
    return torch.cat([torch.arange(half, device=device), torch.arange(n - 1, half - 1, -1, device=device)])


def _main_terms(
    model, text_ids, text_mask, feats, frame_mask, terms, tokens, opts
) -> dict[str, torch.Tensor]:
    """mlm, mfm and itm on one sub-batch, in one joint pass."""
    out = {}
    n, L = text_ids.shape
    perm = itm_permutation(n, text_ids.device) if "itm" in terms else torch.arange(n, device=text_ids.device)
    video, video_mask = feats[perm], frame_mask[perm]  # the shuffled videos (identity without itm)
    ids, attn = text_ids, text_mask
    if "mlm" in terms:
        ids, labels = mlm_mask(
            text_ids,
            text_mask,
            tokens.vocab_size,
            tokens.special_ids,
            opts["mlm_prob"],
            opts["generator"],
            tokens.mask_id,
        )
        if not opts["seed_masked_tokens_visible"]:
            attn = text_mask * (labels == -100).to(text_mask.dtype)  # hide the chosen tokens from attention
    if "mfm" in terms:
        chosen = mask_frames(video_mask, opts["mfm_prob"], opts["generator"])
        video = video.masked_fill(chosen.unsqueeze(-1), 0.0)
    hidden, _ = model.encode(ids, attn, video, video_mask)
    if "mlm" in terms:
        out["mlm"] = mlm_loss(model.mlm_logits(hidden[:, :L]), labels)
    if "mfm" in terms:
        if opts["seed_mfm_targets_unshuffled"]:
            target, target_mask = feats, frame_mask  # the seed: targets not permuted with the videos
        else:
            target, target_mask = feats[perm], frame_mask[perm]
        out["mfm"] = mfm_nce(model.mfm_predict(hidden[:, L:]), target.detach(), target_mask, chosen)
    if "itm" in terms:
        matched = (perm == torch.arange(n, device=perm.device)).long()
        out["itm"] = F.cross_entropy(model.itm_logits(hidden).float(), matched)
    return out


def mask_modality_terms(model, text_ids, text_mask, feats, frame_mask, tokens: TokenSpec) -> torch.Tensor:
    """The mmm term on a sub-batch: first half loses its frames (MFM NCE), second half its text (MLM)."""
    n, L = text_ids.shape
    half = n // 2
    frames_gone = torch.zeros(n, 1, dtype=torch.bool, device=feats.device)
    frames_gone[:half] = True
    chosen = frames_gone & (frame_mask > 0)  # (n, T): every valid frame of the first half
    video = feats.masked_fill(chosen.unsqueeze(-1), 0.0)
    text_gone = torch.zeros_like(text_mask, dtype=torch.bool)
    text_gone[half:] = text_mask[half:] > 0  # every non-pad token, [CLS]/[SEP] included
    ids = text_ids.masked_fill(text_gone, tokens.mask_id)
    labels = text_ids.masked_fill(~text_gone, -100)
    hidden, _ = model.encode(ids, text_mask, video, frame_mask)
    nce = mfm_nce(model.mfm_predict(hidden[:, L:]), feats.detach(), frame_mask, chosen)
    return nce + mlm_loss(model.mlm_logits(hidden[:, :L]), labels)


def ict_term(model, batch: dict, feats: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Inverse cloze: title alone vs. ocr+asr with the frames (needs `ict_texts=True` batches)."""
    _require(batch, ("title_ids", "title_mask", "context_ids", "context_mask"), "ict")
    title, title_mask = model.encode(batch["title_ids"], batch["title_mask"])
    context, context_mask = model.encode(
        batch["context_ids"], batch["context_mask"], feats, batch["frame_mask"]
    )
    t = F.normalize(masked_mean(title, title_mask).float(), dim=-1)  # (B, H)
    c = F.normalize(masked_mean(context, context_mask).float(), dim=-1)
    logits = t @ c.T / temperature  # (B, B) cosines
    target = torch.arange(len(logits), device=logits.device)
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)


def clip_term(model, batch: dict) -> torch.Tensor:
    """Video–text CLIP loss with the model's learnable, unclamped log-scale (SPEC §3.10)."""
    _require(batch, ("title_ids", "title_mask"), "clip")
    video, text = model.clip_embeddings(
        batch["frames"], batch["frame_mask"], batch["title_ids"], batch["title_mask"]
    )
    video, text = F.normalize(video.float(), dim=-1), F.normalize(text.float(), dim=-1)
    return clip_loss(video, text, model.logit_scale.exp())


def _require(batch: dict, keys: Iterable[str], term: str) -> None:
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(
            f"the {term} term needs batch keys {', '.join(missing)} (build WBDCDataset with ict_texts=True)"
        )


def video_text_terms(
    model,
    batch: dict,
    *,
    terms: Iterable[str] = SEED_TERMS,
    tokens: TokenSpec | None = None,
    mlm_prob: float = 0.3,
    mfm_prob: float = 0.135,
    mmm_fraction: float = 0.25,
    ict_temperature: float = 1.0,
    seed_masked_tokens_visible: bool = False,
    seed_mfm_targets_unshuffled: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """The requested pretraining terms on one batch, raw and unweighted.

    Args:
        model: a single-stream model with pretraining heads (or, for "clip" alone, any model with
            `clip_embeddings` and `logit_scale`), or a wrapper of one (DDP, accelerate: `.module`).
        batch: the WBDC batch (`vmmlib.data.wbdc.reader.collate`): frames, frame_mask, text_ids, text_mask;
            title_ids/title_mask and context_ids/context_mask for ict and clip.
        terms: any of TERMS; each is computed only when asked for.
        tokens: vocabulary ids for MLM (default: bert-base-chinese's).
        mmm_fraction: share of the batch (its first samples) given to mask-modality when "mmm" is
            asked for (the seed: B // 4); the rest carries mlm/mfm/itm.
        seed_masked_tokens_visible, seed_mfm_targets_unshuffled: the seed's quirks (module docstring).
        generator: torch.Generator for reproducible masks.

    Returns:
        {term: scalar float32 tensor} for every requested term.
    """
    terms = tuple(dict.fromkeys(terms))
    unknown = [t for t in terms if t not in TERMS]
    if unknown:
        raise ValueError(f"unknown pretraining term(s) {', '.join(unknown)}; valid terms: {', '.join(TERMS)}")
    tokens = tokens or TokenSpec()
    model = getattr(model, "module", model)  # DDP / accelerate wrappers
    out = {}
    needs_frames = any(t in terms for t in ("mlm", "mfm", "itm", "mmm", "ict"))
    feats = model.frame_features(batch["frames"], batch["frame_mask"]) if needs_frames else None
    text_ids, text_mask, frame_mask = batch["text_ids"], batch["text_mask"], batch["frame_mask"]
    n_mmm = int(len(text_ids) * mmm_fraction) if "mmm" in terms else 0
    if "mmm" in terms:
        sl = slice(0, n_mmm)
        out["mmm"] = (
            mask_modality_terms(model, text_ids[sl], text_mask[sl], feats[sl], frame_mask[sl], tokens)
            if n_mmm >= 2
            else feats.sum() * 0.0
        )
    main = [t for t in ("mlm", "mfm", "itm") if t in terms]
    if main:
        sl = slice(n_mmm, None)
        opts = dict(
            mlm_prob=mlm_prob,
            mfm_prob=mfm_prob,
            generator=generator,
            seed_masked_tokens_visible=seed_masked_tokens_visible,
            seed_mfm_targets_unshuffled=seed_mfm_targets_unshuffled,
        )
        out.update(
            _main_terms(model, text_ids[sl], text_mask[sl], feats[sl], frame_mask[sl], main, tokens, opts)
        )
    if "ict" in terms:
        out["ict"] = ict_term(model, batch, feats, ict_temperature)
    if "clip" in terms:
        out["clip"] = clip_term(model, batch)
    return {t: out[t] for t in terms}


def _has_clip_head(model) -> bool:
    try:
        return hasattr(model, "clip_embeddings") and model.logit_scale is not None
    except (AttributeError, ValueError):  # a single stream built without pretraining heads
        return False


@torch.no_grad()
def pretrain_accuracies(
    model, batch: dict, tokens: TokenSpec | None = None, *, mlm_prob: float = 0.3, seed: int = 0
) -> dict[str, tuple[int, int]]:
    """Held-out accuracies of the pretraining tasks a model has heads for, as (correct, total) counts.

    - `mlm`: masked tokens predicted exactly (masks drawn from `seed`, hidden from attention);
    - `itm`: frame–text match / mismatch told apart under the seed's half-reversed shuffle;
    - `clip`: in-batch video → title retrieval at rank 1 (models with `clip_embeddings` and a CLIP
      temperature).

    Args:
        model: a single-stream model with pretraining heads, or any model with `clip_embeddings`.
        batch: a WBDC batch (`title_ids`/`title_mask` needed for clip).

    Returns:
        {task: (correct, total)} for the tasks the model supports (empty when none).
    """
    tokens = tokens or TokenSpec()
    out = {}
    heads = getattr(model, "heads", None) is not None and hasattr(model, "mlm_logits")
    ids, mask, frame_mask = batch["text_ids"], batch["text_mask"], batch["frame_mask"]
    if heads:
        feats = model.frame_features(batch["frames"], frame_mask)
        generator = torch.Generator(device=ids.device).manual_seed(seed)
        masked, labels = mlm_mask(
            ids, mask, tokens.vocab_size, tokens.special_ids, mlm_prob, generator, tokens.mask_id
        )
        attn = mask * (labels == -100).to(mask.dtype)
        hidden, _ = model.encode(masked, attn, feats, frame_mask)
        chosen = labels != -100
        pred = model.mlm_logits(hidden[:, : ids.shape[1]]).argmax(-1)
        out["mlm"] = (int((pred[chosen] == labels[chosen]).sum()), int(chosen.sum()))
        n = len(ids)
        perm = itm_permutation(n, ids.device)
        hidden, _ = model.encode(ids, mask, feats[perm], frame_mask[perm])
        matched = perm == torch.arange(n, device=ids.device)
        out["itm"] = (int((model.itm_logits(hidden).argmax(-1).bool() == matched).sum()), n)
    if _has_clip_head(model) and "title_ids" in batch:
        video, text = model.clip_embeddings(
            batch["frames"], frame_mask, batch["title_ids"], batch["title_mask"]
        )
        sim = F.normalize(video.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T  # (B, B)
        hits = sim.argmax(-1) == torch.arange(len(sim), device=sim.device)
        out["clip"] = (int(hits.sum()), len(sim))
    return out
