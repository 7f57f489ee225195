"""WBDC rank-8 pretraining objectives: each term finite and decreasing on a tiny batch, the NCE and the
ITM shuffle against hand computations, mask-modality inputs, and the seed's two quirks behind flags."""

import math

import pytest
import torch

import vmmlib.models.wbdc_dual
import vmmlib.models.wbdc_single  # noqa: F401  (registers the families)
from vmmlib.models import create_model
from vmmlib.objectives.video_text import (
    SEED_TERMS,
    TERMS,
    TokenSpec,
    itm_permutation,
    mask_frames,
    mfm_nce,
    video_text_terms,
)

VOCAB = 8000  # a small vocabulary keeps the MLM logits cheap
TOKENS = TokenSpec(vocab_size=VOCAB)  # bert-base-chinese special ids


def make_batch(B=8, T=6, L=16, D=768, seed=0):
    g = torch.Generator().manual_seed(seed)
    frame_mask = torch.ones(B, T)
    frame_mask[1, 3:], frame_mask[5, 1:] = 0, 0
    frames = torch.randn(B, T, D, generator=g) * frame_mask.unsqueeze(-1)

    def text(length):
        ids = torch.randint(672, VOCAB, (B, length), generator=g)
        ids[:, 0], ids[:, -1] = 101, 102
        mask = torch.ones(B, length, dtype=torch.long)
        ids[2, length // 2 :], mask[2, length // 2 :] = 0, 0
        ids[2, length // 2 - 1] = 102
        return ids, mask

    batch = {"frames": frames, "frame_mask": frame_mask}
    batch["text_ids"], batch["text_mask"] = text(L)
    batch["title_ids"], batch["title_mask"] = text(8)
    batch["context_ids"], batch["context_mask"] = text(L)
    return batch


def _model(name="wbdc_single_stream_tiny", **kw):
    torch.manual_seed(0)
    extra = {"pretrain_heads": True} if "single" in name else {"clip_head": True}
    # eval: no dropout, so the loss curve is the optimiser's alone
    return create_model(name, vocab_size=VOCAB, **extra, **kw).eval()


@pytest.mark.parametrize("term", TERMS)
def test_each_term_is_finite_and_decreases_over_a_few_optimiser_steps(term):
    model = _model()
    batch = make_batch()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    values = []
    for _ in range(6):
        out = video_text_terms(
            model, batch, terms=[term], tokens=TOKENS, generator=torch.Generator().manual_seed(0)
        )
        assert set(out) == {term} and torch.isfinite(out[term])
        opt.zero_grad()
        out[term].backward()
        opt.step()
        values.append(out[term].item())
    assert values[-1] < values[0], values


def test_clip_term_trains_the_dual_stream_and_its_learnable_temperature():
    model = _model("wbdc_dual_stream_tiny")
    batch = make_batch()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    scale0 = model.logit_scale.item()
    values = []
    for _ in range(5):
        loss = video_text_terms(model, batch, terms=["clip"])["clip"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < values[0] and model.logit_scale.item() != scale0
    assert scale0 == pytest.approx(math.log(1 / 0.07))


def test_all_seed_terms_in_one_call_are_finite_and_backpropagate():
    model = _model()
    out = video_text_terms(model, make_batch(), terms=SEED_TERMS)
    assert list(out) == list(SEED_TERMS) and all(torch.isfinite(v) for v in out.values())
    sum(out.values()).backward()
    assert model.heads.mfm[0].weight.grad.abs().sum() > 0 and model.heads.itm.weight.grad.abs().sum() > 0


def test_itm_permutation_keeps_the_first_half_and_reverses_the_second():
    assert itm_permutation(6).tolist() == [0, 1, 2, 5, 4, 3]
    assert itm_permutation(5).tolist() == [0, 1, 4, 3, 2]  # an odd half keeps its middle matched
    assert itm_permutation(1).tolist() == [0]


def test_mfm_nce_against_a_hand_computation_and_pads_are_never_candidates():
    target = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 1.0], [5.0, 5.0]]])  # (B=2, T=2, D=2)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # the (5, 5) frame is a pad
    pred = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    chosen = torch.tensor([[True, False], [False, False]])
    # position 0 scores 2·[1, 0, 1] against the three real frames: −log(e²/(e² + 1 + e²)), halved
    expected = -math.log(math.exp(2) / (2 * math.exp(2) + 1)) / 2
    assert mfm_nce(pred, target, mask, chosen).item() == pytest.approx(expected, rel=1e-6)
    assert mfm_nce(pred, target, mask, torch.zeros_like(chosen)).item() == 0.0
    drawn = mask_frames(
        torch.tensor([[1.0] * 1000 + [0.0] * 1000]), prob=0.135, generator=torch.Generator().manual_seed(0)
    )
    assert not drawn[0, 1000:].any() and 0.1 < drawn[0, :1000].float().mean() < 0.17


