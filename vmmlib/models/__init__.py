"""Models: a timm-style registry and one module per model family.

    from vmmlib.models import create_model, list_models
    model = create_model("mixnextvlad_qq_tiny", num_tags=100)
    out = model(**batch)            # {"embedding": (B, 256), "tag_logits": (B, num_tags), ...}

Families: `qq_baseline` (QQ Browser TF baseline), `mixnextvlad_qq` (seed 000 MixNeXtVLAD),
`uniter` (seed 000 single-stream UNITER), `yt8m_vlad` (seed 003 NetVLAD / NeXtVLAD / MixNeXtVLAD),
`yt8m_bert` (seed 003 FrameBERT, BertCross), `wbdc_baseline` / `wbdc_single` / `wbdc_dual` (WBDC 2022
official baseline, rank-8 single and dual stream), `clip_dual` (Chinese-CLIP dual encoder, MUGE), `avfusion` (VideoMAE + audio MAE + DeBERTa-v2 fusion, seed 004). `model_options(name)` lists the overrides a model takes.
Shared blocks live in `layers`, text backbones in `text`.
"""

from vmmlib.models import (  # noqa: F401  (registers the families)
    avfusion,
    clip_dual,
    mixnextvlad_qq,
    qq_baseline,
    uniter,
    wbdc_baseline,
    wbdc_dual,
    wbdc_single,
    yt8m_bert,
    yt8m_vlad,
)
from vmmlib.models._registry import (
    UnknownModelError,
    create_model,
    is_model,
    list_models,
    model_module,
    model_options,
    register_model,
)
from vmmlib.models.text import build_text_backbone

__all__ = [
    "UnknownModelError",
    "build_text_backbone",
    "create_model",
    "is_model",
    "list_models",
    "model_module",
    "model_options",
    "register_model",
]
