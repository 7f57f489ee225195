"""Video inputs of the WBDC families: a CLIP ViT tower for raw frames and the frame embeddings.

- `VisionTower`: Hugging Face `CLIPVisionModel`, built from a config (tiny by default, ViT-B/32 sizes
  with `FULL_VISION_SIZES`) or loaded from a local directory (e.g. openai/clip-vit-base-patch32
  saved with `save_pretrained`); every frame's `pooler_output` is its feature. Only the top
  `trainable_layers` encoder layers (and the final LayerNorm) train, as rank 8 fine-tunes CLIP ViT
  layers 9–11 end to end (SPEC §3.8); padded frames never go through the tower.
- `VideoEmbeddings`: what rank 8's separate `BertEmbeddings(inputs_embeds=...)` adds to projected
  frames: learned positions, one token-type vector, LayerNorm, dropout (without the unused word table).
- `VideoInputConfig`: the config fields every WBDC family shares for its frame input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

TINY_VISION_SIZES = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64)
FULL_VISION_SIZES = dict(
    num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072
)


@dataclass
class VideoInputConfig:
    """Frame-input fields shared by the WBDC model configs (mixed into each family's config)."""

    feature_dim: int = 768  # width of pre-extracted frame features (zip_feats: 768)
    vision_tower: bool = (
        False  # True: frames are pixels (B, T, 3, S, S) through a CLIP ViT trained end to end
    )
    vision_model_dir: str | None = None  # local HF CLIPVisionModel directory (sizes below ignored)
    vision_trainable_layers: int = 3  # top ViT layers that train (rank 8: layers 9, 10, 11 of 12)
    vision_layers: int = FULL_VISION_SIZES["num_hidden_layers"]  # ViT layers when built from a config
    vision_hidden: int = FULL_VISION_SIZES["hidden_size"]  # ViT width when built from a config
    vision_heads: int = FULL_VISION_SIZES["num_attention_heads"]  # ViT heads when built from a config
    vision_intermediate: int = FULL_VISION_SIZES[
        "intermediate_size"
    ]  # ViT FFN width when built from a config
    image_size: int = 224  # ViT input side (FrameTransform crop)
    patch_size: int = 32  # ViT patch side (B/32)


# the tiny variants' ViT (a `vision_tower: true` model trains in seconds on CPU)
TINY_VISION = dict(
    vision_layers=2, vision_hidden=32, vision_heads=2, vision_intermediate=64, vision_trainable_layers=1
)


def build_vision_tower(cfg) -> VisionTower | None:
    """The `VisionTower` a config asks for (None when frames are pre-extracted features)."""
    if not cfg.vision_tower:
        return None
    sizes = dict(
        num_hidden_layers=cfg.vision_layers,
        hidden_size=cfg.vision_hidden,
        num_attention_heads=cfg.vision_heads,
        intermediate_size=cfg.vision_intermediate,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
    )
    return VisionTower(cfg.vision_model_dir, cfg.vision_trainable_layers, **sizes)


class VisionTower(nn.Module):
    """CLIP ViT over the valid frames of a batch: pixels (B, T, 3, S, S) → features (B, T, D).

    Args:
        model_dir: local Hugging Face CLIPVisionModel (or full CLIP) directory; None builds from
            `config_overrides` (random init).
        trainable_layers: how many of the top encoder layers train; the embeddings, the
            pre-LayerNorm and the lower layers are frozen. The final LayerNorm trains whenever any
            layer does. -1: everything trains.
    """

    def __init__(self, model_dir: str | Path | None = None, trainable_layers: int = 3, **config_overrides):
        super().__init__()
        if model_dir is not None:
            config_file = Path(model_dir) / "config.json"
            if not config_file.is_file():
                raise FileNotFoundError(
                    f"{config_file} not found: vision_model_dir must be a local HF directory"
                )
            model_type = json.loads(config_file.read_text()).get("model_type")
            if model_type not in ("clip", "clip_vision_model", None):
                raise ValueError(f"{model_dir} holds a {model_type!r} model; expected a CLIP vision model")
            self.clip = CLIPVisionModel.from_pretrained(
                model_dir, local_files_only=True, dtype=torch.float32
            ).train()
        else:
            self.clip = CLIPVisionModel(CLIPVisionConfig(**config_overrides))
        self.dim = self.clip.config.hidden_size
        body = getattr(self.clip, "vision_model", self.clip)  # transformers < 5 nests the ViT one level down
        layers = body.encoder.layers
        if trainable_layers >= 0:
            if trainable_layers > len(layers):
                raise ValueError(f"trainable_layers={trainable_layers} but the ViT has {len(layers)} layers")
            self.clip.requires_grad_(False)
            for layer in layers[len(layers) - trainable_layers :]:
                layer.requires_grad_(True)
            body.post_layernorm.requires_grad_(trainable_layers > 0)

    def forward(self, pixels: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """pixels float (B, T, 3, S, S), frame_mask (B, T) → pooled features (B, T, D), 0 at pads."""
        B, T = pixels.shape[:2]
        valid = frame_mask.reshape(-1) > 0  # (B*T,)
        out = pixels.new_zeros(B * T, self.dim)
        if valid.any():
            flat = pixels.reshape(B * T, *pixels.shape[2:])[valid]  # (N_valid, 3, S, S)
            pooled = self.clip(pixel_values=flat).pooler_output  # (N_valid, D)
            out = out.to(pooled.dtype).index_put((valid.nonzero(as_tuple=True)[0],), pooled)
        return out.reshape(B, T, self.dim)


class VideoEmbeddings(nn.Module):
    """Projected frames (B, T, H) + learned positions + one token-type vector → LayerNorm → dropout."""

    def __init__(
        self, hidden: int, max_frames: int = 64, layer_norm_eps: float = 1e-12, dropout: float = 0.1
    ):
        super().__init__()
        self.positions = nn.Embedding(max_frames, hidden)
        self.token_type = nn.Parameter(torch.zeros(hidden))
        nn.init.normal_(self.positions.weight, std=0.02)
        nn.init.normal_(self.token_type, std=0.02)
        self.norm = nn.LayerNorm(hidden, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        if T > self.positions.num_embeddings:
            raise ValueError(
                f"{T} frames but the video embeddings hold {self.positions.num_embeddings} positions"
            )
        x = x + self.positions.weight[:T] + self.token_type  # (B, T, H)
        return self.dropout(self.norm(x))


def frame_inputs(tower: VisionTower | None, frames: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """Frame features (B, T, D): pre-extracted (B, T, D) as given, or pixels (B, T, 3, S, S) through `tower`.

    A model with a tower fed features of the tower's width bypasses it (seed 001's single-stream
    pretraining on `zip_feats` builds the ViT only so that fine-tuning on raw frames loads strictly).
    """
    if frames.dim() == 5:
        if tower is None:
            raise ValueError(
                "got raw frames (B, T, 3, S, S) but the model has no vision tower (vision_tower=True)"
            )
        return tower(frames, frame_mask)
    if tower is not None and frames.shape[-1] != tower.dim:
        raise ValueError(
            f"the model expects raw frames (B, T, 3, S, S) or features of its vision tower's width "
            f"{tower.dim}, got {tuple(frames.shape)}"
        )
    return frames
