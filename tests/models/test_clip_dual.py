"""CLIP dual encoder: forward contract, gradients, logit-scale init and clamp, weight-decay groups,
freeze_vision, clips of several frames, loading towers from local folders, full-size parameter count."""

import math

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    ChineseCLIPConfig,
    ChineseCLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
)

from vmmlib.models import list_models

# Imported inside the tests, not at collection: registering the family before tests/models/test_registry.py
# collects would add it to that file's batch-contract tests, which have no hook for it yet.
TINY = ["cnclip_vitb16_tiny"]


@pytest.fixture(autouse=True)
def clip_dual():
    import vmmlib.models.clip_dual as module

    return module


def create_model(name, **overrides):
    from vmmlib.models import create_model as create

    return create(name, **overrides)


def _batch(B=3, T=2, L=24, size=224, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = torch.randn(B, T, 3, size, size, generator=g)
    frame_mask = torch.ones(B, T)
    frame_mask[1:, 1] = 0
    text_ids = torch.randint(104, 21128, (B, L), generator=g)
    text_mask = torch.ones(B, L, dtype=torch.long)
    text_mask[1, 6:] = 0
    text_ids[:, 0] = 101
    text_ids[1, 6:] = 0
    return {
        "frames": frames,
        "frame_mask": frame_mask,
        "text_ids": text_ids,
        "text_mask": text_mask,
        "id": list("abc"),
    }


def test_the_tiny_and_full_variants_are_registered():
    assert list_models("cnclip*") == ["cnclip_vitb16", "cnclip_vitb16_tiny"]


@pytest.mark.parametrize("name", TINY)
def test_forward_gives_unit_features_the_initial_scale_and_gradients_to_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name)
    out = model(**_batch())
    assert out["image_features"].shape == out["text_features"].shape == (3, 64)
    torch.testing.assert_close(out["image_features"].norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out["text_features"].norm(dim=-1), torch.ones(3))
    assert out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-5)
    g = torch.Generator().manual_seed(1)
    loss = sum((v * torch.randn(v.shape, generator=g)).sum() for v in out.values())
    loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert not [n for n, p in params if p.grad is None or p.grad.abs().sum() == 0]
    assert all(torch.isfinite(p.grad).all() for _, p in params)


def test_one_side_alone_and_padding_do_not_change_features():
    torch.manual_seed(0)
    model = create_model("cnclip_vitb16_tiny").eval()
    batch = _batch()
    with torch.no_grad():
        both = model(**batch)
        images = model(frames=batch["frames"], frame_mask=batch["frame_mask"])
        texts = model(text_ids=batch["text_ids"], text_mask=batch["text_mask"])
        padded = {**batch, "frames": batch["frames"].clone(), "text_ids": batch["text_ids"].clone()}
        padded["frames"][1:, 1] = 1e3  # padded frames are never encoded
        padded["text_ids"][1, 6:] = 500  # masked tokens
        again = model(**padded)
        still = model(frames=batch["frames"][1:, 0])  # (B, 3, H, W): a still image = a clip of 1
    assert set(images) == {"image_features", "logit_scale"} and set(texts) == {"text_features", "logit_scale"}
    torch.testing.assert_close(images["image_features"], both["image_features"])
    torch.testing.assert_close(again["image_features"], both["image_features"])
    torch.testing.assert_close(again["text_features"], both["text_features"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(still["image_features"], both["image_features"][1:])


def test_a_clip_is_the_normalised_mean_of_its_normalised_frame_embeddings():
    torch.manual_seed(0)
    model = create_model("cnclip_vitb16_tiny").eval()
    frames = _batch()["frames"][:1]  # (1, 2, 3, H, W)
    with torch.no_grad():
        clip = model.encode_image(frames, torch.ones(1, 2))
        per_frame = model.encode_image(frames[0])  # each frame as a still image
    expected = torch.nn.functional.normalize(per_frame.mean(0, keepdim=True), dim=-1)
    torch.testing.assert_close(clip, expected)
    with torch.no_grad():
        empty = model.encode_image(frames, torch.zeros(1, 2))  # a clip without frames: zero features
    assert empty.shape == (1, 64) and empty.abs().sum() == 0


def test_logit_scale_is_clamped_to_zero_and_ln_100(clip_dual):
    LOGIT_SCALE_MAX = clip_dual.LOGIT_SCALE_MAX
    model = create_model("cnclip_vitb16_tiny")
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(7.0)
    model.clamp_logit_scale()
    assert model.logit_scale.item() == pytest.approx(LOGIT_SCALE_MAX) and LOGIT_SCALE_MAX == pytest.approx(
        4.6052, abs=1e-4
    )
    with torch.no_grad():
        model.logit_scale.fill_(-1.0)
    model.clamp_logit_scale()
    assert model.logit_scale.item() == 0.0


def test_param_groups_exclude_norms_biases_and_logit_scale_from_weight_decay(clip_dual):
    model = create_model("cnclip_vitb16_tiny")
    decay, no_decay = clip_dual.param_groups(model, 0.001)
    assert decay["weight_decay"] == 0.001 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert "logit_scale" in exempt and not decayed & exempt
    assert all(
        n.endswith("bias")
        or "LayerNorm" in n
        or "layer_norm" in n
        or "layrnorm" in n
        or "layernorm" in n
        or n == "logit_scale"
        for n in exempt
    )
    assert all(not n.endswith("bias") and "norm" not in n.lower() for n in decayed)
    assert "visual_projection.weight" in decayed and "text.embeddings.word_embeddings.weight" in decayed
    assert len(decayed) + len(exempt) == len(list(model.parameters()))


def test_freeze_vision_leaves_the_vision_tower_and_its_projection_without_gradients(clip_dual):
    model = create_model("cnclip_vitb16_tiny", freeze_vision=True)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("visual.", "visual_projection.")) for n in frozen)
    assert all(p.requires_grad for p in model.text.parameters()) and model.logit_scale.requires_grad
    out = model(**_batch(B=2))
    (out["image_features"] * out["text_features"]).sum().backward()
    assert all(p.grad is None for p in model.visual.parameters())
    assert sum(len(g["params"]) for g in clip_dual.param_groups(model, 0.1)) == len(
        list(model.parameters())
    ) - len(frozen)


