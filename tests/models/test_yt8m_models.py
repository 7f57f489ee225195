"""YT8M families (seed 003): MoE, NetVLAD, NeXtVLAD/MixNeXtVLAD frame draws, FrameBERT/BertCross pooling.

The shared forward/gradient/padding/parameter-count checks of every tiny and full variant live in
test_registry.py; this file checks the parts against hand computations and the seed's flags.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from vmmlib.models import create_model
from vmmlib.models.moe import LogisticClassifier, MoEClassifier
from vmmlib.models.yt8m_bert import pool_frames, random_window
from vmmlib.models.yt8m_vlad import NetVLAD, draw_frames
from vmmlib.objectives.losses import mixture_distillation


def _segments(B=3, T=5, seed=0):
    """Frames (B, T, 1152) and mask: example 0 complete, 1 with 2 frames, 2 with 4 frames."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(B, T)
    mask[0], mask[1, :2], mask[2, :4] = 1, 1, 1
    return torch.randn(B, T, 1152, generator=g) * mask.unsqueeze(-1), mask


def _with_garbage_pads(frames, mask, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.where(mask.unsqueeze(-1) == 0, 100 * torch.randn(frames.shape, generator=g), frames)


# ---------------------------------------------------------------- MoE


def _sigmoid(z):
    return 1 / (1 + math.exp(-z))


def test_moe_probability_equals_a_hand_computation_with_the_dummy_expert():
    moe = MoEClassifier(in_dim=2, num_classes=2, num_mixtures=2)
    x = [0.5, -1.0]
    gate_w = [[0.1, 0.2], [0.3, -0.4], [0.0, 0.5], [-0.2, 0.1], [0.7, 0.3], [0.05, -0.6]]  # (C·(E+1), D)
    expert_w = [[0.4, -0.1], [0.2, 0.2], [-0.3, 0.6], [0.9, 0.0]]  # (C·E, D)
    expert_b = [0.1, -0.2, 0.3, 0.0]
    with torch.no_grad():
        moe.gates.weight.copy_(torch.tensor(gate_w))
        moe.experts.weight.copy_(torch.tensor(expert_w))
        moe.experts.bias.copy_(torch.tensor(expert_b))
    out = moe(torch.tensor([x]))

    def dot(w, b=0.0):
        return w[0] * x[0] + w[1] * x[1] + b

    expected = []
    for c in range(2):  # gate column c·(E+1) + e, expert column c·E + e (the TF reshape layout)
        g = [math.exp(dot(gate_w[c * 3 + e])) for e in range(3)]
        p = sum(g[e] / sum(g) * _sigmoid(dot(expert_w[c * 2 + e], expert_b[c * 2 + e])) for e in range(2))
        expected.append(p)
    torch.testing.assert_close(out["probs"], torch.tensor([expected]))
    torch.testing.assert_close(out["logits"], torch.logit(torch.tensor([expected])))


def test_moe_probabilities_stay_in_the_unit_interval_and_logits_are_finite_for_extreme_inputs():
    torch.manual_seed(0)
    moe = MoEClassifier(16, 50, num_mixtures=5, prob_gating=True).eval()
    out = moe(torch.randn(8, 16) * 1e3)
    assert ((out["probs"] >= 0) & (out["probs"] <= 1)).all()
    assert torch.isfinite(out["logits"]).all()
    assert out["logits"].abs().max() <= math.log((1 - 1e-6) / 1e-6) + 1e-3  # clamped before the logit


def test_moe_prob_gating_multiplies_by_sigmoid_of_batchnormed_gated_probabilities():
    torch.manual_seed(0)
    plain = MoEClassifier(6, 4, num_mixtures=2).eval()
    gated = MoEClassifier(6, 4, num_mixtures=2, prob_gating=True).eval()
    gated.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        gated.prob_gating_bn.running_mean.uniform_(-1, 1)
        gated.prob_gating_bn.running_var.uniform_(0.5, 2)
    x = torch.randn(5, 6)
    p = plain(x)["probs"]
    bn = gated.prob_gating_bn
    g = p @ gated.prob_gating.weight.T  # p W_pp, W_pp (C, C)
    g = (g - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(gated(x)["probs"], p * torch.sigmoid(g))


def test_moe_and_logistic_l2_penalties_are_tf_l2_regularisers():
    torch.manual_seed(0)
    moe = MoEClassifier(5, 3, num_mixtures=2, l2=1e-6, prob_gating=True)
    expected = 1e-6 * (moe.gates.weight.square().sum() + moe.experts.weight.square().sum()) / 2
    torch.testing.assert_close(moe.l2_penalty(), expected)
    logistic = LogisticClassifier(5, 3, l2=1e-5)
    expected = 1e-5 * (logistic.fc.weight.square().sum() + logistic.fc.bias.square().sum()) / 2
    torch.testing.assert_close(logistic.l2_penalty(), expected)
    assert create_model("gated_netvlad_yt8m_tiny").classifier.l2 == 1e-6  # the seed's --moe_l2
    mix = create_model("mixnextvlad_yt8m_tiny", num_classes=4)
    torch.testing.assert_close(mix.l2_penalty(), sum(b.classifier.l2_penalty() for b in mix.branches))
    assert mix.branches[0].classifier.l2 == 1e-5  # --l2_penalty=1e-5 of the MixNeXtVLAD scripts


def test_moe_rejects_an_unknown_prob_gating_input():
    with pytest.raises(ValueError, match="prob_gating_input"):
        MoEClassifier(4, 3, prob_gating=True, prob_gating_input="logits")


# ---------------------------------------------------------------- NetVLAD


@pytest.mark.parametrize("cluster_bn", [True, False])
def test_netvlad_residual_aggregation_equals_the_direct_loop_formula(cluster_bn):
    torch.manual_seed(0)
    N, K, T = 6, 3, 5
    layer = NetVLAD(N, K, cluster_bn=cluster_bn).eval()
    if cluster_bn:
        with torch.no_grad():
            layer.cluster_bn.running_mean.uniform_(-1, 1)
            layer.cluster_bn.running_var.uniform_(0.5, 2)
            layer.cluster_bn.weight.uniform_(0.5, 1.5)
            layer.cluster_bn.bias.uniform_(-0.5, 0.5)
    frames = torch.randn(2, T, N)
    mask = torch.tensor([[1.0, 1, 1, 1, 1], [1, 0, 1, 1, 0]])  # a hole, not only trailing pads
    out = layer(frames, mask)

    W, c = layer.cluster_logits.weight, layer.centers[0]  # (K, N), (N, K)
    for b in range(2):
        v = torch.zeros(N, K)
        for i in range(T):
            if mask[b, i] == 0:
                continue
            logits = W @ frames[b, i]
            if cluster_bn:
                bn = layer.cluster_bn
                logits = (logits - bn.running_mean) / torch.sqrt(
                    bn.running_var + bn.eps
                ) * bn.weight + bn.bias
            else:
                logits = logits + layer.cluster_logits.bias
            a = torch.softmax(logits, 0)
            for k in range(K):
                v[:, k] += a[k] * (frames[b, i] - c[:, k])
        v = v / v.norm(dim=0, keepdim=True)  # intra-normalisation per cluster
        v = v.reshape(-1)  # feature-major, as TF's reshape of (N, K)
        torch.testing.assert_close(out[b], v / v.norm(), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["gated_netvlad_yt8m_tiny", "nextvlad_yt8m_tiny", "mixnextvlad_yt8m_tiny"])
def test_vlad_models_honour_the_mask_without_frame_draws(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, sample_frames=False).eval()
    frames, mask = _segments()
    with torch.no_grad():
        ref = model(frames=frames, frame_mask=mask)
        pad = model(frames=_with_garbage_pads(frames, mask), frame_mask=mask)
        short = model(frames=frames[:, :4], frame_mask=mask[:, :4])
    for key in ref.keys() & {"logits", "gate"}:
        torch.testing.assert_close(pad[key], ref[key])
        torch.testing.assert_close(short[key][1:], ref[key][1:])


def test_gated_and_plain_netvlad_differ_only_by_the_two_gatings():
    gated, plain = create_model("gated_netvlad_yt8m_tiny"), create_model("netvlad_yt8m_tiny")
    assert gated.gating is not None and gated.classifier.prob_gating is not None
    assert plain.gating is None and plain.classifier.prob_gating is None
    assert (gated.cfg.clusters, gated.cfg.hidden) == (4, 32)
    full = create_model("gated_netvlad_yt8m", num_classes=3, moe_mixtures=1)  # the seed's hs1024, cs8
    assert (full.cfg.clusters, full.cfg.hidden, full.cfg.iterations) == (8, 1024, 5)
    assert full.audio.cluster_logits.out_features == 4  # audio stream: K/2


# ---------------------------------------------------------------- frame draws


def test_random_draws_pick_only_valid_frames_and_inference_draws_tile_them_evenly():
    torch.manual_seed(0)
    frames = torch.arange(6.0).reshape(1, 6, 1).repeat(2, 1, 1)  # frame value = its time index
    mask = torch.tensor([[1.0, 1, 1, 1, 1, 0], [0, 1, 0, 1, 1, 0]])
    drawn, drawn_mask = draw_frames(frames, mask, 300, random=True)
    assert drawn.shape == (2, 300, 1) and drawn_mask.eq(1).all()
    assert set(drawn[0, :, 0].tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0}  # uniform over the 5 (p ≈ 1)
    assert set(drawn[1, :, 0].tolist()) == {1.0, 3.0, 4.0}
    tiled, _ = draw_frames(frames, mask, 300, random=False)
    assert torch.equal(tiled[0, :, 0], torch.arange(5.0).repeat_interleave(60))  # each frame 60 times
    assert torch.equal(tiled[1, :, 0], torch.tensor([1.0, 3.0, 4.0]).repeat_interleave(100))
    _, empty_mask = draw_frames(frames, torch.zeros(2, 6), 4, random=False)
    assert empty_mask.eq(0).all()


def _mix(**overrides):
    torch.manual_seed(0)
    return create_model("mixnextvlad_yt8m_tiny", num_classes=5, **overrides)


def test_mixnextvlad_is_deterministic_in_eval_and_random_in_training_and_with_the_seed_flag():
    frames, mask = _segments()
    model = _mix(dropout=0.0).eval()  # no dropout: in training only the frame draws can differ
    with torch.no_grad():
        a, b = model(frames=frames, frame_mask=mask), model(frames=frames, frame_mask=mask)
        torch.testing.assert_close(a["logits"], b["logits"], atol=0, rtol=0)
        model.train()
        c, d = model(frames=frames, frame_mask=mask), model(frames=frames, frame_mask=mask)
    assert not torch.allclose(c["logits"], d["logits"])
    seed = _mix(sample_at_inference=True).eval()
    with torch.no_grad():
        e, f = seed(frames=frames, frame_mask=mask), seed(frames=frames, frame_mask=mask)
    assert not torch.allclose(e["logits"], f["logits"])


def test_mixnextvlad_eval_tiling_equals_using_each_frame_once_when_frames_divide_iterations():
    # 8 draws of a 4-frame segment: each frame twice; NeXtVLAD sums then L2-normalises per cluster,
    # so the evenly tiled draws equal the frames themselves (the expected value of the seed's draw)
    frames, mask = _segments()
    tiled = _mix().eval()
    plain = _mix(sample_frames=False).eval()
    with torch.no_grad():
        out_tiled = tiled(frames=frames[2:], frame_mask=mask[2:])
        out_plain = plain(frames=frames[2:, :4], frame_mask=mask[2:, :4])
    torch.testing.assert_close(out_tiled["branch_logits"], out_plain["branch_logits"], atol=1e-4, rtol=1e-4)


def test_mixnextvlad_feature_axis_gate_is_the_seed_codes_per_frame_mean():
    frames, mask = _segments()
    model = _mix(gate_input="feature_axis").eval()
    assert model.gate_bn.num_features == 8  # (B, iterations): one value per drawn frame
    with torch.no_grad():
        out = model(frames=frames, frame_mask=mask)
    drawn, _ = draw_frames(frames, mask, 8, random=False)
    x = model.gate_bn(drawn.mean(-1))
    torch.testing.assert_close(out["gate"], torch.softmax(model.gate(x), -1))
    unsampled = _mix(gate_input="feature_axis", sample_frames=False, max_frames=5).eval()
    unsampled(frames=frames, frame_mask=mask)
    with pytest.raises(ValueError, match="feature_axis"):
        unsampled(frames=frames[:, :4], frame_mask=mask[:, :4])


def test_mixnextvlad_outputs_feed_the_distillation_loss():
    frames, mask = _segments()
    out = _mix()(frames=frames, frame_mask=mask)
    loss = F.binary_cross_entropy_with_logits(out["logits"], torch.ones(3, 5))
    loss = loss + 9 * mixture_distillation(out["branch_logits"], out["logits"], temperature=3.0)
    loss.backward()
    assert torch.isfinite(loss)


# ---------------------------------------------------------------- NeXtVLAD parameter counts


def test_nextvlad_yt8m_streams_match_the_paper_weight_formula():
    # λN(N + G + K(G + (H+1)/G)): weights without biases and BNs, including this stream's share of the
    # hidden FC (NeXtVLAD paper §3.2); video N=1024 K=128 G=8, audio N=128 K=64 G=4, λ=2, H=2048
    with torch.device("meta"):
        model = create_model("nextvlad_yt8m")

    def weights(module):
        return sum(
            p.numel() for n, p in module.named_parameters() if not n.endswith("bias") and "bn" not in n
        )

    for stream, (N, K, G) in ((model.branch.video, (1024, 128, 8)), (model.branch.audio, (128, 64, 4))):
        lam, H = 2, 2048
        assert weights(stream) == lam * N * (N + G + K * G) + lam * N * K * (H + 1) // G
        assert stream.fc.bias is None  # one bias-free hidden FC over the concatenation, split by stream
    assert weights(model.branch.video) == 71_352_320  # the paper's "≈71M" instance


# ---------------------------------------------------------------- FrameBERT / BertCross


def _capture_encoder_output(model, key=None):
    store = {}
    module = model.encoder if key is None else model.encoders[key]
    module.register_forward_hook(lambda m, i, o: store.__setitem__("h", o))
    return store


def test_framebert_first_takes_index_0_and_the_seed_last_flag_takes_index_minus_1():
    torch.manual_seed(0)
    first = create_model("framebert_first_yt8m_tiny", num_classes=5).eval()
    last = create_model("framebert_first_yt8m_tiny", num_classes=5, pooling="last").eval()
    last.load_state_dict(first.state_dict())
    frames = torch.randn(2, 5, 1152)
    mask = torch.ones(2, 5)
    h_first, h_last = _capture_encoder_output(first), _capture_encoder_output(last)
    with torch.no_grad():
        out_first, out_last = first(frames=frames, frame_mask=mask), last(frames=frames, frame_mask=mask)
    torch.testing.assert_close(h_first["h"], h_last["h"])  # same encoder, only the pooling differs
    torch.testing.assert_close(out_first["embedding"], h_first["h"][:, 0])
    torch.testing.assert_close(out_last["embedding"], h_last["h"][:, -1])
    assert not torch.allclose(out_first["logits"], out_last["logits"])


def test_last_pooling_takes_the_last_valid_frame_unless_padding_is_treated_as_frames():
    h = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    mask = torch.tensor([[1.0, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    pooled, _ = pool_frames(h, mask, "last")
    torch.testing.assert_close(pooled, torch.stack([h[0, 4], h[1, 1]]))
    pooled, _ = pool_frames(h, torch.ones_like(mask), "last")  # mask_padding=False: the seed's [:, -1]
    torch.testing.assert_close(pooled, h[:, -1])
    pooled, _ = pool_frames(h, mask, "none", num_frames=5)
    torch.testing.assert_close(pooled[1], torch.cat([h[1, 0], h[1, 1], torch.zeros(9)]))


def test_attention_pooling_weights_sum_to_one_skip_pads_and_weight_the_frames():
    torch.manual_seed(0)
    model = create_model("bertcross_attn_yt8m_tiny", num_classes=5).eval()
    frames, mask = _segments()
    store = _capture_encoder_output(model, "joint")
    with torch.no_grad():
        out = model(frames=frames, frame_mask=mask)
    w = out["pool_weights"]
    torch.testing.assert_close(w.sum(1), torch.ones(3))
    assert w[mask == 0].abs().max() == 0 and (w[mask == 1] > 0).all()
    h = store["h"]
    expected = torch.softmax((h @ model.query) / math.sqrt(h.shape[-1]) + (mask - 1) * 1e9, dim=1)
    torch.testing.assert_close(w, expected)
    torch.testing.assert_close(out["embedding"], (w.unsqueeze(-1) * h).sum(1))


def test_mask_padding_false_reproduces_the_seed_attending_to_padded_frames():
    torch.manual_seed(0)
    frames, mask = _segments()
    masked = create_model("framebert_mean_yt8m_tiny", num_classes=5).eval()
    seed = create_model("framebert_mean_yt8m_tiny", num_classes=5, mask_padding=False).eval()
    seed.load_state_dict(masked.state_dict())
    with torch.no_grad():
        out_seed = seed(frames=frames, frame_mask=mask)["probs"]
        out_all = masked(frames=frames, frame_mask=torch.ones_like(mask))["probs"]  # pads as frames
        out_masked = masked(frames=frames, frame_mask=mask)["probs"]
    torch.testing.assert_close(out_seed, out_all)
    torch.testing.assert_close(out_seed[0], out_masked[0])  # the complete segment agrees
    assert not torch.allclose(out_seed[1], out_masked[1])


def test_framebert_cuts_long_training_inputs_to_a_random_window_and_rejects_them_in_eval():
    torch.manual_seed(0)
    model = create_model("framebert_yt8m_tiny", num_classes=5)  # pooling "none" over 5 frames
    frames, mask = torch.randn(2, 30, 1152), torch.ones(2, 30)
    mask[1, 12:] = 0
    assert model(frames=frames, frame_mask=mask)["logits"].shape == (2, 5)
    with pytest.raises(ValueError, match="num_frames"):
        model.eval()(frames=frames, frame_mask=mask)

    window, window_mask = random_window(torch.arange(30.0).reshape(1, 30, 1).repeat(2, 1, 1), mask, 5)
    assert window_mask.eq(1).all()
    steps = window[..., 0]
    assert torch.equal(steps - steps[:, :1], torch.arange(5.0).expand(2, 5))  # contiguous
    assert steps[1].max() < 12  # inside the valid frames
    short, short_mask = random_window(frames[:, :3], torch.tensor([[1.0, 1, 0], [1, 1, 1]]), 5)
    assert short_mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]]  # the seed repeats, we mask
    torch.testing.assert_close(short[0, 2:], frames[0, 1].expand(3, 1152))


@pytest.mark.parametrize("use_position", ["sinusoidal", "learned"])
def test_position_options_make_the_encoder_order_aware(use_position):
    torch.manual_seed(0)
    model = create_model("framebert_mean_yt8m_tiny", num_classes=5, use_position=use_position).eval()
    frames, mask = torch.randn(1, 5, 1152), torch.ones(1, 5)
    with torch.no_grad():
        out = model(frames=frames, frame_mask=mask)["probs"]
        flipped = model(frames=frames.flip(1), frame_mask=mask)["probs"]
    assert not torch.allclose(out, flipped)
    plain = create_model("framebert_mean_yt8m_tiny", num_classes=5).eval()  # no positions: a set model
    with torch.no_grad():
        torch.testing.assert_close(
            plain(frames=frames, frame_mask=mask)["probs"],
            plain(frames=frames.flip(1), frame_mask=mask)["probs"],
        )


def test_bertcross_full_head_widths_are_128_16_144_and_layers_l_minus_1():
    with torch.device("meta"):
        model = create_model("bertcross_yt8m")
    for key, width, layers in (("rgb", 1024, 1), ("audio", 128, 1), ("joint", 1152, 1)):
        config = model.encoders[key].config
        assert config.hidden_size // config.num_attention_heads == width // 8
        assert len(model.encoders[key].encoder.layer) == layers
        assert config.intermediate_size == 3072
    with torch.device("meta"):
        l3 = create_model("bertcross_yt8m", num_layers=3)
    assert [len(l3.encoders[k].encoder.layer) for k in ("rgb", "audio", "joint")] == [2, 2, 1]


def test_unknown_pooling_and_position_choices_raise():
    with pytest.raises(ValueError, match="pooling"):
        create_model("framebert_yt8m_tiny", pooling="max")
    with pytest.raises(ValueError, match="use_position"):
        create_model("framebert_yt8m_tiny", use_position="rotary")
    with pytest.raises(ValueError, match="gate_input"):
        create_model("mixnextvlad_yt8m_tiny", gate_input="frames_text")
    with pytest.raises(ValueError, match="classifier"):
        create_model("nextvlad_yt8m_tiny", classifier="svm")
