"""The backbone side of `vmm extract`: a vision model as a function of frames, and the two loops that run
it over videos: `encode_batched` (decoding in threads ahead of the model, frames of consecutive videos
batched together) and `encode_per_video` (the straightforward loop, kept as the benchmark's reference).

A backbone is any vision model in a local Hugging Face folder, loaded with `AutoModel` (a multimodal
model such as CLIP gives its `vision_model`), or a tiny ViT built from a config (`tiny_backbone`). The
frame feature is the model's `pooler_output` (CLIP: the post-layernorm [CLS], as WBDC rank 8 extracted;
ResNet/ConvNeXt: the pooled map), or the [CLS] token when the folder holds no trained pooler weights
(a ViT saved without its pooler), or the mean of the last hidden state on request. Pixels are
normalised with the folder's `preprocessor_config.json` mean/std, else CLIP's for CLIP-like models and
ImageNet's otherwise. On CUDA the model runs under bf16 autocast.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vmmlib.data.image_transforms import CLIP_MEAN, CLIP_STD
from vmmlib.data.video_transforms import IMAGENET_MEAN, IMAGENET_STD
from vmmlib.io import safe
from vmmlib.io.media import MediaError

# ------------------------------------------------------------------------------------------ backbone


class FrameEncoder:
    """A vision backbone as a function of uint8 frames (N, S, S, 3) → float32 features (N, D).

    Attributes:
        image_size: S; mean, std: per-channel normalisation of [0, 1] pixels.
        pooling: `pooler` (the model's pooler_output, flattened), `cls` (first token), `mean`, or
            `auto` (pooler_output when the model returns one, else the first token).
        name: a fingerprint of the weights and options (a saved PCA records it).
        feature_dim: D.
    """

    def __init__(
        self, model, *, image_size: int, mean, std, pooling: str, name: str, device: str | None = None
    ):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.float().eval().to(self.device)
        self.image_size, self.pooling, self.name = image_size, pooling, name
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        self._std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        self.feature_dim = int(self(np.zeros((1, image_size, image_size, 3), np.uint8)).shape[1])

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) → float32 (N, D)."""
        x = torch.from_numpy(np.asarray(frames)).to(self.device)
        x = (x.permute(0, 3, 1, 2).float() / 255.0 - self._mean) / self._std  # (N, 3, S, S)
        with (
            torch.inference_mode(),
            torch.autocast("cuda", torch.bfloat16, enabled=self.device.type == "cuda"),
        ):
            out = self.model(pixel_values=x)
            pooled = getattr(out, "pooler_output", None)
            if self.pooling == "pooler" and pooled is None:
                raise ValueError("this backbone returns no pooler_output: use pooling 'cls' or 'mean'")
            if self.pooling in ("pooler", "auto") and pooled is not None:
                feats = pooled.flatten(1)
            elif self.pooling in ("cls", "auto"):
                feats = out.last_hidden_state[:, 0]
            else:  # tokens (N, L, D) or a feature map (N, D, H, W)
                hidden = out.last_hidden_state
                feats = hidden.mean(1) if hidden.ndim == 3 else hidden.flatten(2).mean(-1)
        return feats.float().cpu().numpy()


POOLINGS = ("auto", "pooler", "cls", "mean")


def tiny_backbone(device: str | None = None) -> FrameEncoder:
    """The built-in backbone: a 2-layer, 64-d ViT on 32 × 32 frames, seeded weights (tests, smoke runs)."""
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = ViTModel(config, add_pooling_layer=False)
    return FrameEncoder(model, image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3, pooling="cls",
                        name="builtin:tiny-vit-64d", device=device)  # fmt: skip


def _folder_fingerprint(root: Path, pooling: str) -> str:
    digest = hashlib.sha256((root / "config.json").read_bytes())
    for path in sorted(root.glob("*.safetensors")) + sorted(root.glob("*.bin")):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return f"{root.name}:{digest.hexdigest()[:16]}:{pooling}"


def load_backbone(
    backbone: str | Path = "", *, device: str | None = None, pooling: str = "auto"
) -> FrameEncoder:
    """A `FrameEncoder` from a local Hugging Face folder (`AutoModel`), or the tiny built-in one ("").

    Args:
        backbone: a folder with `config.json` and weights (CLIPModel, CLIPVisionModel, ViTModel, ...).
        pooling: `auto` = the model's pooler_output when it returns one and the folder holds its
            weights, else the [CLS] token; or force `pooler`, `cls` or `mean` (of the last hidden state).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; valid choices: {', '.join(POOLINGS)}")
    if not backbone:
        return tiny_backbone(device)
    root = Path(backbone)
    if not (root / "config.json").is_file():
        raise FileNotFoundError(f"backbone {root} has no config.json (a Hugging Face model folder is needed)")
    from transformers import AutoModel

    model, info = AutoModel.from_pretrained(str(root), output_loading_info=True)
    config = model.config
    if hasattr(model, "vision_model"):  # CLIP, Chinese-CLIP, SigLIP, BLIP, ...: the image tower
        config = getattr(config, "vision_config", config)
        model = model.vision_model
    if pooling == "auto" and any("pooler" in k for k in info.get("missing_keys", [])):
        pooling = "cls"  # a pooler the folder has no weights for is random: use the [CLS] token
    size = getattr(config, "image_size", 224)
    size = int(size[0] if isinstance(size, (list, tuple)) else size)
    clip_like = "clip" in str(getattr(config, "model_type", ""))
    mean, std = (CLIP_MEAN, CLIP_STD) if clip_like else (IMAGENET_MEAN, IMAGENET_STD)
    processor = root / "preprocessor_config.json"
    if processor.is_file():
        saved = safe.read_json(processor)
        if not isinstance(saved, dict):
            raise safe.InputError(processor, "a preprocessor config is a JSON object")
        mean, std = saved.get("image_mean", mean), saved.get("image_std", std)
    name = _folder_fingerprint(root, pooling)
    return FrameEncoder(model, image_size=size, mean=mean, std=std, pooling=pooling, name=name, device=device)


# ------------------------------------------------------------------------------------------ encoding loops

DecodeFn = Callable[[object], object]  # video → a decoded video with `frames`, uint8 (T, S, S, 3)
DoneFn = Callable[[object, np.ndarray], None]  # (decoded video, its features (T, D) float32)
ErrorFn = Callable[[object, str], None]  # (video, why it cannot be decoded)


def _safe_decode(decode: DecodeFn, video):
    """The decoded video, or the reason it cannot be decoded (never raises for a bad file)."""
    try:
        return decode(video)
    except MediaError as e:
        return e.reason
    except Exception as e:  # noqa: BLE001  (any broken file is reported and skipped, not fatal)
        return f"{type(e).__name__}: {e}"


def encode_per_video(
    videos: Sequence, encoder: FrameEncoder, decode: DecodeFn, on_done: DoneFn, on_error: ErrorFn,
    *, batch_size: int = 64,
) -> None:  # fmt: skip
    """The straightforward loop: decode a video, run its frames through the backbone, next video."""
    for video in videos:
        decoded = _safe_decode(decode, video)
        if isinstance(decoded, str):
            on_error(video, decoded)
            continue
        frames = decoded.frames
        on_done(
            decoded,
            np.concatenate([encoder(frames[i : i + batch_size]) for i in range(0, len(frames), batch_size)]),
        )


@dataclass
class _Pending:
    decoded: object  # what `decode` returned
    out: np.ndarray  # (T, D) filled batch by batch
    next_row: int = 0  # first frame not yet queued into a batch
    filled: int = 0


def encode_batched(
    videos: Sequence, encoder: FrameEncoder, decode: DecodeFn, on_done: DoneFn, on_error: ErrorFn,
    *, batch_size: int = 64, workers: int = 2, prefetch: int | None = None,
) -> None:  # fmt: skip
    """Decode in `workers` threads (up to `prefetch` videos ahead, in order) while the backbone runs on
    batches of `batch_size` frames taken across consecutive videos. `on_done` gets each video, in
    order, as soon as its last frame is encoded; `on_error` each video that cannot be decoded."""
    prefetch = prefetch or max(2, 2 * workers)
    pool = ThreadPoolExecutor(workers, thread_name_prefix="decode") if workers > 0 else None
    todo, inflight, queue = iter(videos), deque(), deque()

    def submit():
        while len(inflight) < prefetch and (video := next(todo, None)) is not None:
            inflight.append((video, pool.submit(_safe_decode, decode, video) if pool else None))

    try:
        submit()
        queued = 0
        while inflight or queue:
            while queued < batch_size and inflight:  # top up the queue with decoded videos
                video, future = inflight.popleft()
                submit()
                decoded = future.result() if future else _safe_decode(decode, video)
                if isinstance(decoded, str):
                    on_error(video, decoded)
                    continue
                queue.append(
                    _Pending(decoded, np.empty((len(decoded.frames), encoder.feature_dim), np.float32))
                )
                queued += len(decoded.frames)
            parts, room = [], batch_size  # (pending, start, end) slices making one batch
            while queue and room:
                p = queue[0]
                end = min(len(p.out), p.next_row + room)
                parts.append((p, p.next_row, end))
                room -= end - p.next_row
                p.next_row = end
                if end == len(p.out):
                    queue.popleft()
            if not parts:
                continue
            feats = encoder(np.concatenate([p.decoded.frames[s:e] for p, s, e in parts]))
            offset = 0
            for p, s, e in parts:
                p.out[s:e] = feats[offset : offset + e - s]
                offset, p.filled, queued = offset + e - s, p.filled + e - s, queued - (e - s)
                if p.filled == len(p.out):
                    on_done(p.decoded, p.out)
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)
