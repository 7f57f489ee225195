"""Image transforms for CLIP models in torch + Pillow (no torchvision), as Chinese-CLIP applies them.

- `EvalTransform`: `Resize((size, size))` bicubic squash, **no crop**, RGB, `ToTensor`, CLIP mean/std
  (Chinese-CLIP's evaluation and non-augmented training transform, SPEC §9.2). Hugging Face's
  `ChineseCLIPImageProcessor` resizes the short side and centre-crops instead: different features.
- `TrainTransform`: Chinese-CLIP's `--use-augment` pipeline, timm's
  `create_transform(size, scale=(0.9, 1.0), auto_augment="original", interpolation="bicubic")`:
  random resized crop (ratio 3/4–4/3), horizontal flip p = 0.5, RGB, AutoAugment's ImageNet
  ("original") policy, `ToTensor`, CLIP mean/std. RGB conversion comes before AutoAugment, where
  Chinese-CLIP inserts it.
- `AutoAugment`: the ImageNet policy of Cubuk et al., "AutoAugment: Learning Augmentation Policies
  from Data", CVPR 2019 (arXiv:1805.09501), with timm's magnitude scale (level / 10 of each op's
  range, signed ops negated with p = 0.5, posterize keeping 4–8 bits) and fill = the CLIP mean.

Randomness comes from Python's `random` module by default, which a PyTorch `DataLoader` reseeds in
every worker; pass `rng=random.Random(seed)` for a reproducible stream.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = Image.Resampling.BICUBIC
FILL = tuple(min(255, round(255 * m)) for m in CLIP_MEAN)  # timm's img_mean fill for geometric ops

# The ImageNet policy (paper, Appendix): 25 sub-policies of two (op, probability, magnitude 0–10).
ORIGINAL_POLICY: tuple[tuple[tuple[str, float, int], ...], ...] = (
    (("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
    (("PosterizeOriginal", 0.6, 7), ("PosterizeOriginal", 0.6, 6)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, 4), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, 7)),
    (("PosterizeOriginal", 0.8, 5), ("Equalize", 1.0, 2)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, 8), ("PosterizeOriginal", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, 2)),
    (("Equalize", 0.0, 7), ("Equalize", 0.8, 8)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, 8)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, 9)),
    (("Color", 0.4, 0), ("Equalize", 0.6, 3)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
)
MAX_LEVEL = 10.0
_ENHANCERS = {
    "Color": ImageEnhance.Color,
    "Contrast": ImageEnhance.Contrast,
    "Brightness": ImageEnhance.Brightness,
    "Sharpness": ImageEnhance.Sharpness,
}
OPS = ("AutoContrast", "Equalize", "Invert", "PosterizeOriginal", "Rotate", "ShearX", "ShearY", "Solarize")
OPS += tuple(_ENHANCERS)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB (or L) Pillow image → float32 (C, H, W) in [0, 1], as torchvision's `ToTensor`."""
    array = np.asarray(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def normalize(
    x: torch.Tensor, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> torch.Tensor:
    """(C, H, W) → (x − mean) / std per channel."""
    mean_t = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return (x - mean_t) / std_t


class EvalTransform:
    """Bicubic squash to (size, size), no crop → RGB → tensor → CLIP mean/std: float32 (3, size, size)."""

    def __init__(self, size: int = 224):
        self.size = size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.resize((self.size, self.size), BICUBIC)  # Pillow picks NEAREST itself for P / 1 modes
        return normalize(to_tensor(image.convert("RGB")))

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size})"


def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float] = (0.9, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    rng: random.Random | None = None,
) -> tuple[int, int, int, int]:
    """timm's `RandomResizedCropAndInterpolation.get_params`: up to 10 tries of a random area in
    `scale` and log-uniform aspect in `ratio`, else a centre crop clamped to `ratio`.

    Returns:
        (left, top, crop_width, crop_height) in pixels.
    """
    rng = rng or random
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = rng.uniform(*scale) * area
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if w <= width and h <= height:
            top = rng.randint(0, height - h)
            left = rng.randint(0, width - w)
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _signed(value: float, rng) -> float:
    return -value if rng.random() > 0.5 else value


def _enhance_factor(level: float) -> float:
    return level / MAX_LEVEL * 1.8 + 0.1  # 0.1 … 1.9


