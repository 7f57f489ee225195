"""Activation checkpointing (`create_model(..., activation_checkpointing=True)`): the gradients of the
unchecked model, and fewer bytes kept for the backward pass."""

import pytest
import torch
from torch import nn

from vmmlib.models import create_model
from vmmlib.models.checkpointing import enable_activation_checkpointing


def _saved_bytes_and_grads(model, run):
    """Run forward + backward; the bytes autograd kept for the backward pass, and the gradients."""
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    model.train().zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks for both models
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = run(model)
    loss.backward()
    return sum(saved), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _uniter(model):
    g = torch.Generator().manual_seed(0)
    out = model(
        frames=torch.randn(2, 5, 64, generator=g), frame_mask=torch.ones(2, 5, dtype=torch.long),
        text_ids=torch.randint(1, 90, (2, 7), generator=g), text_mask=torch.ones(2, 7, dtype=torch.long),
    )  # fmt: skip
    return out["embedding"].square().mean() + out["tag_logits"].square().mean()


def _encoder(model):
    return model(torch.randn(3, 10, 32, generator=torch.Generator().manual_seed(0))).square().mean()


def _hf_tower():
    torch.manual_seed(0)
    return create_model("uniter_qq_tiny", feature_dim=64, vocab_size=100, num_tags=10)


def _own_blocks():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, batch_first=True)
    return nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)


@pytest.mark.parametrize(("build", "run"), [(_hf_tower, _uniter), (_own_blocks, _encoder)], ids=["hf", "own"])
def test_checkpointed_layers_give_the_same_gradients_and_keep_fewer_activations(build, run):
    plain_bytes, plain = _saved_bytes_and_grads(build(), run)
    model = build()
    assert enable_activation_checkpointing(model) >= 2
    ckpt_bytes, ckpt = _saved_bytes_and_grads(model, run)
    assert plain.keys() == ckpt.keys()
    for k in plain:
        torch.testing.assert_close(ckpt[k], plain[k], rtol=1e-5, atol=1e-7, msg=k)
    assert ckpt_bytes < 0.6 * plain_bytes, (ckpt_bytes, plain_bytes)


def test_activation_checkpointing_is_an_option_of_every_model():
    model = create_model("uniter_qq_tiny", activation_checkpointing=True)
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    with pytest.raises(ValueError, match="no transformer layer"):
        create_model("netvlad_yt8m_tiny", activation_checkpointing=True)
