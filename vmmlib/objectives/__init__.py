"""Every loss and objective term, in one home. An objective is `(model, batch) -> {term: raw loss}`;
its raw, unweighted terms are weighted in one place (`compose.make_objective`) and `fit` logs each.

- `losses`: loss functions on tensors (multi-label BCE / ASL, MLM, InfoNCE, pair MSE / KL, mixture
  distillation), each a scalar.
- `contrastive`: the CLIP loss over every process's batch and its cached-feature accumulation (MUGE).
- `masking`: masks of masked modelling (tube, random patch, MLM corruption) and shuffled pairs.
- `compose`: `make_objective`, `weighted`, `objective_weights`: the weights applied to raw terms;
  `objective_of`: a task's objective as a terms function bound to its options.
- `tagging`, `classification`: the terms the tasks compose: multi-label tags with their branches,
  distillation and L2 (qqbrowser, yt8m); class cross-entropy and teacher distillation (wbdc, avfusion QA).
- `video_text`: WBDC rank-8 single-stream pretraining (MLM, MFM, frame–text matching, inverse cloze,
  mask-modality) and ActionCLIP-style video–text contrastive pretraining (SPEC §4.4, §3.10).
- `avfusion`: the text + audio + video fusion model's pretraining tasks (seed 004, SPEC §3.11, §9.3).
"""

from vmmlib.objectives.compose import make_objective, objective_of, objective_weights, weighted

__all__ = ["make_objective", "objective_of", "objective_weights", "weighted"]