def apply_op(image: Image.Image, name: str, magnitude: float, rng=None) -> Image.Image:
    """Apply one AutoAugment op at `magnitude` (0–10) to an RGB image (the ops of the ImageNet policy)."""
    if name not in OPS:
        raise ValueError(f"unknown AutoAugment op {name!r}; valid ops: {', '.join(sorted(OPS))}")
    rng = rng or random
    level = max(0.0, min(float(magnitude), MAX_LEVEL))
    geometric = {"resample": BICUBIC, "fillcolor": FILL}
    if name == "Rotate":
        return image.rotate(_signed(level / MAX_LEVEL * 30.0, rng), resample=BICUBIC, fillcolor=FILL)
    if name == "ShearX":
        factor = _signed(level / MAX_LEVEL * 0.3, rng)
        return image.transform(image.size, Image.Transform.AFFINE, (1, factor, 0, 0, 1, 0), **geometric)
    if name == "ShearY":
        factor = _signed(level / MAX_LEVEL * 0.3, rng)
        return image.transform(image.size, Image.Transform.AFFINE, (1, 0, 0, factor, 1, 0), **geometric)
    if name == "PosterizeOriginal":
        bits = int(level / MAX_LEVEL * 4) + 4  # keep 4 … 8 most significant bits
        return image if bits >= 8 else ImageOps.posterize(image, bits)
    if name == "Solarize":
        return ImageOps.solarize(image, int(level / MAX_LEVEL * 256))
    if name == "AutoContrast":
        return ImageOps.autocontrast(image)
    if name == "Equalize":
        return ImageOps.equalize(image)
    if name == "Invert":
        return ImageOps.invert(image)
    return _ENHANCERS[name](image).enhance(_enhance_factor(level))


class AutoAugment:
    """Pick one sub-policy uniformly; apply each of its ops with its probability (RGB image in and out)."""

    def __init__(self, policy: Sequence[Sequence[tuple[str, float, float]]] = ORIGINAL_POLICY, rng=None):
        self.policy = tuple(tuple(sub) for sub in policy)
        self.rng = rng

    def __call__(self, image: Image.Image) -> Image.Image:
        rng = self.rng or random
        for name, prob, magnitude in rng.choice(self.policy):
            if prob < 1.0 and rng.random() > prob:
                continue
            image = apply_op(image, name, magnitude, rng)
        return image


class TrainTransform:
    """Random resized crop (scale 0.9–1) → flip (p 0.5) → RGB → AutoAugment → tensor → CLIP mean/std.

    Args:
        size: output side.
        scale: crop area range as a fraction of the image.
        auto_augment: "original" (the ImageNet policy) or None (crop and flip only).
        rng: a `random.Random`; default Python's global `random` (reseeded per DataLoader worker).

    Returns (when called): float32 (3, size, size).
    """

    def __init__(
        self,
        size: int = 224,
        scale: tuple[float, float] = (0.9, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        hflip: float = 0.5,
        auto_augment: str | None = "original",
        rng: random.Random | None = None,
    ):
        if auto_augment not in ("original", None):
            raise ValueError(f"unknown auto_augment {auto_augment!r}; valid choices: original, None")
        self.size, self.scale, self.ratio, self.hflip = size, scale, ratio, hflip
        self.rng = rng
        self.auto_augment = AutoAugment(ORIGINAL_POLICY, rng) if auto_augment else None

    def __call__(self, image: Image.Image) -> torch.Tensor:
        rng = self.rng or random
        left, top, w, h = random_resized_crop_box(*image.size, self.scale, self.ratio, rng)
        image = image.crop((left, top, left + w, top + h)).resize((self.size, self.size), BICUBIC)
        if rng.random() < self.hflip:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image = image.convert("RGB")
        if self.auto_augment is not None:
            image = self.auto_augment(image)
        return normalize(to_tensor(image))

    def __repr__(self) -> str:
        return f"TrainTransform(size={self.size}, scale={self.scale}, auto_augment={self.auto_augment is not None})"


def build_transform(train: bool, size: int = 224, use_augment: bool = True):
    """Chinese-CLIP's choice: the augmenting `TrainTransform` for training with `use_augment`, else
    `EvalTransform` (upstream trains on the squash transform without `--use-augment`)."""
    return TrainTransform(size) if train and use_augment else EvalTransform(size)
