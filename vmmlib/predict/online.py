"""Online learning at prediction time from a local image cache (Online-CNCLIP, seed 002; SPEC §1.3, §3.9).

Online-CNCLIP searches a shopping site for each query text, caches the first result as
`<cache>/<q>/1.jpg` (`<q>` = the query without white space and Chinese punctuation) and, before
scoring a batch of queries, takes one optimiser step of the contrastive loss on the (cached image,
query text) pairs. Nothing here reaches the network: only the cache folder is read.

The cache's layout and its reader (`cache_key`, `cache_path`, `load_cache`) are data: they live in
`vmmlib.data.muge.online_cache`, which the sample writer shares without importing the model.

- `online_adapt`: a copy of a model after `epochs` rounds over the queries, one AdamW step per batch
  of `batch_size` queries on their cached pairs (a batch with fewer than 2 usable pairs, which has no
  negative, is skipped), the log logit scale clamped to [0, ln 100] after every step. The model
  changes only through the cached images and the query texts: no gallery image and no ground truth
  is read. The caller then scores every query and gallery image with the adapted copy (one model
  for both sides; the seed scores each batch right after its step, with a model still changing).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vmmlib.data.muge.online_cache import CacheReport, cache_key, load_cache
from vmmlib.models.clip_dual import param_groups
from vmmlib.objectives.contrastive import clip_loss


def _batches(images: list, text_ids: torch.Tensor, text_mask: torch.Tensor, keys: list[str], size: int):
    """Per batch of `size` queries (file order): its usable pairs, one per distinct cache entry."""
    for start in range(0, len(images), size):
        rows, seen = [], set()
        for q in range(start, min(start + size, len(images))):
            if images[q] is not None and keys[q] not in seen:
                seen.add(keys[q])
                rows.append(q)
        if len(rows) >= 2:
            yield torch.stack([images[q] for q in rows]), text_ids[rows], text_mask[rows]


def online_adapt(
    model: torch.nn.Module,
    texts: Sequence[str],
    text_ids: torch.Tensor,
    text_mask: torch.Tensor,
    cache_dir: str | Path,
    transform: Callable,
    *,
    lr: float = 0.75e-5,
    epochs: int = 1,
    batch_size: int = 128,
    weight_decay: float = 0.001,
    prior_tau: float | None = None,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> tuple[torch.nn.Module, CacheReport]:
    """A copy of `model` adapted on the (cached image, query text) pairs; `model` is left untouched.

    Args:
        model: a CLIP dual encoder (`forward` gives `image_features`, `text_features`, `logit_scale`).
        texts: (Q,) query texts (their cache keys); text_ids, text_mask: (Q, L) their tokens.
        cache_dir: the cache folder (`<q>/1.jpg`).
        transform: PIL image → (3, H, W) tensor.
        lr: AdamW learning rate (the seed's test-time 0.75e-5); epochs: rounds over the queries
            (the seed's `max_epochs` on test, 1 on validation); batch_size: queries per step.
        weight_decay: AdamW decay (not on gains, biases, logit scale: `param_groups`).
        prior_tau: None: CLIP's loss; a temperature (the seed's 1000): its prior-reweighted loss.

    Returns:
        (the adapted copy in eval mode, the cache report).
    """
    if epochs < 0 or lr < 0 or batch_size < 2:
        raise ValueError(f"need epochs >= 0, lr >= 0, batch_size >= 2; got {epochs}, {lr}, {batch_size}")
    images, report = load_cache(cache_dir, texts, transform)
    adapted = copy.deepcopy(model)
    if device is not None:
        adapted.to(device)
    device = next(adapted.parameters()).device
    optimizer = torch.optim.AdamW(param_groups(adapted, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)
    keys = [cache_key(t) for t in texts]
    generator = torch.Generator().manual_seed(seed)
    torch_state = torch.get_rng_state()
    torch.manual_seed(int(torch.randint(0, 2**31 - 1, (), generator=generator)))  # dropout: reproducible
    adapted.train()
    try:
        with torch.enable_grad():
            for _ in range(epochs):
                for frames, ids, mask in _batches(images, text_ids, text_mask, keys, batch_size):
                    out = adapted(
                        frames=frames.unsqueeze(1).to(device),  # (B, 1, 3, H, W): stills
                        frame_mask=torch.ones(len(frames), 1, device=device),
                        text_ids=ids.to(device),
                        text_mask=mask.to(device),
                    )
                    loss = clip_loss(
                        out["image_features"], out["text_features"], out["logit_scale"], gather=False,
                        prior_tau=prior_tau,
                    )  # fmt: skip
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    adapted.after_optimizer_step()  # the logit-scale clamp, as in fit
    finally:
        torch.set_rng_state(torch_state)
    return adapted.eval(), report


@dataclass
class OnlineOptions:
    """The prediction options of online learning (`online_adapt`); no cache: off."""

    cache: str = ""
    lr: float = 0.75e-5
    epochs: int = 1
    batch_size: int = 128
    prior_tau: float | None = None

    def root(self, data_dir: str | Path, split: str) -> Path:
        """`<cache>/<split>`; a relative cache folder is relative to the data folder."""
        root = Path(self.cache)
        return (root if root.is_absolute() else Path(data_dir) / root) / split

    def adapt(self, model, texts: Sequence[str], text_ids, text_mask, root: Path, transform):
        """(`online_adapt`'s copy of `model`, int64 (3,) counts of the cache: used, missing, broken)."""
        import numpy as np

        adapted, report = online_adapt(model, texts, text_ids, text_mask, root, transform, lr=self.lr,
                                       epochs=self.epochs, batch_size=self.batch_size, prior_tau=self.prior_tau)  # fmt: skip
        return adapted, np.array([report.used, len(report.missing), len(report.broken)], np.int64)
