"""Single-label class terms (WBDC's 200 categories, avfusion's QA answers), raw and unweighted.

- `class_ce`: cross-entropy over the classes in float32 (label −100: ignored), optional smoothing.
- `distill_kl`: KL from a teacher's saved class probabilities, softened at T, times T² (Hinton et al.,
  "Distilling the Knowledge in a Neural Network", 2015).
- `Teacher`: a teacher's probabilities looked up by video id (a missing id raises KeyError).
- `class_terms`: `ce` and `distill` of one forward pass of a classifier (`out["logits"]`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

CLASSIFIER_INPUTS = ("frames", "frame_mask", "text_ids", "text_mask")


def class_ce(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of (B, C) logits against (B,) class ids; id −100 is ignored."""
    return F.cross_entropy(logits.float(), labels, ignore_index=-100, label_smoothing=label_smoothing)


def distill_kl(logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher^(1/T) renormalised ‖ softmax(logits / T)) · T², mean over the batch.

    Args:
        logits: (B, C) student logits.
        teacher_probs: (B, C) teacher class probabilities (softened here as logits log p).
    """
    target = F.softmax(teacher_probs.clamp_min(1e-8).log() / temperature, dim=-1)
    student = F.log_softmax(logits.float() / temperature, dim=-1)
    return F.kl_div(student, target, reduction="batchmean") * temperature**2


class Teacher:
    """A teacher's class probabilities by id: `teacher(ids, device)` -> float32 (B, C).

    Args:
        ids: (N,) the ids of the rows (compared as strings).
        probs: (N, C) their class probabilities.
        source: what to name in errors (the teacher file).
    """

    def __init__(self, ids: Sequence, probs: np.ndarray, source: str = "the teacher") -> None:
        self.rows = {str(v): i for i, v in enumerate(ids)}
        self.probs = torch.as_tensor(probs, dtype=torch.float32)
        self.source = source

    def __call__(self, ids: Sequence[str], device=None) -> torch.Tensor:
        missing = [v for v in ids if v not in self.rows]
        if missing:
            raise KeyError(
                f"{self.source} holds no probabilities for video {missing[0]} ({len(missing)} in this batch)"
            )
        return self.probs[[self.rows[v] for v in ids]].to(device)


def class_terms(
    model,
    batch: dict,
    *,
    terms: Iterable[str],
    label_smoothing: float = 0.0,
    teacher: Teacher | None = None,
    temperature: float = 2.0,
    inputs: Sequence[str] = CLASSIFIER_INPUTS,
) -> dict[str, torch.Tensor]:
    """`ce` (`class_ce` against `batch["labels"]`) and `distill` (`distill_kl` against the teacher's
    probabilities of `batch["id"]`) of one forward pass on the batch's `inputs`."""
    out = model(**{k: batch[k] for k in inputs})
    raw = {}
    if "ce" in terms:
        raw["ce"] = class_ce(out["logits"], batch["labels"], label_smoothing)
    if "distill" in terms:
        raw["distill"] = distill_kl(out["logits"], teacher(batch["id"], out["logits"].device), temperature)
    return raw
