"""Masks for masked-modelling pretraining and the shuffled pairs of video–text matching (seed 004).

- `tube_mask`: VideoMAE tube masking (Tong et al., NeurIPS 2022): one random spatial mask of exactly
  int(ratio · P) of the P patches per frame, repeated over every temporal tubelet, drawn per video.
  Every video of the batch therefore has the same number of masked tokens, which
  `VideoMAEModel` needs: it gathers the visible tokens with `x[~mask].reshape(B, -1, C)` and silently
  mixes tokens across videos when the counts differ but their total divides by B (SPEC §9.3); the
  models refuse such masks (`vmmlib.models.layers.check_mask_counts`).
- `gaussian_threshold_mask`: seed 004's collator, kept only to reproduce it: `randn(N) < ratio`
  over all N tokens (a Gaussian draw, so the masked share is Φ(ratio) ≈ 78.8 % for 0.8, not `ratio`),
  one mask shared by the whole batch, no tube structure.
- `random_patch_mask`: ViT-MAE random masking (He et al., CVPR 2022), N − int(N · (1 − ratio)) patches
  per sample, used for the spectrogram patches of the audio encoder (seed ratio 0.3).
- `TokenSpec`: the vocabulary ids MLM corruption needs (size, [MASK], the special ids never masked).
- `mlm_corrupt`: BERT-style 80/10/10 corruption at 30 % (seed 004), at least one token per text.
- `shuffle_pairs`: which videos are paired with another sample's text for video–text matching.

All draws take an optional `torch.Generator` so masks are reproducible.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from vmmlib.objectives.losses import mlm_mask


@dataclass(frozen=True)
class TokenSpec:
    """What MLM corruption needs from the vocabulary (bert-base-chinese ids by default)."""

    vocab_size: int = 21128
    mask_id: int = 103
    special_ids: tuple[int, ...] = (0, 100, 101, 102, 103)  # [PAD] [UNK] [CLS] [SEP] [MASK]

    @classmethod
    def from_tokenizer(cls, tokenizer, vocab_size: int | None = None) -> TokenSpec:
        """From a BERT tokenizer; `vocab_size` defaults to the tokenizer's (give the model's if larger)."""
        return cls(
            vocab_size or len(tokenizer), tokenizer.mask_token_id, tuple(sorted(tokenizer.all_special_ids))
        )


def tube_mask(
    batch_size: int,
    num_frames: int,
    patches_per_frame: int,
    *,
    tubelet_size: int = 2,
    mask_ratio: float = 0.9,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """VideoMAE tube masks, an exact count per video, drawn independently per video.

    Args:
        batch_size: B.
        num_frames: frames per clip (T, a multiple of `tubelet_size`).
        patches_per_frame: P = (image_size / patch_size)².
        tubelet_size: frames per temporal token.
        mask_ratio: share of each frame's patches masked (VideoMAE: 0.9).
        generator: for reproducible masks.

    Returns:
        bool (B, (T / tubelet_size) · P), True = masked, token order (time, height, width) as the
        VideoMAE patch embedding; each row has exactly (T / tubelet_size) · int(mask_ratio · P) Trues.
    """
    if num_frames % tubelet_size:
        raise ValueError(f"num_frames {num_frames} is not a multiple of tubelet_size {tubelet_size}")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    masked_per_frame = int(mask_ratio * patches_per_frame)
    scores = torch.rand(batch_size, patches_per_frame, generator=generator)
    order = scores.argsort(dim=1)  # a uniformly random permutation per video
    spatial = torch.zeros(batch_size, patches_per_frame, dtype=torch.bool)
    spatial.scatter_(1, order[:, :masked_per_frame], True)
    return spatial.repeat(1, num_frames // tubelet_size)  # (B, T' * P): the same mask at every t'


def gaussian_threshold_mask(
    batch_size: int, num_tokens: int, ratio: float = 0.8, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Seed 004's video mask: one `randn(num_tokens) < ratio` mask repeated for the whole batch.

    Returns:
        bool (B, num_tokens), identical rows; the expected masked share is Φ(ratio), e.g. 0.788.
    """
    shared = torch.randn(num_tokens, generator=generator) < ratio
    return shared.unsqueeze(0).expand(batch_size, num_tokens).clone()


def random_patch_mask(
    batch_size: int, num_patches: int, mask_ratio: float = 0.75, generator: torch.Generator | None = None
) -> torch.Tensor:
    """ViT-MAE random masking: each sample keeps int(N · (1 − ratio)) random patches.

    Returns:
        bool (B, N), True = masked, exactly N − int(N · (1 − mask_ratio)) per row.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    keep = int(num_patches * (1 - mask_ratio))
    order = torch.rand(batch_size, num_patches, generator=generator).argsort(dim=1)
    mask = torch.ones(batch_size, num_patches, dtype=torch.bool)
    mask.scatter_(1, order[:, :keep], False)
    return mask


def mlm_corrupt(
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    *,
    vocab_size: int,
    special_ids: Iterable[int],
    mask_id: int,
    prob: float = 0.3,
    at_least_one: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MLM corruption at `prob` (seed 004: 0.3) with 80 % [MASK] / 10 % random / 10 % kept
    (`vmmlib.objectives.losses.mlm_mask`).

    With `at_least_one`, a text with no chosen token gets one (a uniformly random maskable position,
    replaced by [MASK]), as the seed's collator resamples until something is masked; texts without a
    maskable token stay unmasked.

    Returns:
        masked_ids int64 (B, L); mlm_labels int64 (B, L), the original id where chosen, −100 elsewhere.
    """
    specials = sorted(set(special_ids))
    masked, labels = mlm_mask(
        text_ids, text_mask, vocab_size, specials, prob=prob, generator=generator, mask_id=mask_id
    )
    if not at_least_one:
        return masked, labels
    maskable = text_mask.bool() & ~torch.isin(text_ids, torch.tensor(specials, dtype=text_ids.dtype))
    empty = ((labels != -100).sum(1) == 0) & maskable.any(1)
    if empty.any():
        scores = torch.rand(text_ids.shape, generator=generator).masked_fill(~maskable, -1.0)
        pick = scores.argmax(1)  # (B,) a random maskable position
        rows = empty.nonzero().squeeze(1)
        labels[rows, pick[rows]] = text_ids[rows, pick[rows]]
        masked[rows, pick[rows]] = mask_id
    return masked, labels


def shuffle_pairs(
    batch_size: int, match_ratio: float = 0.5, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair each text with its own video, or for a share of the batch with another sample's video.

    round(B · (1 − match_ratio)) random positions (seed 004: half the batch) have their videos rotated
    among themselves, so each of them gets a different sample's video (the seed's plain shuffle can
    leave some in place; with a single chosen position nothing can move and it stays a match).

    Returns:
        perm int64 (B,): text i is paired with video perm[i]; itm_labels int64 (B,): 1 where
        perm[i] == i (a match), else 0.
    """
    if not 0.0 <= match_ratio <= 1.0:
        raise ValueError(f"match_ratio must be in [0, 1], got {match_ratio}")
    n_shuffle = int(round(batch_size * (1 - match_ratio)))
    perm = torch.arange(batch_size)
    if n_shuffle >= 2:
        chosen = torch.randperm(batch_size, generator=generator)[:n_shuffle]
        perm[chosen] = chosen.roll(1)
    return perm, (perm == torch.arange(batch_size)).long()
