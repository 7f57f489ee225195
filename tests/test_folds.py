import random

import numpy as np
import pytest

from vmmlib.data.folds import seed_pair_folds, video_folds, video_pair_folds


def test_seed_pair_folds_reproduce_the_seed_shuffle():
    pairs = list(range(100))
    random.seed(42)
    random.shuffle(pairs)  # exactly what seed 000's write_tfrecord.py does
    train, val = seed_pair_folds(100, 11, 3, fold_size=6)
    assert val.tolist() == pairs[18:24]
    assert sorted(train.tolist() + val.tolist()) == list(range(100))
    assert set(pairs[66:]) <= set(train.tolist())  # the remainder always trains, as in the seed


def test_seed_pair_folds_partition_the_validation_sets():
    vals = [seed_pair_folds(55, 5, k)[1] for k in range(5)]
    assert sorted(np.concatenate(vals).tolist()) == list(range(55))


def test_fold_arguments_are_checked():
    with pytest.raises(ValueError, match="fold must be in 0..4"):
        seed_pair_folds(50, 5, 5)
    with pytest.raises(ValueError, match="need"):
        seed_pair_folds(50, 5, 0, fold_size=20)


def test_video_pair_folds_never_show_a_validation_video_in_training():
    rng = np.random.default_rng(0)
    ids = [str(i) for i in range(40)]
    a = [ids[i] for i in rng.integers(0, 40, 300)]
    b = [ids[i] for i in rng.integers(0, 40, 300)]
    groups = video_folds(a + b, 4, seed=1)
    for fold in range(4):
        train, val = video_pair_folds(a, b, 4, fold, seed=1)
        assert len(train) + len(val) == 300 and len(val) > 0
        val_videos = {v for v, g in groups.items() if g == fold}
        assert not ({a[i] for i in train} | {b[i] for i in train}) & val_videos
    assert video_folds(ids, 4, seed=1) == video_folds(list(reversed(ids)), 4, seed=1)
