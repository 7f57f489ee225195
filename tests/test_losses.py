"""Losses: analytic values, reference implementations, numerical safety."""

import math

import pytest
import torch

from vmmlib.objectives.compose import objective_weights, weighted
from vmmlib.objectives.losses import (
    asl_loss,
    asl_loss_seed,
    info_nce,
    keras_kl,
    mixture_distillation,
    mlm_loss,
    mlm_mask,
    pair_mse,
    pair_objective_terms,
    tag_bce,
    tag_loss_fn,
)

# ±50 as asked; ±200 and ±1e4 saturate float32 sigmoids to exactly 0 and 1
EXTREME = torch.tensor(
    [[50.0, -50.0, 50.0, -50.0, 0.0, 17.0, -17.0, 200.0, -200.0, 1e4, -1e4, 200.0, -200.0]]
)
EXTREME_LABELS = torch.tensor([[1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])


def official_asl(x, y, gamma_neg=4, gamma_pos=1, clip=0.05, eps=1e-8):
    """Direct port of Alibaba-MIIL/ASL `AsymmetricLoss.forward` (sum over everything)."""
    xs_pos = torch.sigmoid(x)
    xs_neg = 1 - xs_pos
    if clip is not None and clip > 0:
        xs_neg = (xs_neg + clip).clamp(max=1)
    loss = y * torch.log(xs_pos.clamp(min=eps)) + (1 - y) * torch.log(xs_neg.clamp(min=eps))
    with torch.no_grad():
        pt = xs_pos * y + xs_neg * (1 - y)
        w = torch.pow(1 - pt, gamma_pos * y + gamma_neg * (1 - y))
    return -(loss * w).sum()


def test_tag_bce_sums_over_tags_and_averages_over_the_batch():
    assert tag_bce(torch.zeros(4, 10), torch.ones(4, 10)).item() == pytest.approx(10 * math.log(2))


@pytest.mark.parametrize("fn", [asl_loss, asl_loss_seed])
def test_asl_is_finite_with_finite_gradients_at_saturated_logits(fn):
    x = EXTREME.clone().requires_grad_()
    loss = fn(x, EXTREME_LABELS)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()
    x16 = EXTREME.clone().half().requires_grad_()  # fp16 logits (autocast) are computed in fp32
    fn(x16, EXTREME_LABELS).backward()
    assert torch.isfinite(x16.grad).all()
    xg = EXTREME.clone().requires_grad_()  # fractional exponents: d/db b^γ is infinite at b = 0
    fn(xg, EXTREME_LABELS, gamma_neg=0.5, gamma_pos=0.5).backward()
    assert torch.isfinite(xg.grad).all()


def test_asl_matches_the_official_formula_in_value_and_gradient():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 20, generator=g) * 4
    x[:, :4] = torch.tensor([30.0, -30.0, 60.0, -60.0])  # where the official eps clamp is active
    x.requires_grad_()
    y = (torch.rand(6, 20, generator=g) < 0.3).float()
    ours = asl_loss(x, y, reduction="sum")
    (grad,) = torch.autograd.grad(ours, x)
    x_ref = x.detach().clone().requires_grad_()
    ref = official_asl(x_ref, y)
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, x_ref.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(asl_loss(x, y), ref / 6, rtol=1e-5, atol=1e-5)  # batchmean
    no_clip = asl_loss(x, y, gamma_neg=2, gamma_pos=0, clip=0, reduction="sum")
    torch.testing.assert_close(
        no_clip, official_asl(x, y, gamma_neg=2, gamma_pos=0, clip=0), rtol=1e-5, atol=1e-5
    )


def test_asl_without_focusing_or_clip_is_bce():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(5, 8, generator=g), (torch.rand(5, 8, generator=g) < 0.5).float()
    torch.testing.assert_close(asl_loss(x, y, gamma_neg=0, gamma_pos=0, clip=0), tag_bce(x, y))
    torch.testing.assert_close(asl_loss_seed(x, y, gamma_neg=0, gamma_pos=0), tag_bce(x, y))


