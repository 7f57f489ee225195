"""Tube masks with an exact count per video (SPEC §9.3), the seed's Gaussian mask, MLM at 30 %, shuffles."""

import math

import pytest
import torch
from transformers import VideoMAEConfig, VideoMAEModel

from vmmlib.models.layers import check_mask_counts
from vmmlib.objectives.masking import (
    gaussian_threshold_mask,
    mlm_corrupt,
    random_patch_mask,
    shuffle_pairs,
    tube_mask,
)


def test_tube_mask_has_the_exact_count_in_every_video_and_repeats_over_time():
    mask = tube_mask(8, 16, 196, tubelet_size=2, mask_ratio=0.9, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (8, 8 * 196) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [8 * int(0.9 * 196)] * 8  # 8 tubelets x 176 patches
    frames = mask.reshape(8, 8, 196)
    assert (frames == frames[:, :1]).all()  # one spatial mask per video, repeated over time
    assert not (frames[0, 0] == frames[1, 0]).all()  # drawn per video
    assert check_mask_counts(mask) == 8 * 176


@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.75, 0.9])
def test_tube_mask_ratio_is_a_parameter(ratio):
    mask = tube_mask(3, 4, 16, tubelet_size=2, mask_ratio=ratio)
    assert mask.sum(1).tolist() == [2 * int(ratio * 16)] * 3


def test_seed_gaussian_threshold_mask_is_shared_and_masks_phi_of_the_ratio():
    mask = gaussian_threshold_mask(4, 200_000, 0.8, generator=torch.Generator().manual_seed(0))
    assert (mask == mask[:1]).all()  # the same mask for the whole batch
    phi = 0.5 * (1 + math.erf(0.8 / math.sqrt(2)))  # 0.788, not 0.8
    assert mask[0].float().mean().item() == pytest.approx(phi, abs=0.005)
    small = gaussian_threshold_mask(2, 32, 0.8, generator=torch.Generator().manual_seed(1))
    assert (
        small.reshape(2, 2, 16)[0, 0].tolist() != small.reshape(2, 2, 16)[0, 1].tolist()
    )  # no tube structure


def test_videomae_mixes_tokens_across_videos_when_counts_differ_and_the_guard_refuses_it():
    torch.manual_seed(0)
    config = VideoMAEConfig(image_size=16, patch_size=8, num_frames=2, tubelet_size=2, hidden_size=16,
                            num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)  # fmt: skip
    model = VideoMAEModel(config).eval()
    frames = torch.randn(2, 2, 3, 16, 16)
    other = frames.clone()
    other[1] += 5.0  # change only video 1
    uneven = torch.tensor(
        [[True, False, False, False], [True, True, True, False]]
    )  # 3 + 1 visible: 4 = 2 x 2
    with torch.no_grad():
        a = model(frames, bool_masked_pos=uneven).last_hidden_state
        b = model(other, bool_masked_pos=uneven).last_hidden_state
    # 3 + 1 visible tokens reshaped to (2, 2, C): row 0 = video 0's tokens 1, 2; row 1 = video 0's
    # token 3 next to video 1's token 3, so a token of video 0 now attends to video 1
    assert a.shape == (2, 2, 16)
    torch.testing.assert_close(a[0], b[0])
    assert (a[1, 0] - b[1, 0]).abs().max() > 1e-4  # video 0's token changed with video 1's pixels
    with pytest.raises(ValueError, match="counts differ"):
        check_mask_counts(uneven)
    even = tube_mask(2, 2, 4, tubelet_size=2, mask_ratio=0.5)
    with torch.no_grad():
        e = model(frames, bool_masked_pos=even).last_hidden_state
        f = model(other, bool_masked_pos=even).last_hidden_state
    torch.testing.assert_close(e[0], f[0])  # with exact counts video 0 never sees video 1


def test_random_patch_mask_counts_match_vitmae():
    mask = random_patch_mask(5, 64, 0.3)
    assert mask.sum(1).tolist() == [64 - int(64 * 0.7)] * 5


def test_mlm_corrupt_masks_about_30_percent_and_at_least_one_token_per_text():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 100, (400, 20), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2
    mask = torch.ones_like(ids)
    mask[0, 3:] = 0  # a text with only two real tokens: 1 maskable
    masked, labels = mlm_corrupt(
        ids, mask, vocab_size=100, special_ids=[0, 1, 2, 3, 4], mask_id=4, prob=0.3, generator=g
    )
    chosen = labels != -100
    assert chosen[:, 1:-1].float().mean().item() == pytest.approx(0.3, abs=0.02)
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    assert (chosen.sum(1) >= 1).all()
    assert (labels[chosen] == ids[chosen]).all()
    assert (masked[chosen] == 4).float().mean().item() == pytest.approx(0.8, abs=0.05)
    assert (masked[~chosen] == ids[~chosen]).all()
    only_specials = torch.tensor([[1, 2, 0]])
    _, none = mlm_corrupt(
        only_specials, torch.tensor([[1, 1, 0]]), vocab_size=100, special_ids=[0, 1, 2], mask_id=4
    )
    assert (none == -100).all()


def test_shuffle_pairs_makes_the_shuffled_share_true_negatives():
    perm, labels = shuffle_pairs(10, 0.5, generator=torch.Generator().manual_seed(0))
    assert sorted(perm.tolist()) == list(range(10))
    assert labels.sum().item() == 5
    assert (labels == (perm == torch.arange(10)).long()).all()
    assert shuffle_pairs(1, 0.5)[1].tolist() == [1]  # nothing to swap with
    assert shuffle_pairs(4, 1.0)[1].tolist() == [1, 1, 1, 1]
    assert shuffle_pairs(4, 0.0)[1].tolist() == [0, 0, 0, 0]
