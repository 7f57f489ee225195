"""CLIP dual encoder for Chinese text ↔ image/video retrieval: Chinese-CLIP (seed 002; SPEC §3.9, §9.2).

    image  = visual_projection(ViT(pixels).pooler_output)   post-LN [CLS], no bias     (B·T, E)
    clip   = normalise(mean over real frames of normalise(image))                     (B, E)
    text   = text_projection(BERT(text_ids).last_hidden_state[:, 0])  [CLS], no bias  (B, E)
    logits = exp(logit_scale) · clip textᵀ,  logit_scale = ln(1/0.07) at init, clamped to [0, ln 100]

The vision tower is Hugging Face `CLIPVisionModel` (ViT), the text tower `BertModel` (Chinese
RoBERTa-wwm-ext is a BERT checkpoint), both built from a config or loaded from local folders:
`clip_model_dir` (a whole Hugging Face `ChineseCLIPModel`, e.g. chinese-clip-vit-base-patch16:
both towers, both projections and the logit scale), or `vision_model_dir` (a CLIP / Chinese-CLIP
vision or full model) and `text_model_dir` (a BERT model) for the towers alone. Hugging Face's
`ChineseCLIPModel` never clamps its logit scale; `clamp_logit_scale()` is for the training loop
to call after every optimiser step, as Chinese-CLIP does.

A clip of T frames (`frames` (B, T, 3, H, W) with `frame_mask`) is encoded frame by frame and its
L2-normalised frame embeddings are averaged over the real frames, then normalised again (CLIP4Clip's
mean pooling, Luo et al. 2022); a still image is T = 1, and padded frames are never encoded.

`param_groups` gives AdamW its two groups: no weight decay on gains and biases (LayerNorm weights,
every bias) and the logit scale, as Chinese-CLIP's `main.py` excludes `bn`/`ln`/`bias`/`logit_scale`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig, BertModel, CLIPVisionConfig, CLIPVisionModel

from vmmlib.models._registry import register_model
from vmmlib.models.text import BERT_CHINESE_VOCAB_SIZE, FULL_TEXT_SIZES, text_backbone_for

LOGIT_SCALE_INIT = math.log(1 / 0.07)  # 2.6593
LOGIT_SCALE_MAX = math.log(100)  # 4.6052
_VISION_CONFIG_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_channels",
    "image_size",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
    "attention_dropout",
)


@dataclass
class ClipDualConfig:
    embed_dim: int = 512  # joint embedding width (both projections)
    image_size: int = 224  # input side; the transforms squash/crop to it
    patch_size: int = 16  # ViT patch side (B/16)
    vision_layers: int = 12  # ViT depth when built from a config
    vision_hidden: int = 768  # ViT width when built from a config
    vision_heads: int = 12  # ViT heads when built from a config
    vision_intermediate: int = 3072  # ViT MLP width when built from a config
    vocab_size: int | None = (
        None  # None: 21128 (Chinese BERT) built from a config, the folder's own when loaded
    )
    text_layers: int = FULL_TEXT_SIZES["num_hidden_layers"]  # BERT depth when built from a config
    text_hidden: int = FULL_TEXT_SIZES["hidden_size"]  # BERT width when built from a config
    text_heads: int = FULL_TEXT_SIZES["num_attention_heads"]  # BERT heads when built from a config
    text_intermediate: int = FULL_TEXT_SIZES["intermediate_size"]  # BERT FFN width when built from a config
    clip_model_dir: str | None = None  # local HF ChineseCLIPModel folder: everything loaded from it
    vision_model_dir: str | None = None  # local HF CLIP / Chinese-CLIP folder: the vision tower only
    text_model_dir: str | None = (
        None  # local HF BERT folder (e.g. chinese-roberta-wwm-ext): the text tower only
    )
    freeze_vision: bool = False  # no gradients into the vision tower and its projection (--freeze-vision)
    logit_scale_init: float = LOGIT_SCALE_INIT  # ln(1/0.07)
    logit_scale_max: float = LOGIT_SCALE_MAX  # the clamp's upper bound, ln 100


def _model_type(folder: str | Path) -> str:
    config = Path(folder) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(
            f"{config} not found: model_options clip_model_dir / vision_model_dir must be a local Hugging Face "
            "CLIP or Chinese-CLIP folder"
        )
    return json.loads(config.read_text()).get("model_type", "")


def _clip_vision_from(vision_config) -> CLIPVisionModel:
    settings = {k: getattr(vision_config, k) for k in _VISION_CONFIG_KEYS if hasattr(vision_config, k)}
    return CLIPVisionModel(CLIPVisionConfig(**settings))


def load_vision_tower(folder: str | Path) -> CLIPVisionModel:
    """A ViT `CLIPVisionModel` with the weights of a local CLIP or Chinese-CLIP folder (whole or vision-only)."""
    from transformers import ChineseCLIPModel, ChineseCLIPVisionModel, CLIPModel

    kind = _model_type(folder)
    kwargs = {"local_files_only": True, "dtype": torch.float32}
    if kind == "clip_vision_model":
        return CLIPVisionModel.from_pretrained(folder, **kwargs).train()
    loaders = {
        "clip": CLIPModel,
        "chinese_clip": ChineseCLIPModel,
        "chinese_clip_vision_model": ChineseCLIPVisionModel,
    }
    if kind not in loaders:
        raise ValueError(
            f"{folder} holds a {kind!r} model; expected one of clip, clip_vision_model, {', '.join(loaders)}"
        )
    source = loaders[kind].from_pretrained(folder, **kwargs)
    vision = source if kind == "chinese_clip_vision_model" else source.vision_model
    tower = _clip_vision_from(vision.config)
    tower.load_state_dict(vision.state_dict())
    return tower


class ClipDual(nn.Module):
    """CLIP dual encoder: `forward` returns normalised `image_features`, `text_features` and `logit_scale`."""

    def __init__(self, cfg: ClipDualConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.clip_model_dir:
            self._load_clip(cfg.clip_model_dir)
        else:
            self._build_towers(cfg)
        if cfg.freeze_vision:
            for p in [*self.visual.parameters(), *self.visual_projection.parameters()]:
                p.requires_grad_(False)

    def _build_towers(self, cfg: ClipDualConfig) -> None:
        if cfg.vision_model_dir:
            self.visual = load_vision_tower(cfg.vision_model_dir)
        else:
            vision = CLIPVisionConfig(
                hidden_size=cfg.vision_hidden,
                intermediate_size=cfg.vision_intermediate,
                num_hidden_layers=cfg.vision_layers,
                num_attention_heads=cfg.vision_heads,
                image_size=cfg.image_size,
                patch_size=cfg.patch_size,
            )
            self.visual = CLIPVisionModel(vision)
        self.text = text_backbone_for(cfg)
        self.visual_projection = nn.Linear(self.visual.config.hidden_size, cfg.embed_dim, bias=False)
        self.text_projection = nn.Linear(self.text.config.hidden_size, cfg.embed_dim, bias=False)
        nn.init.normal_(self.visual_projection.weight, std=self.visual.config.hidden_size**-0.5)
        nn.init.normal_(self.text_projection.weight, std=self.text.config.hidden_size**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(float(cfg.logit_scale_init)))

    def _load_clip(self, folder: str | Path) -> None:
        from transformers import ChineseCLIPModel

        if _model_type(folder) != "chinese_clip":
            raise ValueError(
                f"clip_model_dir {folder} must hold a Hugging Face ChineseCLIPModel (model_type chinese_clip)"
            )
        source = ChineseCLIPModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
        self.visual = _clip_vision_from(source.vision_model.config)
        self.visual.load_state_dict(source.vision_model.state_dict())
        text_config = BertConfig(**source.text_model.config.to_dict())
        self.text = BertModel(text_config, add_pooling_layer=False)
        self.text.load_state_dict(source.text_model.state_dict())
        self.visual_projection, self.text_projection = source.visual_projection, source.text_projection
        self.logit_scale = nn.Parameter(source.logit_scale.detach().clone())
        if self.cfg.vocab_size is not None and self.cfg.vocab_size != text_config.vocab_size:
            raise ValueError(f"vocab_size={self.cfg.vocab_size} but {folder} has {text_config.vocab_size}")

    @property
    def vocab_size(self) -> int:
        return self.text.config.vocab_size

    def encode_image(self, frames: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """frames (B, 3, H, W) or a clip batch (B, T, 3, H, W) with frame_mask (B, T) → (B, E) L2-normalised."""
        if frames.dim() == 4:
            frames = frames.unsqueeze(1)  # (B, 3, H, W) -> (B, 1, 3, H, W)
        B, T = frames.shape[:2]
        mask = torch.ones(B, T, device=frames.device) if frame_mask is None else frame_mask.to(frames.device)
        real = mask.reshape(-1) > 0
        if not real.any():  # no real frame anywhere: zero features, which match nothing
            return frames.new_zeros(B, self.visual_projection.out_features)
        pooled = self.visual(
            pixel_values=frames.reshape(B * T, *frames.shape[2:])[real]
        ).pooler_output  # (R, Hv)
        per_frame = F.normalize(self.visual_projection(pooled), dim=-1)  # (R, E): real frames only
        out = per_frame.new_zeros(B * T, per_frame.shape[-1])
        out[real] = per_frame
        weights = mask.to(out.dtype).unsqueeze(-1)  # (B, T, 1)
        clip = (out.view(B, T, -1) * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # (B, E)
        return F.normalize(clip, dim=-1)

    def encode_text(self, text_ids: torch.Tensor, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """text_ids int64 (B, L), text_mask (B, L) (default: ids ≠ 0) → (B, E) L2-normalised."""
        mask = (text_ids != 0).long() if text_mask is None else text_mask
        hidden = self.text(input_ids=text_ids, attention_mask=mask).last_hidden_state  # (B, L, Ht)
        return F.normalize(self.text_projection(hidden[:, 0]), dim=-1)  # [CLS] -> (B, E)

    def forward(
        self,
        frames: torch.Tensor | None = None,
        frame_mask: torch.Tensor | None = None,
        text_ids: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        **_,
    ) -> dict[str, torch.Tensor]:
        """Encode whichever side is given (both for training; one to extract features).

        Returns:
            `image_features` (B, E) and/or `text_features` (B, E), L2-normalised, and
            `logit_scale`: the multiplier exp(log-scale), a scalar (as Chinese-CLIP's forward).
        """
        out = {"logit_scale": self.logit_scale.exp()}
        if frames is not None:
            out["image_features"] = self.encode_image(frames, frame_mask)
        if text_ids is not None:
            out["text_features"] = self.encode_text(text_ids, text_mask)
        return out

    @torch.no_grad()
    def clamp_logit_scale(self) -> None:
        """Clamp the log-scale to [0, ln 100]; call after every optimiser step (Chinese-CLIP does)."""
        self.logit_scale.clamp_(0.0, self.cfg.logit_scale_max)

    def after_optimizer_step(self) -> None:
        """`vmmlib.train.loop.fit` calls this after every optimiser step: the logit-scale clamp."""
        self.clamp_logit_scale()


_NO_DECAY_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: gains and biases (norm layers' parameters, every bias) and `logit_scale` get no
    weight decay; the rest get `weight_decay`. Frozen parameters are left out.

    Returns:
        [{"params": decayed, "weight_decay": weight_decay}, {"params": the others, "weight_decay": 0.0}].
    """
    no_decay: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if isinstance(module, _NO_DECAY_MODULES) or name == "bias" or name.endswith("logit_scale"):
                no_decay.add(id(p))
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]


# Tiny: seconds on CPU. ViT-B/32-shaped patches at 224 (49 tokens), 2 layers each side.
TINY = dict(
    embed_dim=64,
    patch_size=32,
    vision_layers=2,
    vision_hidden=64,
    vision_heads=2,
    vision_intermediate=128,
    text_layers=2,
    text_hidden=64,
    text_heads=2,
    text_intermediate=128,
)
VOCAB_SIZE = BERT_CHINESE_VOCAB_SIZE


@register_model
def cnclip_vitb16(**overrides) -> ClipDual:
    """Chinese-CLIP ViT-B/16 + RoBERTa-wwm-ext-base sizes (embed 512), as Online-CNCLIP trains."""
    return ClipDual(ClipDualConfig(**overrides))


@register_model
def cnclip_vitb16_tiny(**overrides) -> ClipDual:
    return ClipDual(ClipDualConfig(**{**TINY, **overrides}))
