"""Frame preprocessing in torch for video encoders (transformers 5 removed `VideoMAEFeatureExtractor`).

`preprocess_frames` does what `VideoMAEImageProcessor` does by default — resize the shorter side to
`resize` (bilinear, antialiased), crop `image_size` (centre; random in training), scale to [0, 1],
normalise per channel — on a whole clip at once, with the same crop for every frame. ALPRO resizes to
256 and crops 224 with CLIP's mean/std; VideoMAE resizes to 224 with ImageNet's.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def preprocess_frames(
    frames: np.ndarray | torch.Tensor,
    image_size: int = 224,
    *,
    resize: int | None = None,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    random_crop: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """RGB uint8 frames → normalised float clip for VideoMAE.

    Args:
        frames: uint8 (T, H, W, 3).
        image_size: output side S.
        resize: shorter side after resizing (default `image_size`); must be ≥ image_size.
        mean, std: per-channel normalisation of [0, 1] pixels.
        random_crop: a random crop position (one for the whole clip) instead of the centre.
        generator: for the random crop.

    Returns:
        float32 (T, 3, S, S).
    """
    x = torch.as_tensor(np.asarray(frames) if not isinstance(frames, torch.Tensor) else frames)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be (T, H, W, 3), got {tuple(x.shape)}")
    resize = resize or image_size
    if resize < image_size:
        raise ValueError(f"resize ({resize}) must be at least image_size ({image_size})")
    x = x.permute(0, 3, 1, 2).float() / 255.0  # (T, H, W, 3) -> (T, 3, H, W)
    H, W = x.shape[-2:]
    scale = resize / min(H, W)
    size = (max(resize, round(H * scale)), max(resize, round(W * scale)))
    if size != (H, W):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    H, W = size
    if random_crop:
        top = int(torch.randint(H - image_size + 1, (1,), generator=generator))
        left = int(torch.randint(W - image_size + 1, (1,), generator=generator))
    else:
        top, left = (H - image_size) // 2, (W - image_size) // 2
    x = x[:, :, top : top + image_size, left : left + image_size].clamp(0.0, 1.0)
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    return ((x - mean_t) / std_t).contiguous()
