"""Symmetric image–text contrastive (CLIP) loss across processes, and accumulation with cached features.

- `gather_features`: all ranks' features in rank order (SPEC §3.9, §9.2). Without `with_grad` the
  other ranks' rows are constants and only the local rows carry gradients (Chinese-CLIP's default;
  under DDP's gradient averaging the encoder gradients are then 1/W of the single-process ones,
  open_clip#616); with `with_grad` (an all_gather whose backward sums the gradients, Chinese-CLIP's
  `--gather-with-grad`) they equal the single-process gradients. One process: a no-op.
- `clip_loss`: CE(logits_per_image, targets) and CE(logits_per_text, targets), averaged, over the
  gathered batch, logits = scale · I Tᵀ (Radford et al., "Learning Transferable Visual Models From
  Natural Language Supervision", ICML 2021). `prior_tau` switches to Online-CNCLIP's
  prior-reweighted form: S' = S ⊙ softmax(S / τ, dim 0) · N, loss −mean diag log_softmax(S', −1),
  summed over both directions.
- `accumulate_contrastive`: gradient accumulation that keeps the contrastive batch whole (the
  GradCache idea, Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited
  Setup", RepL4NLP 2021): features of every chunk are computed without gradients first, then each
  chunk is recomputed with gradients against the cached rest and backpropagated. 8 chunks of 16 give
  the loss and gradients of one batch of 128: the RNG state of each chunk is replayed (same dropout),
  and the logit scale takes its gradient in one pass only (open_clip's accumulation counts it once
  per chunk).
- `in_batch_accuracy`: the in-batch top-1 accuracy Chinese-CLIP logs as "validation" (named so:
  it is not recall over the gallery; Chinese-CLIP#28).
- `clip_terms`: MUGE's objective term on a dual encoder's batch, accumulated over `batch_chunks` when asked.

Losses compute in float32 whatever the autocast dtype of their inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F


def world() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, or (0, 1) when it is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_equal_sizes(x: torch.Tensor, world_size: int) -> None:
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world_size)]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(
            f"every process must contribute the same batch size to the gathered loss, got {[int(s) for s in sizes]} "
            "(drop the last incomplete batch)"
        )


class _AllGatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every process's gradient for the local rows (all_reduce, then
    this process's slice): the semantics of `torch.distributed.nn.functional.all_gather`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        rank, world_size = world()
        ctx.rows = slice(rank * x.shape[0], (rank + 1) * x.shape[0])
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)  # (W·B, D)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # every process's loss depends on these rows
        return grad[ctx.rows]


def gather_features(
    image_features: torch.Tensor, text_features: torch.Tensor, *, with_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Gather (B, D) features of every process into (W·B, D), in rank order.

    Returns:
        all image features, all text features, and the row offset of this process's batch
        (rank · B), so the targets of the local rows are `offset + arange(B)`.
    """
    rank, world_size = world()
    if world_size == 1:
        return image_features, text_features, 0
    _check_equal_sizes(image_features, world_size)
    if with_grad:
        return (
            _AllGatherWithGrad.apply(image_features),
            _AllGatherWithGrad.apply(text_features),
            rank * len(image_features),
        )
    out = []
    for local in (image_features, text_features):
        parts = [torch.empty_like(local) for _ in range(world_size)]
        dist.all_gather(parts, local.detach().contiguous())
        parts[rank] = local  # the local rows keep their autograd history
        out.append(torch.cat(parts))
    return out[0], out[1], rank * len(image_features)


def _prior_reweighted(logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Online-CNCLIP: −mean diag log_softmax(S ⊙ softmax(S/τ, 0) · N, −1) for an (N, N) logit matrix."""
    n = logits.shape[0]
    reweighted = logits * F.softmax(logits / tau, dim=0) * n
    return -torch.diagonal(F.log_softmax(reweighted, dim=-1)).mean()


def contrastive_logits(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    gather: bool = True,
    gather_with_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits over the gathered batch and the targets of their rows.

    Returns:
        logits_per_image (N, N) float32 = scale · I Tᵀ and targets (N,) = arange(N), N = W·B
        (every process computes the whole global loss; gradients follow `gather_features`).
    """
    if gather:
        image_features, text_features, _ = gather_features(
            image_features, text_features, with_grad=gather_with_grad
        )
    logits = logit_scale.float() * image_features.float() @ text_features.float().t()  # (N, N)
    return logits, torch.arange(logits.shape[0], device=logits.device)


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    *,
    gather: bool = True,
    gather_with_grad: bool = False,
    prior_tau: float | None = None,
) -> torch.Tensor:
    """Symmetric contrastive loss of matching rows (row i of each is one image–text pair).

    Args:
        image_features, text_features: (B, D) L2-normalised features of this process.
        logit_scale: scalar multiplier (exp of the learnable log-scale), e.g. `out["logit_scale"]`.
        gather: gather every process's features (no-op in one process).
        gather_with_grad: gradients through the other processes' rows too.
        prior_tau: None for CLIP's loss (directions averaged); a temperature (Online-CNCLIP: 1000)
            for the prior-reweighted loss (directions summed).

    Returns:
        scalar float32 loss.
    """
    logits, targets = contrastive_logits(
        image_features, text_features, logit_scale, gather=gather, gather_with_grad=gather_with_grad
    )
    if prior_tau is not None:
        return _prior_reweighted(logits, prior_tau) + _prior_reweighted(logits.t(), prior_tau)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)) / 2


