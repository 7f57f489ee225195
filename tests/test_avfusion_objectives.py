"""Seed-004 pretraining objectives: patch order, MAE loss, the masked batch, and each term learning."""

import importlib

import pytest
import torch
from transformers import VideoMAEConfig
from transformers.models.videomae.modeling_videomae import VideoMAEPatchEmbeddings

from vmmlib.objectives.avfusion import (
    PRETRAIN_TERMS,
    corrupt_batch,
    mae_loss,
    mlm_accuracy,
    patchify_image,
    patchify_video,
    pretrain_terms,
)
from vmmlib.objectives.losses import info_nce

VOCAB = 40
SPECIALS = [0, 1, 2, 3, 4]


def tiny_model(**overrides):
    # imported here, not at module level: see tests/models/test_avfusion_models.py
    return importlib.import_module("vmmlib.models.avfusion").avfusion_tiny(
        vocab_size=VOCAB, dropout=0.0, **overrides
    )


def make_batch(B=4, L=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    text_ids = torch.randint(5, VOCAB, (B, L), generator=g)
    text_ids[:, 0], text_ids[:, -1] = 1, 2
    return {
        "frames": torch.randn(B, 4, 3, 32, 32, generator=g),
        "audio": torch.randn(B, 1, 32, 64, generator=g),
        "text_ids": text_ids,
        "text_mask": torch.ones(B, L, dtype=torch.long),
    }


def test_patchify_video_follows_the_videomae_patch_embedding_token_order():
    config = VideoMAEConfig(image_size=16, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=8)
    embed = VideoMAEPatchEmbeddings(config)
    frames = torch.randn(2, 4, 3, 16, 16)
    patches = patchify_video(frames, 8, 2)  # (B, N, ts*p*p*C) with values ordered (ts, p, p, C)
    conv = embed.projection
    weight = conv.weight.permute(0, 2, 3, 4, 1).reshape(8, -1)  # (D, ts, p, p, C) flattened like the patches
    expected = embed(frames)  # conv over each tubelet, tokens in (t', h', w') order
    torch.testing.assert_close(patches @ weight.T + conv.bias, expected, atol=1e-5, rtol=1e-5)


def test_patchify_image_row_major_patches():
    image = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(1, 2, 4, 6)
    patches = patchify_image(image, 2)
    assert patches.shape == (1, 6, 8)
    top_left = image[0, :, :2, :2].permute(1, 2, 0).reshape(-1)
    torch.testing.assert_close(patches[0, 0], top_left)
    torch.testing.assert_close(patches[0, 1], image[0, :, :2, 2:4].permute(1, 2, 0).reshape(-1))


def test_mae_loss_is_zero_for_the_normalised_target_and_counts_only_masked_patches():
    patches = torch.randn(2, 5, 12)
    mask = torch.tensor([[True, False, True, False, False], [False, True, False, False, True]])
    target = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt()
    pred = target[mask].reshape(2, 2, 12)
    assert mae_loss(pred, patches, mask).item() == pytest.approx(0.0, abs=1e-10)
    assert mae_loss(patches[mask].reshape(2, 2, 12), patches, mask, norm_pix=False).item() == 0.0
    assert mae_loss(pred + 1.0, patches, mask).item() == pytest.approx(1.0)


def test_mlm_accuracy_is_the_seeds_vtm_acc():
    logits = torch.zeros(1, 3, 5)
    logits[0, 0, 2] = logits[0, 1, 4] = 1.0
    labels = torch.tensor([[2, 3, -100]])
    assert mlm_accuracy(logits, labels).item() == 0.5


def test_corrupt_batch_builds_every_mask_and_target():
    model = tiny_model()
    batch = make_batch(B=6)
    g = torch.Generator().manual_seed(0)
    inputs, targets = corrupt_batch(model, batch, mask_id=4, special_ids=SPECIALS, generator=g)
    assert inputs["mlm"] is True and (targets["mlm_labels"] != -100).any(1).all()
    assert inputs["video_mask"].sum(1).tolist() == [2 * int(0.9 * 16)] * 6
    assert inputs["audio_mask"].sum(1).tolist() == [32 - int(32 * 0.7)] * 6
    assert targets["itm_labels"].sum().item() == 3 and sorted(inputs["vt_perm"].tolist()) == list(range(6))
    seed_mask, _ = corrupt_batch(
        model, batch, mask_id=4, special_ids=SPECIALS, terms=("video_mae",), video_masking="seed_gaussian",
        video_mask_ratio=0.8, generator=g,
    )  # fmt: skip
    assert (seed_mask["video_mask"] == seed_mask["video_mask"][:1]).all()
    assert "vt_perm" not in seed_mask and "mlm" not in seed_mask
    with pytest.raises(ValueError, match="valid terms: mlm, video_mae"):
        corrupt_batch(model, batch, mask_id=4, special_ids=SPECIALS, terms=("mfm",))
    with pytest.raises(ValueError, match="tube, seed_gaussian"):
        corrupt_batch(model, batch, mask_id=4, special_ids=SPECIALS, video_masking="random")
    vt_model = tiny_model(use_audio=False)
    with pytest.raises(ValueError, match="audio tower"):
        corrupt_batch(vt_model, batch, mask_id=4, special_ids=SPECIALS, terms=("audio_mae",))


@pytest.mark.parametrize("term", PRETRAIN_TERMS)
def test_each_term_is_finite_and_decreases_over_a_few_steps_on_a_tiny_batch(term):
    torch.manual_seed(0)
    model = tiny_model()
    batch = make_batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    losses = []
    for _ in range(5):  # the same masks every step (fixed generator): deterministic on CPU
        terms = pretrain_terms(model, batch, mask_id=4, special_ids=SPECIALS, terms=(term,),
                               generator=torch.Generator().manual_seed(0))  # fmt: skip
        assert set(terms) == {term} and terms[term].ndim == 0 and torch.isfinite(terms[term])
        losses.append(terms[term].item())
        optimizer.zero_grad()
        terms[term].backward()
        optimizer.step()
    assert losses[-1] < losses[0] - 0.01, losses


def test_all_terms_in_one_pass_and_the_seed_mask_option():
    model = tiny_model()
    terms = pretrain_terms(model, make_batch(), mask_id=4, special_ids=SPECIALS, video_masking="seed_gaussian",
                           video_mask_ratio=0.8, clean_alignment=False,
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert set(terms) == set(PRETRAIN_TERMS)
    assert all(torch.isfinite(t) for t in terms.values())


def test_alignment_terms_see_the_clean_inputs_unless_the_seeds_single_pass_is_asked():
    model, batch = tiny_model().eval(), make_batch()
    with torch.no_grad():
        out = model(**batch)  # whole clips, uncorrupted text
    clean_vtc = info_nce(out["video_embedding"], out["text_embedding"], 0.07)
    both = pretrain_terms(
        model, batch, mask_id=4, special_ids=SPECIALS, generator=torch.Generator().manual_seed(0)
    )
    assert set(both) == set(PRETRAIN_TERMS) and list(both) == list(PRETRAIN_TERMS)
    torch.testing.assert_close(both["vtc"], clean_vtc)
    alone = pretrain_terms(model, batch, mask_id=4, special_ids=SPECIALS, terms=("mlm", "video_mae", "audio_mae"),
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
    for term in alone:  # the reconstruction terms: the same masks (drawn first) give the same values
        torch.testing.assert_close(both[term], alone[term])
    single = pretrain_terms(model, batch, mask_id=4, special_ids=SPECIALS, clean_alignment=False,
                            generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert not torch.allclose(single["vtc"], clean_vtc)  # 90 % of the tubes hidden, MLM-corrupted text
