"""WBDC model families: forward contract, gradients, masks, the CLIP vision tower on real JPEG photos
(built from a config and loaded from a folder saved here), and the full variants' sizes."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import BertConfig, BertModel, CLIPVisionConfig, CLIPVisionModel

import vmmlib.models.wbdc_baseline
import vmmlib.models.wbdc_dual
import vmmlib.models.wbdc_single  # noqa: F401  (registers the families)
from vmmlib.data.wbdc import reader as W
from vmmlib.models import create_model, list_models, model_options
from vmmlib.models.wbdc_video import VisionTower

TINY = list_models("wbdc_*_tiny")
C = 200


def make_batch(B=3, T=8, L=20, D=768, seed=0):
    """Video 0: all 8 frames; video 1: none; video 2: three. Text 1 has 5 real tokens."""
    g = torch.Generator().manual_seed(seed)
    frame_mask = torch.zeros(B, T)
    frame_mask[0], frame_mask[2, :3] = 1, 1
    frames = torch.randn(B, T, D, generator=g) * frame_mask.unsqueeze(-1)
    text_ids = torch.randint(104, 21128, (B, L), generator=g)
    text_ids[:, 0] = 101
    text_mask = torch.ones(B, L, dtype=torch.long)
    text_mask[1, 5:] = 0
    text_ids[1, 5:] = 0
    return {
        "frames": frames,
        "frame_mask": frame_mask,
        "text_ids": text_ids,
        "text_mask": text_mask,
        "labels": torch.tensor([3, 0, 199]),
        "id": ["a", "b", "c"],
    }


def _photo_pixels(T=3):
    """(2, T, 3, 224, 224) CLIP-normalised frames of real photographs (JPEG-encoded, then decoded)."""
    skdata = pytest.importorskip("skimage.data")
    photos = [skdata.astronaut(), skdata.chelsea(), skdata.coffee()]
    transform = W.FrameTransform(224, 224, "clip")
    frames = []
    for p in photos:
        buf = io.BytesIO()
        Image.fromarray(p).save(buf, format="JPEG", quality=90)
        frames.append(transform(W.decode_jpeg(buf.getvalue(), 224)))
    video = torch.stack(frames[:T])
    return torch.stack([video, video.flip(0)])


def _trainable(model):
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def _backward_random(out, seed=1):
    g = torch.Generator().manual_seed(seed)
    sum((v * torch.randn(v.shape, generator=g)).sum() for v in out.values()).backward()


def test_every_family_has_a_tiny_and_a_full_variant_taking_num_classes():
    assert TINY == ["wbdc_baseline_tiny", "wbdc_dual_stream_tiny", "wbdc_single_stream_tiny"]
    assert list_models("wbdc_*") == sorted(TINY + [n[: -len("_tiny")] for n in TINY])
    for name in TINY:
        assert {"num_classes", "vision_tower", "vision_model_dir", "text_model_dir"} <= set(
            model_options(name)
        )


@pytest.mark.parametrize("name", TINY)
def test_forward_shapes_finite_and_every_trainable_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = create_model(name)
    out = model(**make_batch())
    assert out["logits"].shape == (3, C) and out["embedding"].shape[0] == 3
    assert all(torch.isfinite(v).all() for v in out.values())
    _backward_random(out)
    params = _trainable(model)
    assert not [n for n, p in params if p.grad is None or p.grad.abs().sum() == 0]
    assert not [n for n, p in params if not torch.isfinite(p.grad).all()]


@pytest.mark.parametrize("name", TINY)
def test_padded_frames_and_tokens_do_not_change_the_output_in_eval_mode(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    batch = make_batch()
    g = torch.Generator().manual_seed(2)
    padded = dict(batch)
    padded["frames"] = torch.where(
        batch["frame_mask"].unsqueeze(-1) == 0,
        50 * torch.randn(batch["frames"].shape, generator=g),
        batch["frames"],
    )
    padded["text_ids"] = torch.where(
        batch["text_mask"] == 0,
        torch.randint(104, 21128, batch["text_ids"].shape, generator=g),
        batch["text_ids"],
    )
    shorter = {**batch, "frames": batch["frames"][:, :4], "frame_mask": batch["frame_mask"][:, :4]}
    changed = {**batch, "frames": batch["frames"].clone()}
    changed["frames"][2, 1] += 1.0
    with torch.no_grad():
        ref, pad, short, real = model(**batch), model(**padded), model(**shorter), model(**changed)
    torch.testing.assert_close(pad["logits"], ref["logits"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(short["logits"][1:], ref["logits"][1:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(real["logits"][2], ref["logits"][2], atol=1e-6)


def test_baseline_ignore_frame_mask_reproduces_the_official_nextvlad_that_aggregates_pads():
    torch.manual_seed(0)
    batch = make_batch()
    garbage = {
        **batch,
        "frames": torch.where(
            batch["frame_mask"].unsqueeze(-1) == 0, torch.ones_like(batch["frames"]), batch["frames"]
        ),
    }
    for ignore, expect_change in ((False, False), (True, True)):
        torch.manual_seed(0)
        model = create_model("wbdc_baseline_tiny", ignore_frame_mask=ignore).eval()
        with torch.no_grad():
            changed = not torch.allclose(model(**garbage)["logits"], model(**batch)["logits"], atol=1e-5)
        assert changed == expect_change
    assert create_model("wbdc_baseline_tiny").nextvlad.cluster_bn is None  # the baseline has no cluster BN


@pytest.mark.parametrize("name", ["wbdc_single_stream_tiny", "wbdc_dual_stream_tiny"])
def test_mean_all_pooling_is_the_seeds_mean_over_pads(name):
    torch.manual_seed(0)
    batch = make_batch()
    masked = create_model(name).eval()
    torch.manual_seed(0)
    seed = create_model(name, pooling="mean_all").eval()
    with torch.no_grad():
        assert not torch.allclose(seed(**batch)["embedding"], masked(**batch)["embedding"], atol=1e-4)


@pytest.mark.parametrize("name", TINY)
def test_raw_frames_of_real_photos_train_the_top_vit_layers_only(name):
    torch.manual_seed(0)
    model = create_model(name, vision_tower=True)  # tiny ViT: 2 layers, the top 1 trainable
    pixels = _photo_pixels()
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    batch = {
        "frames": pixels * mask[..., None, None, None],
        "frame_mask": mask,
        "text_ids": torch.randint(104, 21128, (2, 12)),
        "text_mask": torch.ones(2, 12, dtype=torch.long),
    }
    out = model(**batch)
    assert out["logits"].shape == (2, C) and torch.isfinite(out["logits"]).all()
    _backward_random(out)
    clip = model.vision.clip
    top, bottom = clip.encoder.layers[1], clip.encoder.layers[0]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in top.parameters())
    assert all(not p.requires_grad and p.grad is None for p in bottom.parameters())
    assert not clip.embeddings.patch_embedding.weight.requires_grad
    with pytest.raises(ValueError, match="vision tower"):
        create_model(name)(**batch)  # pixels into a features model: a clear error


def test_vision_tower_features_skip_padded_frames_and_match_the_clip_pooler():
    torch.manual_seed(0)
    tower = VisionTower(
        None,
        1,
        num_hidden_layers=2,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=224,
        patch_size=32,
    ).eval()
    pixels = _photo_pixels()
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    with torch.no_grad():
        feats = tower(pixels, mask)
        direct = tower.clip(pixel_values=pixels[0, :2]).pooler_output
    assert feats.shape == (2, 3, 32)
    torch.testing.assert_close(feats[0, :2], direct, atol=1e-5, rtol=1e-5)
    assert feats[0, 2].abs().sum() == 0 and feats[1, 1:].abs().sum() == 0
    assert not torch.allclose(feats[0, 0], feats[0, 1])  # the astronaut and the cat differ


def test_vision_and_text_towers_load_from_local_folders_saved_here(tmp_path):
    torch.manual_seed(0)
    clip = CLIPVisionModel(
        CLIPVisionConfig(
            num_hidden_layers=3,
            hidden_size=48,
            num_attention_heads=2,
            intermediate_size=96,
            image_size=224,
            patch_size=32,
        )
    )
    clip.save_pretrained(tmp_path / "clip")
    bert = BertModel(
        BertConfig(
            vocab_size=500, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
        ),
        add_pooling_layer=False,
    )
    bert.save_pretrained(tmp_path / "bert")
    model = create_model(
        "wbdc_single_stream_tiny",
        vision_tower=True,
        vision_model_dir=str(tmp_path / "clip"),
        vision_trainable_layers=2,
        text_model_dir=str(tmp_path / "bert"),
    )
    assert (
        model.vision.dim == 48 and model.frame_map.in_features == 48 and model.bert.config.hidden_size == 32
    )
    torch.testing.assert_close(
        model.vision.clip.encoder.layers[2].mlp.fc1.weight, clip.encoder.layers[2].mlp.fc1.weight
    )
    torch.testing.assert_close(
        model.bert.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight
    )
    trainable = {
        n.split(".")[2]
        for n, p in model.vision.clip.named_parameters()
        if p.requires_grad and ".layers." in n
    }
    assert trainable == {"1", "2"}
    pixels = _photo_pixels(2)
    out = model(
        frames=pixels,
        frame_mask=torch.ones(2, 2),
        text_ids=torch.randint(5, 500, (2, 6)),
        text_mask=torch.ones(2, 6, dtype=torch.long),
    )
    assert out["logits"].shape == (2, C)
    with pytest.raises(FileNotFoundError, match="config.json"):
        create_model("wbdc_dual_stream_tiny", vision_tower=True, vision_model_dir=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="CLIP vision"):
        create_model("wbdc_dual_stream_tiny", vision_tower=True, vision_model_dir=str(tmp_path / "bert"))


def test_single_stream_pretraining_heads_are_built_on_request_only():
    assert create_model("wbdc_single_stream_tiny").heads is None
    model = create_model("wbdc_single_stream_tiny", pretrain_heads=True)
    assert model.logit_scale.item() == pytest.approx(np.log(1 / 0.07))
    with pytest.raises(ValueError, match="pretrain_heads=True"):
        create_model("wbdc_single_stream_tiny").mlm_logits(torch.zeros(1, 2, 64))


# ---- sizes of the full variants (built on the meta device: no memory, no init cost)


def _linear(i, o, bias=True):
    return i * o + (o if bias else 0)


H, FFN_DIM = 768, 3072
BERT_BASE_CHINESE = 102_267_648  # BertModel of bert-base-chinese, pooler included
BERT_POOLER = _linear(H, H)
ATTENTION = 4 * _linear(H, H) + 2 * H  # Q, K, V, output dense, LayerNorm
FFN = _linear(H, FFN_DIM) + _linear(FFN_DIM, H) + 2 * H
VIDEO_EMBEDDINGS = 64 * H + H + 2 * H  # positions, token type, LayerNorm


def _expected(name):
    if name == "wbdc_baseline":  # NeXtVLAD(768, K=64, G=8, λ=2, out 1024) without cluster BN
        nextvlad = _linear(768, 1536) + _linear(1536, 8) + 1536 * 512 + 192 * 64 + _linear(192 * 64, 1024)
        se = 2 * 1024 * 128 + 2 * 512 * 64
        return BERT_BASE_CHINESE + nextvlad + se + _linear(1024 + 768, 512) + _linear(512, C)
    base = BERT_BASE_CHINESE - BERT_POOLER + _linear(768, H) + VIDEO_EMBEDDINGS
    if name == "wbdc_single_stream":
        return base + _linear(H, C)
    # dual: video CLS, 6 video BERT layers, 3 LXMERT cross layers (one cross-attention shared by both
    # directions, a self-attention and an FFN per stream), classifier on 2H
    cross = 3 * ATTENTION + 2 * FFN
    return base + H + 6 * (ATTENTION + FFN) + 3 * cross + _linear(2 * H, C)


@pytest.mark.parametrize("name", ["wbdc_baseline", "wbdc_single_stream", "wbdc_dual_stream"])
def test_full_variant_parameter_count_matches_the_architecture(name):
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == _expected(name)
    with torch.device("meta"):
        vit = create_model(name, vision_tower=True).vision.clip
    assert (
        sum(p.numel() for p in vit.parameters()) == 87_456_000
    )  # CLIP ViT-B/32 vision tower (with pooler LN)


def test_a_model_with_a_vision_tower_fed_features_of_its_width_bypasses_it():
    # seed 001's single-stream pretraining: zip_feats into a model whose ViT is built for fine-tuning
    from vmmlib.models.wbdc_video import frame_inputs

    tower = create_model("wbdc_single_stream_tiny", vision_tower=True).vision
    feats = torch.randn(2, 3, tower.dim)
    assert frame_inputs(tower, feats, torch.ones(2, 3)) is feats
    with pytest.raises(ValueError, match="raw frames .* or features of its vision tower's width"):
        frame_inputs(tower, torch.randn(2, 3, tower.dim + 1), torch.ones(2, 3))
