"""Every registered model: forward contract, finiteness, gradients, mask handling, sizes."""

import pytest
import torch

from vmmlib.models import UnknownModelError, create_model, list_models, model_options, register_model
from vmmlib.models._registry import model_module
from vmmlib.models.layers import NeXtVLAD

NUM_TAGS = 7
VOCAB = 21128
TINY = list_models("*_tiny")
FULL = [name for name in list_models() if not name.endswith("_tiny")]
YT8M_FAMILIES = ("vmmlib.models.yt8m_vlad", "vmmlib.models.yt8m_bert")  # frames-only YT8M batch contract
AV_FAMILIES = ("vmmlib.models.avfusion",)  # raw clips (B, T, 3, H, W), spectrograms, MAE masks
CLIP_FAMILIES = ("vmmlib.models.clip_dual",)  # MUGE: images (clips of frames) and texts, no labels
WBDC_FAMILIES = ("vmmlib.models.wbdc_baseline", "vmmlib.models.wbdc_single", "vmmlib.models.wbdc_dual")


def make_batch(num_tags=NUM_TAGS, B=3, T=32, L=32, vocab=VOCAB, seed=0):
    """Batch contract; video 0 has 32 frames, video 1 none, video 2 ten; title 1 is empty ([CLS][SEP])."""
    g = torch.Generator().manual_seed(seed)
    frame_mask = torch.zeros(B, T)
    frame_mask[0] = 1
    frame_mask[2, :10] = 1
    frames = torch.randn(B, T, 1536, generator=g) * frame_mask.unsqueeze(-1)
    lengths = [L, 2, 12]
    text_ids = torch.zeros(B, L, dtype=torch.long)
    text_mask = torch.zeros(B, L, dtype=torch.long)
    for i, n in enumerate(lengths):
        text_ids[i, :n] = torch.randint(104, vocab, (n,), generator=g)
        text_ids[i, 0], text_ids[i, n - 1] = 101, 102
        text_mask[i, :n] = 1
    labels = (torch.rand(B, num_tags, generator=g) < 0.3).float()
    return {
        "frames": frames,
        "frame_mask": frame_mask,
        "text_ids": text_ids,
        "text_mask": text_mask,
        "labels": labels,
        "id": [f"v{i}" for i in range(B)],
    }


def make_yt8m_batch(num_classes=NUM_TAGS, B=3, T=5, seed=0):
    """YT8M batch contract: 5-frame segments, 0 complete, 1 and 2 padded finals with 2 and 4 frames."""
    g = torch.Generator().manual_seed(seed)
    frame_mask = torch.zeros(B, T)
    frame_mask[0] = 1
    frame_mask[1, :2] = 1
    frame_mask[2, :4] = 1
    frames = torch.randn(B, T, 1152, generator=g) * frame_mask.unsqueeze(-1)
    labels = (torch.rand(B, num_classes, generator=g) < 0.3).float()
    return {
        "frames": frames,
        "frame_mask": frame_mask,
        "labels": labels,
        "label_weights": torch.ones(B, num_classes),
        "id": [f"v{i}:{5 * i}" for i in range(B)],
    }


