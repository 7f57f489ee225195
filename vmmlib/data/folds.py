"""Deterministic cross-validation folds for pairs (QQ Browser) and items.

`seed_pair_folds` reproduces seed 000 exactly (SPEC §1.1, §4.6): every line of `label.tsv` in file
order, `random.seed(42); random.shuffle(pairs)`, fold i validates on slice i of the shuffled list,
the rest trains. Splitting by pair index lets one video sit in both train and validation pairs;
`video_pair_folds` is the leak-free alternative: videos are dealt into folds, a fold validates on
every pair touching one of its videos and trains on pairs touching none of them, so each video's
out-of-fold embedding comes from a model that never saw it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np


def check_fold(fold: int, n_folds: int) -> None:
    """Raise ValueError unless n_folds >= 2 and 0 <= fold < n_folds."""
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in 0..{n_folds - 1}, got {fold}")


def seed_pair_folds(
    n_pairs: int, n_folds: int, fold: int, *, seed: int = 42, fold_size: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Seed 000's pair folds: seeded shuffle, validation = slice `fold` of size `fold_size`.

    Args:
        n_pairs: number of lines in label.tsv.
        fold_size: pairs per validation fold; default `n_pairs // n_folds` (the seed used 6000 with
            11 folds of 67,899 pairs, leaving the last 1,899 shuffled pairs always in training).

    Returns:
        (train_idx, val_idx): indices into the label.tsv lines. train_idx is in the shuffled order
        (the seed shuffles the training part again when writing its tfrecords; loaders reshuffle).
    """
    check_fold(fold, n_folds)
    fold_size = fold_size or n_pairs // n_folds
    if fold_size * n_folds > n_pairs:
        raise ValueError(f"{n_folds} folds of {fold_size} need {fold_size * n_folds} pairs, have {n_pairs}")
    order = list(range(n_pairs))
    random.Random(seed).shuffle(order)  # same sequence as random.seed(seed); random.shuffle(order)
    order = np.asarray(order, dtype=np.int64)
    val = order[fold * fold_size : (fold + 1) * fold_size]
    train = np.concatenate([order[: fold * fold_size], order[(fold + 1) * fold_size :]])
    return train, val


def video_folds(video_ids: Sequence[str], n_folds: int, *, seed: int = 0) -> dict[str, int]:
    """Deal videos into `n_folds` groups of near-equal size with a seeded permutation."""
    unique = sorted(set(video_ids))
    perm = np.random.default_rng(seed).permutation(len(unique))
    return {unique[i]: int(rank % n_folds) for rank, i in enumerate(perm)}


def video_pair_folds(
    pairs_a: Sequence[str], pairs_b: Sequence[str], n_folds: int, fold: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Video-disjoint pair folds.

    Returns:
        (train_idx, val_idx): validation pairs touch at least one video of group `fold`; training
        pairs touch none, so no validation video is seen in training.
    """
    check_fold(fold, n_folds)
    group = video_folds(list(pairs_a) + list(pairs_b), n_folds, seed=seed)
    in_fold = np.array([group[a] == fold or group[b] == fold for a, b in zip(pairs_a, pairs_b)])
    return np.flatnonzero(~in_fold), np.flatnonzero(in_fold)