class Spy:
    """Wraps a model, recording what `encode` is called with."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def encode(self, *args):
        self.calls.append([a.clone() if a is not None else None for a in args])
        return self.model.encode(*args)


def test_mask_modality_blanks_all_frames_of_its_first_half_and_all_text_of_its_second():
    spy, batch = Spy(_model()), make_batch()
    video_text_terms(spy, batch, terms=["mmm"], tokens=TOKENS)
    ids, text_mask, video, frame_mask = spy.calls[0]  # the first B // 4 = 2 samples
    assert len(ids) == 2
    assert video[0].abs().sum() == 0 and torch.equal(video[1], batch["frames"][1])
    assert torch.equal(ids[0], batch["text_ids"][0])
    assert (ids[1][text_mask[1] > 0] == TOKENS.mask_id).all()  # [CLS]/[SEP] included


def test_masked_tokens_are_hidden_from_attention_unless_the_seed_flag_is_set():
    batch = make_batch()
    for flag in (False, True):
        spy = Spy(_model())
        video_text_terms(
            spy,
            batch,
            terms=["mlm"],
            tokens=TOKENS,
            seed_masked_tokens_visible=flag,
            generator=torch.Generator().manual_seed(0),
        )
        ids, attention = spy.calls[0][:2]
        changed = (
            ids != batch["text_ids"]
        )  # the [MASK]ed and randomly replaced tokens (kept ones too are chosen)
        assert changed.any()
        if flag:  # the seed: its hide-mask call is a no-op, attention sees every real token
            assert torch.equal(attention, batch["text_mask"])
        else:
            assert (attention[changed] == 0).all() and (attention <= batch["text_mask"]).all()
            assert (attention != batch["text_mask"]).sum() >= changed.sum()


def test_mfm_targets_follow_the_itm_shuffle_unless_the_seed_flag_is_set():
    batch = make_batch()
    losses = {}
    for flag in (False, True):
        model = _model()
        losses[flag] = video_text_terms(
            model,
            batch,
            terms=["mfm", "itm"],
            tokens=TOKENS,
            seed_mfm_targets_unshuffled=flag,
            generator=torch.Generator().manual_seed(0),
        )["mfm"].item()
    assert losses[False] != losses[True]
    # without itm there is no shuffle, so the flag changes nothing
    same = [
        video_text_terms(
            _model(),
            batch,
            terms=["mfm"],
            seed_mfm_targets_unshuffled=flag,
            generator=torch.Generator().manual_seed(0),
        )["mfm"].item()
        for flag in (False, True)
    ]
    assert same[0] == same[1]


def test_bad_requests_name_the_valid_terms_and_the_missing_keys():
    model, batch = _model(), make_batch()
    with pytest.raises(ValueError, match="valid terms: mlm, mfm, itm, ict, mmm, clip"):
        video_text_terms(model, batch, terms=["mlm", "vtm"])
    del batch["context_ids"]
    with pytest.raises(KeyError, match="ict_texts=True"):
        video_text_terms(model, batch, terms=["ict"])