def in_batch_accuracy(image_features: torch.Tensor, text_features: torch.Tensor) -> dict[str, float]:
    """Top-1 accuracy of matching rows within one batch (ties: the first index wins, as argmax).

    Returns:
        {"i2t_in_batch_acc", "t2i_in_batch_acc"} as fractions.
    """
    sim = image_features.float() @ text_features.float().t()  # (B, B)
    targets = torch.arange(sim.shape[0], device=sim.device)
    return {
        "i2t_in_batch_acc": (sim.argmax(1) == targets).float().mean().item(),
        "t2i_in_batch_acc": (sim.argmax(0) == targets).float().mean().item(),
    }


def _rng_state() -> tuple:
    cuda = (
        torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    )
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def accumulate_contrastive(
    model: Callable[..., dict],
    chunks: Sequence[dict],
    *,
    gather: bool = True,
    gather_with_grad: bool = False,
    prior_tau: float | None = None,
    backward: Callable[[torch.Tensor], None] | None = None,
    no_sync: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> dict[str, torch.Tensor]:
    """Backpropagate the contrastive loss of the union of `chunks` as one batch, one chunk in memory at a time.

    Args:
        model: called as `model(**chunk)`, returning `image_features` (b, D), `text_features` (b, D)
            and `logit_scale` (as `ClipDual` does).
        chunks: the micro-batches; their union is the contrastive batch.
        gather, gather_with_grad, prior_tau: as in `clip_loss`.
        backward: how to backpropagate a loss (default `loss.backward()`; e.g. `accelerator.backward`).
        no_sync: a context-manager factory used for every pass but the last (e.g. DDP's
            `model.no_sync`), so gradients are all-reduced once.

    Returns:
        {"contrastive": the loss (detached), "i2t_in_batch_acc", "t2i_in_batch_acc" (tensors)}.
        Gradients are accumulated into the parameters; the caller steps the optimiser.
    """
    backward = backward or (lambda loss: loss.backward())
    states, images, texts = [], [], []
    with torch.no_grad():
        for chunk in chunks:
            states.append(_rng_state())
            out = model(**chunk)
            images.append(out["image_features"])
            texts.append(out["text_features"])
    loss_value = None
    for j, chunk in enumerate(chunks):
        _set_rng_state(states[j])
        context = no_sync() if no_sync is not None and j < len(chunks) - 1 else contextlib.nullcontext()
        with context:
            out = model(**chunk)
            all_images = torch.cat(images[:j] + [out["image_features"]] + images[j + 1 :])
            all_texts = torch.cat(texts[:j] + [out["text_features"]] + texts[j + 1 :])
            scale = out["logit_scale"] if j == 0 else out["logit_scale"].detach()  # its gradient once
            loss = clip_loss(
                all_images,
                all_texts,
                scale,
                gather=gather,
                gather_with_grad=gather_with_grad,
                prior_tau=prior_tau,
            )
            backward(loss)
        loss_value = loss.detach() if loss_value is None else loss_value
    acc = in_batch_accuracy(torch.cat(images), torch.cat(texts))
    return {"contrastive": loss_value, **{k: torch.tensor(v) for k, v in acc.items()}}


CLIP_INPUTS = ("frames", "frame_mask", "text_ids", "text_mask")  # what a dual encoder (`ClipDual`) takes


def batch_chunks(batch: dict, n: int, keys: Sequence[str] = CLIP_INPUTS) -> list[dict]:
    """`batch`'s `keys` cut into `n` equal chunks along the batch (ValueError if `n` does not divide it)."""
    size = len(batch[keys[0]])
    if size % n:
        raise ValueError(f"accumulate={n} must divide the batch size {size}")
    return [{k: batch[k][s : s + size // n] for k in keys} for s in range(0, size, size // n)]


def clip_terms(
    model,
    batch: dict,
    backward: Callable[[torch.Tensor], None] | None = None,
    *,
    accumulate: int = 1,
    gather: bool = True,
    gather_with_grad: bool = False,
    prior_tau: float | None = None,
) -> dict[str, torch.Tensor]:
    """{"contrastive": `clip_loss`} of a dual encoder's (image, text) pairs on one batch.

    With `accumulate` > 1 (or a `backward`), the batch is cut into `accumulate` chunks and
    `accumulate_contrastive` runs its own backward passes (the whole batch's loss and gradients, one
    chunk's activations in memory); called without `backward` it uses `loss.backward()` and returns a
    term whose own gradient is zero (for a caller that runs backward on it).
    """
    options = {"gather": gather, "gather_with_grad": gather_with_grad, "prior_tau": prior_tau}
    if accumulate == 1 and backward is None:
        out = model(**{k: batch[k] for k in CLIP_INPUTS})
        return {
            "contrastive": clip_loss(
                out["image_features"], out["text_features"], out["logit_scale"], **options
            )
        }
    no_sync = getattr(model, "no_sync", None)
    terms = accumulate_contrastive(
        model, batch_chunks(batch, int(accumulate)), backward=backward, no_sync=no_sync, **options
    )
    if backward is None:  # called through a wrapper that runs backward on the returned term
        return {"contrastive": terms["contrastive"] + 0.0 * getattr(model, "module", model).logit_scale}
    return {"contrastive": terms["contrastive"]}
