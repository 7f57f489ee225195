"""Contrastive loss: analytic forms, accumulation with cached features = one big batch, and the gather
semantics across two gloo processes (loss and gradients vs one process on the global batch)."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vmmlib.objectives.contrastive import (
    accumulate_contrastive,
    clip_loss,
    gather_features,
    in_batch_accuracy,
    world,
)


class PairEncoder(nn.Module):
    """A small two-tower model with the ClipDual output contract (no dropout: deterministic)."""

    def __init__(self, dim_in=12, dim=8):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(dim_in, 16), nn.Tanh(), nn.Linear(16, dim))
        self.text = nn.Sequential(nn.Linear(dim_in, 16), nn.Tanh(), nn.Linear(16, dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, x_image, x_text, **_):
        return {
            "image_features": F.normalize(self.image(x_image), dim=-1),
            "text_features": F.normalize(self.text(x_text), dim=-1),
            "logit_scale": self.logit_scale.exp(),
        }


def _data(n=128, dim_in=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim_in, generator=g)
    return x, x + 0.3 * torch.randn(n, dim_in, generator=g)


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_clip_loss_is_the_averaged_symmetric_cross_entropy():
    torch.manual_seed(0)
    img, txt = F.normalize(torch.randn(6, 4), dim=-1), F.normalize(torch.randn(6, 4), dim=-1)
    scale = torch.tensor(1 / 0.07)
    logits = scale * img @ txt.t()
    expected = (F.cross_entropy(logits, torch.arange(6)) + F.cross_entropy(logits.t(), torch.arange(6))) / 2
    torch.testing.assert_close(clip_loss(img, txt, scale), expected)
    # identical pairs far apart from the rest: the loss goes to 0 as the scale grows
    eye = torch.eye(6)
    assert clip_loss(eye, eye, torch.tensor(100.0)) < 1e-30 + 1e-3
    assert world() == (0, 1) and gather_features(img, txt)[2] == 0


def test_prior_reweighted_loss_is_online_cnclips_form_and_near_summed_ce_for_large_tau():
    torch.manual_seed(1)
    img, txt = F.normalize(torch.randn(5, 4), dim=-1), F.normalize(torch.randn(5, 4), dim=-1)
    scale = torch.tensor(20.0)
    S = scale * img @ txt.t()
    by_hand = 0.0
    for M in (S, S.t()):
        weighted = M * torch.softmax(M / 1000, dim=0) * 5
        by_hand = by_hand - torch.diagonal(torch.log_softmax(weighted, -1)).mean()
    torch.testing.assert_close(clip_loss(img, txt, scale, prior_tau=1000), by_hand)
    summed = F.cross_entropy(S, torch.arange(5)) + F.cross_entropy(S.t(), torch.arange(5))
    torch.testing.assert_close(clip_loss(img, txt, scale, prior_tau=1e9), summed, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(clip_loss(img, txt, scale, prior_tau=1.0), summed, atol=1e-3)


def test_accumulating_8_chunks_of_16_gives_the_loss_and_gradients_of_one_batch_of_128():
    torch.manual_seed(0)
    model = PairEncoder()
    x_image, x_text = _data()
    out = model(x_image, x_text)
    big = clip_loss(out["image_features"], out["text_features"], out["logit_scale"])
    big.backward()
    expected = _grads(model)
    model.zero_grad()
    chunks = [{"x_image": x_image[i : i + 16], "x_text": x_text[i : i + 16]} for i in range(0, 128, 16)]
    result = accumulate_contrastive(model, chunks)
    torch.testing.assert_close(result["contrastive"], big.detach())
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, expected[name], atol=1e-6, rtol=1e-4, msg=name)
    # counting the logit scale's gradient in every pass (open_clip's accumulation) would be 8x
    assert expected["logit_scale"].abs() > 1e-4
    assert 0.0 <= float(result["i2t_in_batch_acc"]) <= 1.0


def test_accumulation_replays_dropout_so_a_stochastic_model_matches_too():
    torch.manual_seed(0)
    model = PairEncoder()
    model.image.insert(1, nn.Dropout(0.3))
    x_image, x_text = _data(32)
    chunks = [{"x_image": x_image[i : i + 8], "x_text": x_text[i : i + 8]} for i in range(0, 32, 8)]
    torch.manual_seed(5)
    accumulate_contrastive(model, chunks)
    first = _grads(model)
    model.zero_grad()
    torch.manual_seed(5)
    accumulate_contrastive(model, chunks)
    for name, grad in _grads(model).items():
        torch.testing.assert_close(grad, first[name], msg=name)


def test_in_batch_accuracy_counts_argmax_hits_in_both_directions():
    img = torch.eye(3)
    txt = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 0, 1.0]])
    acc = in_batch_accuracy(img, txt)
    # image 1 scores 0 everywhere (argmax: text 0); image 2 ties texts 1 and 2 (the first wins)
    assert acc["i2t_in_batch_acc"] == pytest.approx(1 / 3)
    assert acc["t2i_in_batch_acc"] == pytest.approx(2 / 3)  # texts 1 and 2 both pick image 2


def _worker(rank, world_size, init_file, out_dir):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    x_image, x_text = _data(16)
    local = slice(rank * 8, (rank + 1) * 8)
    for with_grad in (True, False):
        torch.manual_seed(0)
        model = PairEncoder()
        out = model(x_image[local], x_text[local])
        loss = clip_loss(
            out["image_features"], out["text_features"], out["logit_scale"], gather_with_grad=with_grad
        )
        loss.backward()
        for p in model.parameters():  # DDP's gradient averaging
            torch.distributed.all_reduce(p.grad)
            p.grad /= world_size
        torch.save((loss.detach(), _grads(model)), out_dir / f"{rank}-{with_grad}.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_match_one_process_on_the_global_batch(tmp_path):
    """gather_with_grad: loss and gradients equal one process's on the 16-pair global batch; without
    it the encoders get 1/W of them (only local rows carry gradients), the logit scale all of it."""
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    model = PairEncoder()
    x_image, x_text = _data(16)
    out = model(x_image, x_text)
    single = clip_loss(out["image_features"], out["text_features"], out["logit_scale"])
    single.backward()
    expected = _grads(model)

    mp.spawn(_worker, args=(2, tmp_path / "init", tmp_path), nprocs=2, join=True)
    for rank in (0, 1):
        for with_grad in (True, False):
            loss, grads = torch.load(tmp_path / f"{rank}-{with_grad}.pt")
            torch.testing.assert_close(loss, single.detach())
            for name, grad in grads.items():
                factor = 1.0 if with_grad or name == "logit_scale" else 0.5
                torch.testing.assert_close(grad, factor * expected[name], atol=1e-6, rtol=1e-4, msg=name)