def test_seed_asl_matches_its_probability_formula_with_gradient_through_the_weight():
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(4, 9, generator=g) * 3).requires_grad_()
    y = (torch.rand(4, 9, generator=g) < 0.4).float()
    p = torch.sigmoid(x).clamp(1e-7, 1 - 1e-7)
    # γ⁺ = 0, γ⁻ = 1: positives weigh 1, negatives weigh p, and the weight carries gradient
    direct = -(y * torch.log(p) + (1 - y) * p * torch.log(1 - p)).sum(-1).mean()
    ours = asl_loss_seed(x, y)
    torch.testing.assert_close(ours, direct, rtol=1e-5, atol=1e-6)
    (g_ours,) = torch.autograd.grad(ours, x, retain_graph=True)
    (g_direct,) = torch.autograd.grad(direct, x)
    torch.testing.assert_close(g_ours, g_direct, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(
        asl_loss_seed(torch.sigmoid(x), y, from_logits=False), ours, rtol=1e-5, atol=1e-6
    )


def test_pair_mse_is_a_sum_over_the_batch():
    sim, target = torch.tensor([0.5, 1.0, -0.3]), torch.tensor([0.5, 0.0, 0.2])
    assert pair_mse(sim, target).item() == pytest.approx(0.0 + 1.0 + 0.25)


def test_keras_kl_clips_and_sums_over_the_batch_axis():
    target = torch.tensor([0.5, 1.0, 0.0])
    sim = torch.tensor([0.25, 0.5, -0.3])
    # clipped: y = [0.5, 1, 1e-7], s = [0.25, 0.5, 1e-7] → 0.5 ln 2 + 1 ln 2 + 1e-7 ln 1
    assert keras_kl(target, sim).item() == pytest.approx(1.5 * math.log(2), rel=1e-6)
    # 2-D: sum over the last axis, mean over rows (Keras SUM_OVER_BATCH_SIZE)
    rows = torch.stack([target, target])  # the second row predicts its target exactly: KL 0
    assert keras_kl(rows, torch.stack([sim, target])).item() == pytest.approx(0.75 * math.log(2), rel=1e-6)


def test_pair_objective_terms_on_a_hand_computed_example():
    emb_a = torch.tensor([[2.0, 0.0], [1.0, 0.0]])
    emb_b = torch.tensor([[3.0, 0.0], [0.0, 5.0]])  # cosines 1 and 0
    target = torch.tensor([0.5, 0.5])
    C = 4
    logits, labels = torch.zeros(4, C), torch.ones(4, C)
    terms = pair_objective_terms(emb_a, emb_b, target, logits, labels)
    assert set(terms) == {"mse", "kl", "tag"}
    assert terms["mse"].item() == pytest.approx(0.25 + 0.25)
    # KL: 0.5 ln(0.5/1) + 0.5 ln(0.5/1e-7) (the zero cosine is clipped to 1e-7), unweighted
    assert terms["kl"].item() == pytest.approx(0.5 * math.log(0.5) + 0.5 * math.log(0.5 / 1e-7), rel=1e-5)
    assert terms["tag"].item() == pytest.approx(C * math.log(2), rel=1e-6)
    asl = pair_objective_terms(emb_a, emb_b, target, logits, labels, tag_loss="asl")["tag"]
    torch.testing.assert_close(asl, asl_loss(logits, labels))
    with pytest.raises(ValueError):
        pair_objective_terms(emb_a, emb_b, target, logits, labels, tag_loss="focal")


def test_info_nce_equals_a_direct_symmetric_cross_entropy():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    an, bn = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    s = an @ bn.T / 0.07
    rows = -torch.stack([torch.log_softmax(s[i], 0)[i] for i in range(5)]).mean()
    cols = -torch.stack([torch.log_softmax(s[:, i], 0)[i] for i in range(5)]).mean()
    torch.testing.assert_close(info_nce(a, b), (rows + cols) / 2)
    assert info_nce(an, an, temperature=0.01).item() < 1e-6  # aligned pairs, sharp temperature


def test_info_nce_with_a_branch_axis_averages_the_branches():
    g = torch.Generator().manual_seed(4)
    v, t = torch.randn(3, 5, 8, generator=g), torch.randn(5, 8, generator=g)
    expected = sum(info_nce(v[m], t) for m in range(3)) / 3
    torch.testing.assert_close(info_nce(v, t), expected)


SPECIALS = [0, 100, 101, 102, 103]  # [PAD] [UNK] [CLS] [SEP] [MASK]


def _titles(B=64, L=128, vocab=21128, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(104, vocab, (B, L), generator=g)
    lengths = torch.randint(3, L + 1, (B,), generator=g)
    mask = (torch.arange(L) < lengths[:, None]).long()
    ids[:, 0] = 101
    ids[torch.arange(B), lengths - 1] = 102
    ids[100 * (mask == 0) > 0] = 0
    ids[:, 5] = 100  # an [UNK] in every row
    return ids, mask


def test_mlm_mask_follows_80_10_10_and_never_touches_specials_or_pads():
    ids, mask = _titles()
    masked, labels = mlm_mask(ids, mask, 21128, SPECIALS, generator=torch.Generator().manual_seed(0))
    chosen = labels != -100
    special = torch.isin(ids, torch.tensor(SPECIALS)) | (mask == 0)
    assert not chosen[special].any()
    assert torch.equal(masked[special], ids[special])
    assert torch.equal(masked[~chosen], ids[~chosen])
    assert torch.equal(labels[chosen], ids[chosen])
    rate = chosen.sum() / (~special).sum()
    assert 0.13 < rate < 0.17
    n = chosen.sum()
    to_mask = (masked[chosen] == 103).sum() / n
    kept = (masked[chosen] == ids[chosen]).sum() / n
    randomised = 1 - to_mask - kept
    assert 0.76 < to_mask < 0.84 and 0.07 < kept < 0.13 and 0.07 < randomised < 0.13
    replaced = masked[chosen & (masked != 103) & (masked != ids)]
    assert not torch.isin(replaced, torch.tensor(SPECIALS)).any()


def test_mlm_mask_is_deterministic_given_a_generator():
    ids, mask = _titles(B=8, L=32)
    first = mlm_mask(ids, mask, 21128, SPECIALS, generator=torch.Generator().manual_seed(7))
    again = mlm_mask(ids, mask, 21128, SPECIALS, generator=torch.Generator().manual_seed(7))
    other = mlm_mask(ids, mask, 21128, SPECIALS, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[1], other[1])


def test_mlm_loss_averages_over_masked_tokens_and_is_zero_when_none_are_masked():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 11, generator=g, requires_grad=True)
    labels = torch.full((2, 4), -100)
    labels[0, 1], labels[1, 3] = 3, 7
    expected = -(torch.log_softmax(logits[0, 1], 0)[3] + torch.log_softmax(logits[1, 3], 0)[7]) / 2
    torch.testing.assert_close(mlm_loss(logits, labels), expected)
    none = mlm_loss(logits, torch.full((2, 4), -100))
    none.backward()
    assert none.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_mixture_distillation_is_zero_for_branches_equal_to_the_mixture_and_matches_a_hand_value():
    g = torch.Generator().manual_seed(6)
    mixture = torch.randn(4, 10, generator=g)
    assert mixture_distillation(mixture.expand(3, 4, 10), mixture, temperature=2.0).abs().item() < 1e-6
    # p_e = [.5, .5], p_m = [.75, .25]: KL = .5 ln(.5/.75) + .5 ln(.5/.25) = .5 ln(4/3); two equal branches
    branch = torch.tensor([[[math.log(3.0), 0.0]]]).expand(2, 1, 2)
    value = mixture_distillation(branch, torch.zeros(1, 2), temperature=1.0)
    assert value.item() == pytest.approx(2 * 0.5 * math.log(4 / 3), rel=1e-5)
    # temperature flattens both distributions
    assert mixture_distillation(branch * 2, torch.zeros(1, 2), temperature=2.0).item() == pytest.approx(
        value.item(), rel=1e-5
    )


def test_weighted_scales_the_raw_terms_and_drops_the_unweighted_ones():
    def raw(model, batch):
        return {"a": torch.tensor(2.0), "b": torch.tensor(3.0), "c": torch.tensor(5.0)}

    terms = weighted(raw, objective_weights({"a": 0.5, "b": 0, "c": 2}, ("a", "b", "c")))(None, {})
    assert list(terms) == ["a", "c"] and terms["a"].item() == 1.0 and terms["c"].item() == 10.0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1", True, None])
def test_objective_weights_refuse_negative_non_finite_and_non_numbers(bad):
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        objective_weights({"mse": bad}, ("mse",))


def test_tag_loss_fn_names_the_valid_losses():
    assert tag_loss_fn("asl") is asl_loss
    with pytest.raises(ValueError, match="bce, asl, asl_seed"):
        tag_loss_fn("focal")


def test_weighted_keeps_an_objective_that_runs_its_own_backward_and_scales_its_gradients():
    w = torch.tensor(2.0, requires_grad=True)

    def own_backward(model, batch, backward):
        loss = 3.0 * w
        backward(loss)
        return {"contrastive": loss.detach()}

    own_backward.backward_inside = True
    wrapped = weighted(own_backward, {"contrastive": 0.5})
    assert wrapped.backward_inside
    terms = wrapped(None, {}, backward=lambda loss: loss.backward())
    assert terms["contrastive"].item() == 3.0 and w.grad.item() == 1.5  # 0.5 · d(3w)/dw
    with pytest.raises(ValueError, match="one weighted term"):
        weighted(own_backward, {"contrastive": 1.0, "other": 1.0})
