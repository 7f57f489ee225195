"""Activation checkpointing for every model: `create_model(name, activation_checkpointing=True)`.

A checkpointed transformer layer keeps only its input during the forward pass and recomputes its
activations in the backward pass (`torch.utils.checkpoint`, `use_reentrant=False`, RNG state
preserved so dropout draws the same masks): the same gradients for less memory and about one more
forward pass of compute.

- Hugging Face towers (`BertModel`, `RoFormerModel`, `CLIPVisionModel`, ...): their own switch
  (`activation_checkpointing_enable`, formerly `gradient_checkpointing_enable`); a bare HF stack
  used without its `PreTrainedModel` (e.g. a `BertEncoder` as a fusion stack) gets the same flag on
  each of its layers.
- The project's own blocks (`nn.TransformerEncoderLayer`, e.g. avfusion's MAE decoder): their forward
  is wrapped in `torch.utils.checkpoint.checkpoint` while training with gradients on.
"""

from __future__ import annotations

import functools

from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["OWN_BLOCKS", "enable_activation_checkpointing"]

OWN_BLOCKS: tuple[type[nn.Module], ...] = (nn.TransformerEncoderLayer,)
_CHECKPOINT = functools.partial(checkpoint, use_reentrant=False)


def enable_activation_checkpointing(model: nn.Module) -> int:
    """Checkpoint every transformer layer of `model` (in place); returns how many layers.

    Raises:
        ValueError: `model` has no transformer layer to checkpoint.
    """
    from transformers import PreTrainedModel

    for m in model.modules():
        if isinstance(m, PreTrainedModel) and getattr(m, "supports_gradient_checkpointing", False):
            enable = getattr(m, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = 0
    for m in model.modules():
        if isinstance(m, OWN_BLOCKS):
            _wrap(m)
            layers += 1
        elif hasattr(m, "gradient_checkpointing") and not isinstance(m, PreTrainedModel):
            if not m.gradient_checkpointing:  # a bare HF stack's layer
                m.gradient_checkpointing, m._gradient_checkpointing_func = True, _CHECKPOINT
            layers += 1
    if not layers:
        raise ValueError(f"{type(model).__name__} has no transformer layer to checkpoint")
    return layers


def _wrap(block: nn.Module) -> None:
    """Run `block.forward` under `checkpoint` when training with gradients (once per block)."""
    if getattr(block, "_activation_checkpointed", False):
        return
    forward = block.forward

    @functools.wraps(forward)
    def checkpointed(*args, **kwargs):
        import torch

        if block.training and torch.is_grad_enabled():
            return _CHECKPOINT(forward, *args, **kwargs)
        return forward(*args, **kwargs)

    block.forward = checkpointed
    block._activation_checkpointed = True