SMALL = dict(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64)


def test_towers_load_from_local_folders(tmp_path, clip_dual):
    torch.manual_seed(0)
    vision = CLIPVisionModel(CLIPVisionConfig(**SMALL, image_size=64, patch_size=32))
    vision.save_pretrained(tmp_path / "vit")
    bert = BertModel(BertConfig(**SMALL, vocab_size=300), add_pooling_layer=False)
    bert.save_pretrained(tmp_path / "bert")
    config = clip_dual.ClipDualConfig(
        embed_dim=16, vision_model_dir=str(tmp_path / "vit"), text_model_dir=str(tmp_path / "bert")
    )
    model = clip_dual.ClipDual(config)
    for name, p in vision.state_dict().items():
        torch.testing.assert_close(model.visual.state_dict()[name], p)
    torch.testing.assert_close(
        model.text.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight
    )
    assert model.vocab_size == 300


def test_a_whole_chinese_clip_folder_loads_with_its_projections_and_scale(tmp_path):
    torch.manual_seed(0)
    config = ChineseCLIPConfig(
        text_config={**SMALL, "vocab_size": 200},
        vision_config={**SMALL, "image_size": 64, "patch_size": 32},
        projection_dim=16,
        logit_scale_init_value=3.0,
    )
    source = ChineseCLIPModel(config).eval()
    source.save_pretrained(tmp_path / "cnclip")
    model = create_model("cnclip_vitb16_tiny", clip_model_dir=str(tmp_path / "cnclip")).eval()
    pixels = torch.randn(2, 3, 64, 64)
    ids = torch.tensor([[101, 150, 160, 102], [101, 170, 102, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        out = model(frames=pixels, text_ids=ids, text_mask=mask)
        image = source.get_image_features(pixel_values=pixels).pooler_output
        text = source.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
    torch.testing.assert_close(
        out["image_features"], torch.nn.functional.normalize(image, dim=-1), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        out["text_features"], torch.nn.functional.normalize(text, dim=-1), atol=1e-5, rtol=1e-5
    )
    assert model.logit_scale.item() == pytest.approx(3.0)
    BertModel(BertConfig(**SMALL, vocab_size=200)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="chinese_clip"):
        create_model("cnclip_vitb16_tiny", clip_model_dir=str(tmp_path / "bert"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        create_model("cnclip_vitb16_tiny", clip_model_dir=str(tmp_path / "missing"))


def test_full_variant_has_chinese_clip_vit_b16_size():
    with torch.device("meta"):
        model = create_model("cnclip_vitb16")
    # ViT-B/16 (86.2M with its post-LN) + RoBERTa-wwm-ext-base without pooler (101.7M) + 2 projections + scale:
    # the 188M of Chinese-CLIP's ViT-B/16 model card
    assert sum(p.numel() for p in model.parameters()) == 188_262_913