def example(name):
    """Per-model example-batch hook, chosen by the model's family (its task's batch contract).

    Returns the constructor overrides, a batch, a shorter T that still holds every real frame of
    examples 1 and 2, and the outputs that padding must not change (the first also must change
    when a real frame of example 2 changes).
    """
    if model_module(name) in YT8M_FAMILIES:
        return {"num_classes": NUM_TAGS}, make_yt8m_batch(), 4, ("logits",)
    if model_module(name) in AV_FAMILIES:
        return {"num_classes": NUM_TAGS, "vocab_size": 60}, make_av_batch(name), 4, ("cls",)
    if model_module(name) in CLIP_FAMILIES:  # clips of 32-px images: 6, 2 and 4 real frames
        batch = make_batch()
        frames = torch.randn(3, 6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        mask = torch.tensor([[1] * 6, [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0]])
        batch = {
            "frames": frames,
            "frame_mask": mask,
            "text_ids": batch["text_ids"],
            "text_mask": batch["text_mask"],
        }
        return (
            {"image_size": 32, "patch_size": 16, "vocab_size": VOCAB},
            batch,
            4,
            ("image_features", "text_features"),
        )
    if model_module(name) in WBDC_FAMILIES:  # 768-d frame features, 200-way (here NUM_TAGS) logits
        batch = make_batch()
        return (
            {"num_classes": NUM_TAGS},
            {**batch, "frames": batch["frames"][..., :768]},
            16,
            ("logits", "embedding"),
        )
    return {"num_tags": NUM_TAGS}, make_batch(), 16, ("embedding", "tag_logits")


def make_av_batch(name, B=3, L=10):
    """Clips of 4 32-px frames, text, a 32×64 spectrogram, exact-count MAE masks, a shuffled pairing."""
    from vmmlib.objectives.masking import random_patch_mask, tube_mask

    g = torch.Generator().manual_seed(0)
    text_ids = torch.randint(5, 60, (B, L), generator=g)
    text_ids[:, 0], text_ids[:, -1] = 1, 2
    batch = {
        "frames": torch.randn(B, 4, 3, 32, 32, generator=g),
        "text_ids": text_ids,
        "text_mask": torch.ones(B, L, dtype=torch.long),
        "video_mask": tube_mask(B, 4, 16, tubelet_size=2, mask_ratio=0.75, generator=g),
        "vt_perm": torch.tensor([2, 1, 0]),
    }
    if "_vt" not in name:
        batch["audio"] = torch.randn(B, 1, 32, 64, generator=g)
        batch["audio_mask"] = random_patch_mask(B, 32, 0.3, generator=g)
    return batch


def check_yt8m_outputs(out, B=3, C=NUM_TAGS):
    assert out["logits"].shape == (B, C)
    if "probs" in out:  # MoE: a probability; logits = logit(clamped probs)
        assert out["probs"].shape == (B, C)
        assert ((out["probs"] >= 0) & (out["probs"] <= 1)).all()
        torch.testing.assert_close(torch.sigmoid(out["logits"]), out["probs"], atol=1e-5, rtol=1e-4)
    if "gate" in out:  # MixNeXtVLAD
        M = out["gate"].shape[1]
        assert M == 3
        assert out["branch_logits"].shape == (M, B, C)
        torch.testing.assert_close(out["gate"].sum(1), torch.ones(B))
        torch.testing.assert_close(out["logits"], (out["gate"].T.unsqueeze(-1) * out["branch_logits"]).sum(0))


def test_tiny_and_full_variants_are_registered_in_pairs():
    assert len(TINY) >= 5
    assert sorted(name + "_tiny" for name in FULL) == TINY


@pytest.mark.parametrize("name", TINY)
def test_tiny_model_forward_contract_finite_outputs_and_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    overrides, batch, _, _ = example(name)
    model = create_model(name, **overrides)
    out = model(**batch, mlm=True)  # unknown keys (labels, id, mlm for non-UNITER) are ignored

    if model_module(name) in YT8M_FAMILIES:
        check_yt8m_outputs(out)
    elif model_module(name) in WBDC_FAMILIES:
        assert out["logits"].shape == (3, NUM_TAGS)
    elif model_module(name) in AV_FAMILIES:
        assert (
            out["cls"].shape[0] == 3
            and out["itm_logits"].shape == (3, 2)
            and out["qa_logits"].shape == (3, NUM_TAGS)
        )
    elif model_module(name) in CLIP_FAMILIES:
        torch.testing.assert_close(out["image_features"].norm(dim=-1), torch.ones(3))
        torch.testing.assert_close(out["text_features"].norm(dim=-1), torch.ones(3))
    else:
        _check_qq_outputs(out)
    for key, value in out.items():
        assert torch.isfinite(value).all(), key

    # Random fixed weights rather than a plain sum: a sum of softmax or BatchNorm outputs is constant
    # in its inputs and would hide missing gradients behind exact zeros.
    g = torch.Generator().manual_seed(1)
    loss = sum((value * torch.randn(value.shape, generator=g)).sum() for value in out.values())
    loss.backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert not [n for n, p in params if p.grad is None], "parameters without a gradient"
    assert not [n for n, p in params if not torch.isfinite(p.grad).all()], "non-finite gradients"
    assert not [n for n, p in params if p.grad.abs().sum() == 0], "parameters with an all-zero gradient"


def _check_qq_outputs(out, B=3):
    assert out["embedding"].shape == (B, 256)
    assert out["tag_logits"].shape == (B, NUM_TAGS)
    if "gate" in out:  # MixNeXtVLAD
        M = out["gate"].shape[1]
        assert M == 3
        assert out["branch_tag_logits"].shape == (M, B, NUM_TAGS)
        assert out["branch_embeddings"].shape == (M, B, 256)
        torch.testing.assert_close(out["gate"].sum(1), torch.ones(B))
        mixed = (out["gate"].T.unsqueeze(-1) * out["branch_tag_logits"]).sum(0)
        torch.testing.assert_close(out["tag_logits"], mixed)
    if "vision_embedding" in out:  # the vision vector of the video without frames is zeroed
        assert out["vision_embedding"][..., 1, :].abs().max() == 0
        assert out["vision_embedding"][..., 0, :].abs().max() > 0
    if "mlm_logits" in out:
        assert out["mlm_logits"].shape == (B, 32, VOCAB)


@pytest.mark.parametrize("name", TINY)
def test_padded_frames_and_tokens_do_not_change_the_output_in_eval_mode(name):
    if model_module(name) in AV_FAMILIES:
        pytest.skip(
            "fixed-length clips without frame_mask: tests/models/test_avfusion_models.py covers text padding"
        )
    torch.manual_seed(0)
    overrides, batch, short_T, keys = example(name)
    model = create_model(name, **overrides).eval()
    g = torch.Generator().manual_seed(2)
    padded = {**batch}
    mask = batch["frame_mask"]
    frame_pad = (mask == 0).reshape(
        *mask.shape, *[1] * (batch["frames"].ndim - 2)
    )  # (B, T, 1...) any frame shape
    padded["frames"] = torch.where(
        frame_pad, 100 * torch.randn(batch["frames"].shape, generator=g), batch["frames"]
    )
    if "text_ids" in batch:
        text_pad = batch["text_mask"] == 0
        padded["text_ids"] = torch.where(
            text_pad, torch.randint(104, VOCAB, text_pad.shape, generator=g), batch["text_ids"]
        )
    changed = {**batch, "frames": batch["frames"].clone()}
    changed["frames"][2, 3] += 1.0  # a real frame
    # fewer pad frames: the same videos 1 and 2 with a shorter T (pads must not count at all)
    shorter = {
        **batch,
        "frames": batch["frames"][:, :short_T],
        "frame_mask": batch["frame_mask"][:, :short_T],
    }
    with torch.no_grad():
        ref, pad, real, short = model(**batch), model(**padded), model(**changed), model(**shorter)
    for key in keys:
        torch.testing.assert_close(pad[key], ref[key], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(short[key][1:], ref[key][1:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(real[keys[0]][2], ref[keys[0]][2], atol=1e-6)


def test_unknown_model_name_raises_an_error_listing_the_choices():
    with pytest.raises(KeyError) as err:
        create_model("nextvlad_does_not_exist")
    assert "qq_baseline_tiny" in str(err.value) and "uniter_qq" in str(err.value)
    with pytest.raises(ValueError):
        create_model("nextvlad_does_not_exist")
    assert isinstance(err.value, UnknownModelError)


def test_unknown_override_is_rejected_listing_the_models_options():
    with pytest.raises(
        ValueError, match=r"not_a_field for model 'qq_baseline_tiny'; valid options: .*num_tags"
    ):
        create_model("qq_baseline_tiny", not_a_field=1)


@pytest.mark.parametrize("name", list_models())
def test_every_model_lists_its_config_fields_as_options(name):
    options = model_options(name)
    assert options and len(set(options)) == len(options)
    if model_module(name) in CLIP_FAMILIES:  # a dual encoder has no class head
        assert set(options) >= {"embed_dim", "vocab_size"}
    else:
        assert set(options) >= ({"num_tags"} if "qq" in name else {"num_classes"})


def test_list_models_filters_with_fnmatch_patterns():
    assert list_models("*vlad*_qq*") == [
        "mixnextvlad_qq",
        "mixnextvlad_qq_tiny",
        "mixnextvlad_roformer_qq",
        "mixnextvlad_roformer_qq_tiny",
    ]
    assert list_models("uniter*_tiny") == ["uniter_qq_tiny", "uniter_roformer_qq_tiny"]
    assert list_models("no_such_*") == []
    assert list_models() == sorted(list_models())


def test_registering_a_name_twice_raises():
    def qq_baseline_tiny():  # same name as a registered factory
        raise AssertionError

    with pytest.raises(ValueError, match="already registered"):
        register_model(qq_baseline_tiny)


# ---- sizes: full variants are only constructed (on the meta device: no memory, no init cost) ----


def _count(module, trainable_only=True):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _linear(i, o, bias=True):
    return i * o + (o if bias else 0)


BERT_BASE_CHINESE = 102_267_648  # BertModel of bert-base-chinese, pooler included
BERT_POOLER = _linear(768, 768)
BERT_POSITIONS = 512 * 768  # RoFormer has rotary positions instead (a frozen sinusoid table)
NEXTVLAD_QQ = (  # N=1536, λ=2, G=8, K=64, out 1024: expand, attention, cluster FC + BN, centres, FC
    _linear(1536, 3072) + _linear(3072, 8) + 3072 * 512 + 2 * 512 + 384 * 64 + _linear(384 * 64, 1024)
)


def _concat_dense_se(in_dim):
    return _linear(in_dim, 256) + 2 * 256 * 32


def _bn(n):  # BatchNorm / LayerNorm affine parameters
    return 2 * n


def _moe(d, C=3862, E=5, prob_gating=False):  # gates (no bias), experts, optional W_pp + BN
    return d * C * (E + 1) + _linear(d, C * E) + (C * C + _bn(C) if prob_gating else 0)


def _netvlad(N, K):  # cluster FC without bias (BN instead), cluster BN, centres
    return N * K + _bn(K) + N * K


def _nextvlad_yt8m(N, K, G, H=2048, lam=2):  # expand, attention, cluster FC + BN, centres, VLAD BN, FC_H
    D = lam * N // G
    return (
        _linear(N, lam * N)
        + _linear(lam * N, G)
        + lam * N * G * K
        + _bn(G * K)
        + D * K
        + _bn(D * K)
        + D * K * H
    )


def _nextvlad_branch(K, r, H=2048):  # video + audio streams, hidden BN, SE with BN, logistic head
    streams = _nextvlad_yt8m(1024, K, 8, H) + _nextvlad_yt8m(128, K // 2, 4, H)
    return streams + _bn(H) + 2 * H * (H // r) + _bn(H // r) + _linear(H, 3862)


def _bert_layer(D, inter=3072):  # Q, K, V, attention output, 2 LayerNorms, FFN
    return 4 * _linear(D, D) + 2 * _bn(D) + _linear(D, inter) + _linear(inter, D)


def _expected_yt8m(name):
    vlad = _netvlad(1024, 8) + _netvlad(128, 4)
    netvlad = vlad + (1024 * 8 + 128 * 4) * 1024 + _bn(1024) + _linear(1024, 2048)
    counts = {
        "netvlad_yt8m": netvlad + _moe(2048),
        "gated_netvlad_yt8m": netvlad + 2048 * 2048 + _bn(2048) + _moe(2048, prob_gating=True),
        "nextvlad_yt8m": _nextvlad_branch(128, 8),
        "mixnextvlad_yt8m": 3 * _nextvlad_branch(112, 16) + _bn(1152) + _linear(1152, 3),
        "framebert_yt8m": 2 * _bert_layer(1152) + _moe(5 * 1152),
        "framebert_l3_yt8m": 3 * _bert_layer(1152) + _moe(5 * 1152),
        "framebert_mean_yt8m": 2 * _bert_layer(1152) + _moe(1152),
        "framebert_first_yt8m": 2 * _bert_layer(1152) + _moe(1152),
        "bertcross_yt8m": _bert_layer(1024) + _bert_layer(128) + _bert_layer(1152) + _moe(1152),
    }
    counts["bertcross_attn_yt8m"] = counts["bertcross_yt8m"] + 1152  # the attention-pooling query
    return counts[name]


def _expected_full(name, C=10000):
    if name == "cnclip_vitb16":
        return 188_262_913  # Chinese-CLIP ViT-B/16 + RoBERTa-wwm-base: "188M" (its README)
    if model_module(name) in WBDC_FAMILIES + AV_FAMILIES:
        pytest.skip(
            "exact counts of these families: tests/models/test_wbdc_models.py, test_avfusion_models.py"
        )
    if model_module(name) in YT8M_FAMILIES:
        return _expected_yt8m(name)
    head = _linear(256, C)
    if name == "qq_baseline":
        return BERT_BASE_CHINESE + NEXTVLAD_QQ + _concat_dense_se(768 + 1024) + head
    if name.startswith("mixnextvlad"):
        branch = NEXTVLAD_QQ + _concat_dense_se(1024 + 1024) + head
        gate = 2 * (1536 + 1024) + _linear(1536 + 1024, 3)
        total = BERT_BASE_CHINESE + _linear(768, 1024) + 3 * branch + gate
        return total - (BERT_POSITIONS if "roformer" in name else 0)  # own pooler replaces BERT's
    if name.startswith("uniter"):
        mlm = _linear(256, 768) + 2 * 768 + 21128
        total = BERT_BASE_CHINESE - BERT_POOLER + _linear(1536, 768) + _linear(768, 256) + head + mlm
        return total - (BERT_POSITIONS if "roformer" in name else 0)
    raise AssertionError(name)


@pytest.mark.parametrize("name", FULL)
def test_full_variant_parameter_count_matches_the_architecture(name):
    with torch.device("meta"):
        model = create_model(name)
    assert _count(model) == _expected_full(name)


def test_nextvlad_weight_count_matches_the_paper_formula():
    # λN(N + G + K(G + (H+1)/G)) counts the weights without biases and BN (NeXtVLAD paper §3.2)
    lam, N, G, K, H = 2, 1024, 8, 128, 2048
    with torch.device("meta"):
        layer = NeXtVLAD(N, K, G, lam, H, cluster_bn=True)
    weights = sum(p.numel() for n, p in layer.named_parameters() if not n.endswith("bias") and "bn" not in n)
    assert weights == lam * N * (N + G + K * G) + lam * N * K * (H + 1) // G


def test_cluster_bn_is_on_by_default_and_switchable_to_the_tf_baseline():
    assert create_model("qq_baseline_tiny").nextvlad.cluster_bn is not None
    assert create_model("qq_baseline_tiny", cluster_bn=False).nextvlad.cluster_bn is None
    assert create_model("qq_baseline_tiny", vlad_bn=True).nextvlad.vlad_bn is not None


def test_uniter_mean_all_pooling_reproduces_the_seed_mean_over_pads():
    torch.manual_seed(0)
    batch = make_batch()
    model = create_model("uniter_qq_tiny", num_tags=NUM_TAGS, pooling="mean_all").eval()
    with torch.no_grad():
        out = model(**batch)
    torch.testing.assert_close(out["embedding"], out["sequence"].mean(1))
    mask = torch.cat([batch["text_mask"].float(), batch["frame_mask"]], 1).unsqueeze(-1)
    masked = (out["sequence"] * mask).sum(1) / mask.sum(1)
    assert not torch.allclose(out["embedding"], masked, atol=1e-4)


def test_nextvlad_cluster_bn_statistics_in_training_ignore_padded_frames():
    torch.manual_seed(0)
    layer = NeXtVLAD(1536, clusters=8, groups=4, expansion=1, output_dim=32, dropout=0.0).train()
    batch = make_batch()
    frames, mask = batch["frames"][:, :16].clone(), batch["frame_mask"][:, :16].clone()
    mask[0, 12:] = 0  # every video now ends within 16 frames: T=16 and T=32 carry the same real frames
    long_frames = torch.cat([frames * mask.unsqueeze(-1), torch.randn(3, 16, 1536)], 1)
    long_mask = torch.cat([mask, torch.zeros(3, 16)], 1)
    short = layer(frames, mask)
    stats = layer.cluster_bn.running_mean.clone(), layer.cluster_bn.running_var.clone()
    layer.cluster_bn.reset_running_stats()
    long = layer(long_frames, long_mask)
    torch.testing.assert_close(long, short, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.cluster_bn.running_mean, stats[0])
    torch.testing.assert_close(layer.cluster_bn.running_var, stats[1])
