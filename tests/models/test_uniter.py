"""UNITER tag-head init: the prior bias (`tag_prior_count`) and the seed's zero bias behind None."""

import math

import pytest
import torch

from vmmlib.models import create_model
from vmmlib.objectives.losses import tag_bce

NUM_TAGS = 240  # the sample data's tag vocabulary
VOCAB = 1000


def tag_grad_on_embedding(model, B=16, T=8, L=12, seed=0):
    """(shared, per_video): the norms of the batch-mean part of d(tag BCE)/d(embedding) (times B) and
    of the per-video remainder (summed), on a random batch with 3 positive tags per video."""
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(B, T, 1536, generator=g) * 2
    text_ids = torch.randint(104, VOCAB, (B, L), generator=g)
    ones = torch.ones(B, T), torch.ones(B, L, dtype=torch.long)
    labels = torch.zeros(B, NUM_TAGS)
    labels[torch.arange(B).repeat_interleave(3), torch.randint(0, NUM_TAGS, (3 * B,), generator=g)] = 1
    out = model(frames=frames, frame_mask=ones[0], text_ids=text_ids, text_mask=ones[1])
    (grad,) = torch.autograd.grad(tag_bce(out["tag_logits"], labels), out["embedding"])
    mean = grad.mean(0)
    return (mean.norm() * B).item(), (grad - mean).norm(dim=1).sum().item()


@pytest.mark.parametrize("name", ["uniter_qq_tiny", "uniter_roformer_qq_tiny"])
def test_tag_head_bias_starts_at_the_prior_and_none_restores_the_seed_zero_bias(name):
    model = create_model(name, num_tags=NUM_TAGS, vocab_size=VOCAB)
    torch.testing.assert_close(model.tag_head.bias, torch.full((NUM_TAGS,), math.log(3 / (NUM_TAGS - 3))))
    seed = create_model(name, num_tags=NUM_TAGS, vocab_size=VOCAB, tag_prior_count=None)
    assert (seed.tag_head.bias == 0).all()
    few = create_model(name, num_tags=4, vocab_size=VOCAB)  # count ≥ num_tags / 2: clamped to p = 0.5
    assert (few.tag_head.bias == 0).all()


def test_prior_bias_keeps_the_tag_gradient_from_pushing_every_embedding_one_way():
    """The failure it fixes: with a zero bias, the tag loss's gradient on the embedding is mostly one
    direction shared by every video (it collapses the pair cosines to 1); with the prior it is not."""
    torch.manual_seed(0)
    shared, per_video = tag_grad_on_embedding(
        create_model("uniter_qq_tiny", num_tags=NUM_TAGS, vocab_size=VOCAB, tag_prior_count=None).eval()
    )
    assert shared > 2 * per_video
    torch.manual_seed(0)
    shared, per_video = tag_grad_on_embedding(
        create_model("uniter_qq_tiny", num_tags=NUM_TAGS, vocab_size=VOCAB).eval()
    )
    assert shared < per_video
