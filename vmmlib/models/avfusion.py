"""Text + audio + video fusion, seed 004 (SPEC §3.11, §9.3), with ALPRO-style retrieval / QA heads.

    video  VideoMAEModel(frames (B, T, 3, S, S), tube mask)        visible tokens   (B, Nv', Dv)
    audio  ViT-MAE encoder over the spectrogram (B, 1, F, Ta)      [CLS] + visible  (B, 1+Na', Da)
    text   DebertaV2Model(text_ids, text_mask)                                      (B, L, Dt)
    fusion BERT encoder over [CLS] ‖ text ‖ video[perm] ‖ audio[perm]               (B, 1+L+Nv'+Na'+1, H)
           (each stream mapped to H, plus a modality-type embedding, then LayerNorm)

Heads: `itm_logits` (B, 2) on the fused [CLS] (video–text matching; class 1 = match), `qa_logits`
(B, num_classes) on the fused [CLS] when `num_classes` > 0, `mlm_logits` (B, L, V) on the fused text
positions (decoder tied to DeBERTa's word embeddings), and MAE decoders that reconstruct the
masked video tubelets / spectrogram patches from the fused tokens of the visible ones. The fused
rows follow `vt_perm` (text i with video perm[i]); the MAE predictions are put back in the videos'
own order, so their targets never mix samples (the bug SPEC §7.9 names for a WBDC seed).
`video_embedding` / `text_embedding` (B, embed_dim) project the unimodal mean video token (after
VideoMAE's `fc_norm` LayerNorm) and the text [CLS] for the contrastive loss.

Retrieval (ALPRO ranks by ITM probability, quadratic in the test set): `encode_text` and
`encode_video` once per caption / video, contrastive similarities for all pairs, then
`itm_scorer(model, texts, text_mask, videos)` re-scores each caption's top k with `fuse` +
the ITM head through `vmmlib.metrics.retrieval.rerank_top_k`.

Every encoder is built from a config (sizes below; `*_tiny` variants for CPU tests) or loaded with
`from_pretrained(dir, local_files_only=True)` from a local Hugging Face folder (`video_model_dir`
e.g. MCG-NJU/videomae-base, `audio_model_dir` a ViT-MAE, `text_model_dir` e.g. deberta-v2-xlarge,
`fusion_model_dir` a BERT). The spectrogram may be non-square (128 mel × 1024 frames): a
config-built audio encoder gets 2-D sin-cos positions on its real (F/p, Ta/p) grid.

The seed's own fusion internals (`models/crossformer.py`) and loss weights are unknown (SPEC §8):
the fusion stack, the type embeddings, the heads and the light MAE decoders here are this library's
design around the seed's encoders, batch and outputs.

References: Tong et al., "VideoMAE", NeurIPS 2022; He et al., "Masked Autoencoders Are Scalable
Vision Learners", CVPR 2022; Li et al., "Align and Prompt" (ALPRO), CVPR 2022.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    BertConfig,
    BertModel,
    DebertaV2Config,
    DebertaV2Model,
    PreTrainedModel,
    VideoMAEConfig,
    VideoMAEModel,
    ViTMAEConfig,
    ViTMAEModel,
)
from transformers.masking_utils import create_bidirectional_mask
from transformers.models.bert.modeling_bert import BertEncoder

from vmmlib.models._registry import register_model
from vmmlib.models.layers import check_mask_counts

DEBERTA_V2_VOCAB_SIZE = 128100  # microsoft/deberta-v2-xlarge


@dataclass
class AVFusionConfig:
    num_classes: int = 0  # QA answer vocabulary (classifier on the fused [CLS]); 0: no QA head
    embed_dim: int = 256  # contrastive projection width (ALPRO: 256)
    use_audio: bool = True  # False: text + video only (ALPRO's retrieval / QA); the audio tower is not built
    # text: DeBERTa-v2
    text_model_dir: str | None = None  # local HF folder; the sizes below are then ignored
    vocab_size: int | None = None  # None: 128100 built from a config, the folder's own when loaded
    max_text_len: int = 512  # DeBERTa max_position_embeddings when built from a config
    text_layers: int = 12
    text_hidden: int = 768
    text_heads: int = 12
    text_intermediate: int = 3072
    # video: VideoMAE
    video_model_dir: str | None = None  # local HF folder (frame and patch sizes come from it)
    num_frames: int = 16  # frames per clip
    image_size: int = 224  # frame side
    patch_size: int = 16
    tubelet_size: int = 2  # frames per temporal token
    video_layers: int = 12
    video_hidden: int = 768
    video_heads: int = 12
    video_intermediate: int = 3072
    # audio: ViT-MAE encoder over a (1, audio_freq, audio_time) spectrogram (or waveform image)
    audio_model_dir: str | None = None  # local HF folder (its image size must be (audio_freq, audio_time))
    audio_freq: int = 128  # mel bins (the image height); waveform mode: image_size
    audio_time: int = 1024  # frames (the image width); waveform mode: image_size
    audio_patch_size: int = 16
    audio_layers: int = 12
    audio_hidden: int = 768
    audio_heads: int = 12
    audio_intermediate: int = 3072
    # fusion: BERT encoder (the seed initialises a ViT-base-sized "crossformer")
    fusion_model_dir: str | None = None  # local BertModel folder for the fusion stack
    fusion_layers: int = 12
    fusion_hidden: int = 768
    fusion_heads: int = 12
    fusion_intermediate: int = 3072
    # MAE decoders (VideoMAE-base: 4 layers of 384)
    decoder_layers: int = 4
    decoder_hidden: int = 384
    decoder_heads: int = 6
    dropout: float = 0.1  # hidden dropout of the config-built encoders and the fusion stack


def _sizes(layers: int, hidden: int, heads: int, intermediate: int) -> dict[str, int]:
    return dict(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        intermediate_size=intermediate,
    )


def _load(model_cls, folder: str, model_type: str) -> PreTrainedModel:
    path = Path(folder)
    config = path / "config.json"
    if not config.is_file():
        param = {"deberta-v2": "text_model_dir", "videomae": "model_options video_model_dir",
                 "vit_mae": "model_options audio_model_dir", "bert": "model_options fusion_model_dir"}[model_type]  # fmt: skip
        raise FileNotFoundError(
            f'{config} not found: {param} must be a local Hugging Face {model_type} folder ("" builds it from its config)'
        )
    found = json.loads(config.read_text()).get("model_type")
    if found != model_type:
        raise ValueError(f"{folder} holds a {found!r} model, expected {model_type!r}")
    return model_cls.from_pretrained(path, local_files_only=True, dtype=torch.float32).train()


def sincos_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positions (MAE) for a height × width grid, a zero row for [CLS] first.

    Returns:
        float32 (1 + height·width, dim): [sin_h | cos_h | sin_w | cos_w], dim/4 frequencies each.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos positions need a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
    hh, ww = torch.meshgrid(
        torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij"
    )
    parts = []
    for grid in (hh.reshape(-1), ww.reshape(-1)):
        angle = grid[:, None] * omega[None]  # (N, dim/4)
        parts += [angle.sin(), angle.cos()]
    table = torch.cat(parts, dim=1)  # (N, dim)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()


def sinusoid_1d(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed 1-D sinusoid table of VideoMAE (and "Attention is all you need"), float32 (N, dim)."""
    pos = torch.arange(num_positions, dtype=torch.float64)[:, None]
    rate = torch.pow(10000.0, 2 * (torch.arange(dim) // 2) / dim)[None]
    angle = pos / rate
    return torch.where(torch.arange(dim) % 2 == 0, angle.sin(), angle.cos()).float()


class MAEDecoder(nn.Module):
    """A light MAE decoder: visible tokens + mask tokens at their positions (fixed 1-D sinusoid) →
    pre-norm transformer → the pixels of each masked patch.

    Args:
        in_dim: width of the visible tokens.
        num_patches: N, tokens of a full (unmasked) input.
        patch_dim: values per patch to predict.
    """

    def __init__(self, in_dim: int, num_patches: int, patch_dim: int, hidden: int, layers: int, heads: int):
        super().__init__()
        self.embed = nn.Linear(in_dim, hidden)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden))
        nn.init.normal_(self.mask_token, std=0.02)
        self.register_buffer("positions", sinusoid_1d(num_patches, hidden), persistent=False)
        layer = nn.TransformerEncoderLayer(
            hidden, heads, 4 * hidden, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, patch_dim)

    def forward(self, visible: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """visible (B, N − M, in_dim) in token order, mask bool (B, N) with M Trues per row →
        predictions (B, M, patch_dim) for the masked tokens in token order."""
        B, N = mask.shape
        x = self.embed(visible)  # (B, N-M, hidden)
        full = self.mask_token.to(x.dtype).expand(B, N, -1).clone()
        full[~mask] = x.reshape(-1, x.shape[-1])
        full = self.blocks(full + self.positions.to(x.dtype))
        masked = full[mask].reshape(B, -1, full.shape[-1])  # (B, M, hidden)
        return self.head(self.norm(masked))


class TiedMLMHead(nn.Module):
    """Dense + GELU + LayerNorm, then a decoder sharing the word-embedding matrix (passed at call time)."""

    def __init__(self, in_dim: int, embed_dim: int, vocab_size: int, eps: float = 1e-7):
        super().__init__()
        self.transform = nn.Linear(in_dim, embed_dim)
        self.norm = nn.LayerNorm(embed_dim, eps=eps)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """x (B, L, in_dim), word_embeddings (V, E) → logits (B, L, V)."""
        return F.linear(self.norm(F.gelu(self.transform(x))), word_embeddings, self.bias)


class AVFusion(nn.Module):
    """VideoMAE + ViT-MAE (audio) + DeBERTa-v2 encoders and a fusion transformer with a [CLS]."""

    def __init__(self, cfg: AVFusionConfig):
        super().__init__()
        self.cfg = cfg
        self.text = self._build_text(cfg)
        self.video = self._build_video(cfg)
        self.audio = self._build_audio(cfg) if cfg.use_audio else None
        if cfg.fusion_model_dir:
            fusion = _load(BertModel, cfg.fusion_model_dir, "bert")
            self.fusion_config, self.fusion = fusion.config, fusion.encoder
        else:
            sizes = _sizes(cfg.fusion_layers, cfg.fusion_hidden, cfg.fusion_heads, cfg.fusion_intermediate)
            self.fusion_config = BertConfig(**sizes, hidden_dropout_prob=cfg.dropout)
            # the attention BertModel would pick; a bare BertEncoder needs it set on its config
            self.fusion_config._attn_implementation = "sdpa"
            self.fusion = BertEncoder(self.fusion_config)
        H = self.fusion_config.hidden_size
        Dt, Dv = self.text.config.hidden_size, self.video.config.hidden_size
        self.cls = nn.Parameter(torch.zeros(1, 1, H))
        nn.init.normal_(self.cls, std=0.02)
        self.type_embed = nn.Embedding(4, H)  # [CLS], text, video, audio
        self.text_map, self.video_map = nn.Linear(Dt, H), nn.Linear(Dv, H)
        self.fusion_norm = nn.LayerNorm(H, eps=self.fusion_config.layer_norm_eps)
        self.video_pool_norm = nn.LayerNorm(Dv)  # VideoMAE's fc_norm on the mean token (use_mean_pooling)
        self.text_proj, self.video_proj = nn.Linear(Dt, cfg.embed_dim), nn.Linear(Dv, cfg.embed_dim)
        self.itm_head = nn.Linear(H, 2)
        self.qa_head = (
            nn.Sequential(nn.Linear(H, 2 * H), nn.GELU(), nn.Linear(2 * H, cfg.num_classes))
            if cfg.num_classes
            else None
        )
        vocab, embed = self.text.get_input_embeddings().weight.shape
        self.mlm_head = TiedMLMHead(H, embed, vocab, self.text.config.layer_norm_eps)
        vc = self.video.config
        self.video_tokens = (vc.num_frames // vc.tubelet_size) * (vc.image_size // vc.patch_size) ** 2
        patch_v = vc.tubelet_size * vc.patch_size**2 * vc.num_channels
        dec = (cfg.decoder_hidden, cfg.decoder_layers, cfg.decoder_heads)
        self.video_decoder = MAEDecoder(H, self.video_tokens, patch_v, *dec)
        if self.audio is not None:
            ac = self.audio.config
            self.audio_map = nn.Linear(ac.hidden_size, H)
            self.audio_grid = tuple(
                s // ac.patch_size for s in self.audio.embeddings.patch_embeddings.image_size
            )
            self.audio_decoder = MAEDecoder(
                H, math.prod(self.audio_grid), ac.patch_size**2 * ac.num_channels, *dec
            )

    def towers_not_built(self) -> tuple[str, ...]:
        """Weight-name prefixes of the towers this model was built without (`load_weights` leaves a
        pretraining's weights for them out): the audio tower, its map and decoder without `use_audio`."""
        return () if self.cfg.use_audio else ("audio.", "audio_map.", "audio_decoder.")

    @staticmethod
    def _build_text(cfg: AVFusionConfig) -> DebertaV2Model:
        if cfg.text_model_dir:
            model = _load(DebertaV2Model, cfg.text_model_dir, "deberta-v2")
            if cfg.vocab_size is not None and model.config.vocab_size != cfg.vocab_size:
                raise ValueError(
                    f"vocab_size={cfg.vocab_size} but {cfg.text_model_dir} has {model.config.vocab_size}"
                )
            return model
        config = DebertaV2Config(
            vocab_size=cfg.vocab_size or DEBERTA_V2_VOCAB_SIZE,
            max_position_embeddings=cfg.max_text_len,
            relative_attention=True,  # deberta-v2-xlarge's attention: disentangled, bucketed, shared keys
            pos_att_type=["p2c", "c2p"],
            position_biased_input=False,
            position_buckets=256,
            max_relative_positions=-1,
            norm_rel_ebd="layer_norm",
            share_att_key=True,
            hidden_dropout_prob=cfg.dropout,
            **_sizes(cfg.text_layers, cfg.text_hidden, cfg.text_heads, cfg.text_intermediate),
        )
        return DebertaV2Model(config)

    @staticmethod
    def _build_video(cfg: AVFusionConfig) -> VideoMAEModel:
        if cfg.video_model_dir:
            return _load(VideoMAEModel, cfg.video_model_dir, "videomae")
        config = VideoMAEConfig(
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            num_frames=cfg.num_frames,
            tubelet_size=cfg.tubelet_size,
            hidden_dropout_prob=cfg.dropout,
            **_sizes(cfg.video_layers, cfg.video_hidden, cfg.video_heads, cfg.video_intermediate),
        )
        return VideoMAEModel(config)

    @staticmethod
    def _build_audio(cfg: AVFusionConfig) -> ViTMAEModel:
        if cfg.audio_model_dir:
            model = _load(ViTMAEModel, cfg.audio_model_dir, "vit_mae")
            size = tuple(model.embeddings.patch_embeddings.image_size)
            if size != (cfg.audio_freq, cfg.audio_time) or model.config.num_channels != 1:
                raise ValueError(
                    f"{cfg.audio_model_dir} takes {model.config.num_channels}-channel {size} images; the audio "
                    f"input is 1 × ({cfg.audio_freq}, {cfg.audio_time})"
                )
            return model
        config = ViTMAEConfig(
            image_size=(cfg.audio_freq, cfg.audio_time),
            patch_size=cfg.audio_patch_size,
            num_channels=1,
            mask_ratio=0.0,  # masking is done by AVFusion from the batch's audio_mask
            hidden_dropout_prob=cfg.dropout,
            **_sizes(cfg.audio_layers, cfg.audio_hidden, cfg.audio_heads, cfg.audio_intermediate),
        )
        model = ViTMAEModel(config)
        grid = [s // cfg.audio_patch_size for s in (cfg.audio_freq, cfg.audio_time)]
        with torch.no_grad():  # HF's init assumes a square grid; the spectrogram's may not be
            model.embeddings.position_embeddings.copy_(sincos_2d(cfg.audio_hidden, *grid).unsqueeze(0))
        return model

    def encode_audio(self, audio: torch.Tensor, audio_mask: torch.Tensor | None = None) -> torch.Tensor:
        """ViT-MAE encoder on the visible patches: audio (B, 1, F, Ta), audio_mask bool (B, Na) or None
        → (B, 1 + visible, Da), [CLS] first."""
        emb = self.audio.embeddings
        pos = emb.position_embeddings.to(audio.dtype)
        x = emb.patch_embeddings(audio) + pos[:, 1:]  # (B, Na, Da)
        if audio_mask is not None:
            check_mask_counts(audio_mask, "audio_mask")
            x = x[~audio_mask].reshape(x.shape[0], -1, x.shape[-1])
        cls = (emb.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        h = torch.cat([cls, x], dim=1)
        for layer in self.audio.layers:
            h = layer(h, None)
        return self.audio.layernorm(h)

    def encode_text(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """DeBERTa: text_tokens (B, L, Dt) and the contrastive text_embedding (B, embed_dim) of [CLS]."""
        t = self.text(input_ids=text_ids, attention_mask=text_mask).last_hidden_state  # (B, L, Dt)
        return {"text_tokens": t, "text_embedding": self.text_proj(t[:, 0])}

    def encode_video(
        self,
        frames: torch.Tensor,
        audio: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """VideoMAE (+ the audio tower): video_tokens (B, Nv', Dv) of the visible tubelets, the
        contrastive video_embedding (B, embed_dim) (their mean, projected), and audio_tokens
        (B, 1+Na', Da) with an audio tower."""
        if video_mask is not None:
            check_mask_counts(video_mask, "video_mask")
        v = self.video(pixel_values=frames, bool_masked_pos=video_mask).last_hidden_state  # (B, Nv', Dv)
        pooled = self.video_pool_norm(v.mean(1))  # (B, Nv', Dv) -> (B, Dv)
        out = {"video_tokens": v, "video_embedding": self.video_proj(pooled)}  # (B, E)
        if self.audio is not None:
            if audio is None:
                raise ValueError(
                    "this model has an audio tower: pass `audio` (B, 1, F, T), or build it with use_audio=False"
                )
            out["audio_tokens"] = self.encode_audio(audio, audio_mask)  # (B, 1+Na', Da)
        return out

    def encode(
        self,
        frames: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        audio: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """`encode_text` and `encode_video` together."""
        return {
            **self.encode_video(frames, audio, video_mask, audio_mask),
            **self.encode_text(text_ids, text_mask),
        }

    def fuse(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        video_tokens: torch.Tensor,
        audio_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The fusion stack over [CLS] ‖ text ‖ video ‖ audio (row i with row i): (B, 1+L+Nv'+..., H)."""
        B = text_tokens.shape[0]
        streams = [
            self.text_map(text_tokens) + self.type_embed.weight[1],
            self.video_map(video_tokens) + self.type_embed.weight[2],
        ]
        if self.audio is not None:
            if audio_tokens is None:
                raise ValueError("this model has an audio tower: fuse needs audio_tokens")
            streams.append(self.audio_map(audio_tokens) + self.type_embed.weight[3])
        cls = (self.cls + self.type_embed.weight[0]).expand(B, -1, -1)
        x = self.fusion_norm(torch.cat([cls, *streams], dim=1))  # (B, 1+L+Nv'+..., H)
        L = text_tokens.shape[1]
        ones = torch.ones(B, x.shape[1] - L - 1, dtype=text_mask.dtype, device=x.device)
        mask = torch.cat([ones[:, :1], text_mask, ones], dim=1)
        attention = create_bidirectional_mask(config=self.fusion_config, inputs_embeds=x, attention_mask=mask)
        return self.fusion(x, attention_mask=attention).last_hidden_state

    def match_probability(
        self,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        video_tokens: torch.Tensor,
        audio_tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ITM positive-class probability (ALPRO's retrieval score) of each (text row, video row): (B,)."""
        h = self.fuse(text_tokens, text_mask, video_tokens, audio_tokens)
        return self.itm_head(h[:, 0]).float().softmax(-1)[:, 1]

    def forward(
        self,
        frames: torch.Tensor,
        text_ids: torch.Tensor,
        text_mask: torch.Tensor,
        audio: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
        vt_perm: torch.Tensor | None = None,
        mlm: bool = False,
        **_,
    ) -> dict[str, torch.Tensor]:
        """Encode, fuse, and apply the heads.

        Args:
            frames: float (B, T, 3, S, S) preprocessed clips.
            text_ids, text_mask: int64 (B, L); pass MLM-corrupted ids with `mlm=True`.
            audio: float (B, 1, F, Ta), required when the model has an audio tower.
            video_mask: bool (B, Nv) tube mask (True = hidden from the encoder), equal counts per row.
            audio_mask: bool (B, Na) patch mask, equal counts per row.
            vt_perm: int64 (B,): fuse text i with video (and audio) perm[i]; None = identity.
            mlm: compute `mlm_logits`.

        Returns:
            cls (B, H), itm_logits (B, 2), video_embedding / text_embedding (B, embed_dim); qa_logits
            (B, num_classes) with a QA head; mlm_logits (B, L, V) with mlm; video_pred (B, Mv, tubelet·p²·3)
            with video_mask; audio_pred (B, Ma, p²) with audio_mask (rows in the videos' own order).
        """
        B, L = text_ids.shape
        enc = self.encode(frames, text_ids, text_mask, audio, video_mask, audio_mask)
        perm = torch.arange(B, device=text_ids.device) if vt_perm is None else vt_perm.to(text_ids.device)
        v, a = enc["video_tokens"], enc.get("audio_tokens")
        h = self.fuse(enc["text_tokens"], text_mask, v[perm], None if a is None else a[perm])
        out = {
            "cls": h[:, 0],
            "itm_logits": self.itm_head(h[:, 0]),
            "video_embedding": enc["video_embedding"],
            "text_embedding": enc["text_embedding"],
        }
        if self.qa_head is not None:
            out["qa_logits"] = self.qa_head(h[:, 0])
        if mlm:
            out["mlm_logits"] = self.mlm_head(h[:, 1 : 1 + L], self.text.get_input_embeddings().weight)
        inverse = torch.argsort(perm)  # fused row of each video
        start = 1 + L
        if video_mask is not None:
            fused_video = h[:, start : start + v.shape[1]][inverse]
            out["video_pred"] = self.video_decoder(fused_video, video_mask)
        if a is not None and audio_mask is not None:
            fused_audio = h[:, start + v.shape[1] + 1 :][inverse]  # visible patches, [CLS] skipped
            out["audio_pred"] = self.audio_decoder(fused_audio, audio_mask)
        return out


def itm_scorer(
    model: AVFusion, texts: dict, text_mask: torch.Tensor, videos: dict, batch_size: int = 64
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """A scorer for `vmmlib.metrics.retrieval.rerank_top_k` from cached encodings.

    Args:
        model: the fusion model (evaluation mode is the caller's choice).
        texts: `model.encode_text(...)` of every caption (text_tokens (T, L, Dt)).
        text_mask: (T, L) the captions' attention mask.
        videos: `model.encode_video(...)` of every gallery video (video_tokens (V, Nv, Dv), and
            audio_tokens with an audio tower).
        batch_size: pairs fused per forward pass.

    Returns:
        scorer(text_idx, video_idx) → float64 (P,) ITM positive probabilities, computed without grad.
    """

    def score(text_idx: np.ndarray, video_idx: np.ndarray) -> np.ndarray:
        out = []
        for s in range(0, len(text_idx), batch_size):
            q = torch.as_tensor(text_idx[s : s + batch_size], device=text_mask.device)
            c = torch.as_tensor(video_idx[s : s + batch_size], device=text_mask.device)
            audio = videos.get("audio_tokens")
            with torch.no_grad():
                p = model.match_probability(
                    texts["text_tokens"][q],
                    text_mask[q],
                    videos["video_tokens"][c],
                    None if audio is None else audio[c],
                )
            out.append(p.double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    return score


TINY = dict(
    embed_dim=32,
    max_text_len=64,
    **{
        f"{p}_{k}": v
        for p in ("text", "video", "audio", "fusion")
        for k, v in dict(layers=2, hidden=32, heads=2, intermediate=64).items()
    },
    num_frames=4,
    image_size=32,
    patch_size=8,
    audio_freq=32,
    audio_time=64,
    audio_patch_size=8,
    decoder_layers=1,
    decoder_hidden=32,
    decoder_heads=2,
)


@register_model
def avfusion(**overrides) -> AVFusion:
    return AVFusion(AVFusionConfig(**overrides))


@register_model
def avfusion_tiny(**overrides) -> AVFusion:
    return AVFusion(AVFusionConfig(**{**TINY, **overrides}))


@register_model
def avfusion_vt(**overrides) -> AVFusion:
    return AVFusion(AVFusionConfig(**{"use_audio": False, **overrides}))


@register_model
def avfusion_vt_tiny(**overrides) -> AVFusion:
    return AVFusion(AVFusionConfig(**{**TINY, "use_audio": False, **overrides}))
