"""CLIP image transforms in torch + Pillow: eval squash (no crop), train crop/flip/AutoAugment."""

import random

import numpy as np
import pytest
import torch
from PIL import Image

from vmmlib.data.image_transforms import (
    CLIP_MEAN,
    CLIP_STD,
    FILL,
    OPS,
    ORIGINAL_POLICY,
    AutoAugment,
    EvalTransform,
    TrainTransform,
    apply_op,
    build_transform,
    random_resized_crop_box,
)


def _quadrants(w=300, h=120):
    """A wide image with four coloured quadrants: a crop would lose a corner colour, a squash keeps all four."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = (255, 0, 0)
    a[: h // 2, w // 2 :] = (0, 255, 0)
    a[h // 2 :, : w // 2] = (0, 0, 255)
    a[h // 2 :, w // 2 :] = (255, 255, 0)
    return Image.fromarray(a)


def test_eval_transform_squashes_bicubic_without_crop_and_normalises_with_clip_stats():
    image = _quadrants()
    x = EvalTransform(224)(image)
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    pixels = x * torch.tensor(CLIP_STD).view(3, 1, 1) + torch.tensor(CLIP_MEAN).view(3, 1, 1)
    corners = [pixels[:, 5, 5], pixels[:, 5, -6], pixels[:, -6, 5], pixels[:, -6, -6]]
    expected = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0)]
    for got, want in zip(corners, expected):
        torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float32), atol=0.02, rtol=0)
    manual = np.asarray(image.resize((224, 224), Image.Resampling.BICUBIC), np.float32) / 255
    manual = (manual - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    np.testing.assert_allclose(x.permute(1, 2, 0).numpy(), manual, atol=1e-5)
    gray = EvalTransform(32)(image.convert("L"))  # converted to RGB after the resize, as upstream
    assert gray.shape == (3, 32, 32)


def test_random_resized_crop_box_keeps_area_and_aspect_within_bounds():
    rng = random.Random(0)
    for _ in range(200):
        left, top, w, h = random_resized_crop_box(300, 200, (0.9, 1.0), (3 / 4, 4 / 3), rng)
        assert 0 <= left and left + w <= 300 and 0 <= top and top + h <= 200
        area = w * h / (300 * 200)
        assert 0.88 <= area <= 1.0 or (w, h) == (267, 200)  # rounding, or the clamped centre-crop fallback
    # an extreme aspect ratio can never fit: the centre crop clamped to the largest ratio
    assert random_resized_crop_box(1000, 100, rng=rng) == ((1000 - 133) // 2, 0, 133, 100)


def test_train_transform_is_reproducible_with_a_seeded_rng_and_flips_half_the_time():
    image = _quadrants()
    a = TrainTransform(64, rng=random.Random(1))(image)
    b = TrainTransform(64, rng=random.Random(1))(image)
    assert a.shape == (3, 64, 64)
    torch.testing.assert_close(a, b)
    plain = TrainTransform(64, auto_augment=None, rng=random.Random(2))
    flips = 0
    for _ in range(200):
        x = plain(image)
        flips += bool(x[1, 10, 4] > x[1, 10, 60])  # green (top right) now on the left
    assert 70 < flips < 130
    assert isinstance(build_transform(True), TrainTransform) and isinstance(
        build_transform(False), EvalTransform
    )
    assert isinstance(build_transform(True, use_augment=False), EvalTransform)


def test_auto_augment_original_policy_is_the_papers_imagenet_policy():
    assert len(ORIGINAL_POLICY) == 25 and all(len(sub) == 2 for sub in ORIGINAL_POLICY)
    assert ORIGINAL_POLICY[0] == (("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9))
    assert {name for sub in ORIGINAL_POLICY for name, _, _ in sub} <= set(OPS)
    assert FILL == (123, 117, 104)
    image = _quadrants(64, 64)
    out = AutoAugment(rng=random.Random(0))(image)
    assert out.size == image.size and out.mode == "RGB"


@pytest.mark.parametrize("name", OPS)
def test_every_auto_augment_op_keeps_size_and_mode(name):
    image = _quadrants(48, 40)
    out = apply_op(image, name, 7, random.Random(0))
    assert out.size == image.size and out.mode == "RGB"


def test_auto_augment_ops_have_timms_magnitude_scale():
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = Image.fromarray(np.stack([a] * 3, -1))
    np.testing.assert_array_equal(np.asarray(apply_op(image, "Invert", 0)), 255 - np.asarray(image))
    posterized = np.asarray(apply_op(image, "PosterizeOriginal", 5))  # int(5/10·4)+4 = 6 bits kept
    np.testing.assert_array_equal(posterized, np.asarray(image) & 0b11111100)
    assert apply_op(image, "PosterizeOriginal", 10) is image  # 8 bits: unchanged
    solarized = np.asarray(apply_op(image, "Solarize", 5))  # threshold int(0.5·256) = 128
    expected = np.where(np.asarray(image) >= 128, 255 - np.asarray(image), np.asarray(image))
    np.testing.assert_array_equal(solarized, expected)
    same = np.asarray(apply_op(image, "Color", 5))  # factor 1.0 on a grey image: unchanged
    np.testing.assert_array_equal(same, np.asarray(image))
    with pytest.raises(ValueError, match="valid ops"):
        apply_op(image, "Cutout", 5)
