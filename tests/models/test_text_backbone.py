"""Text backbones: built from a config, or loaded from a local Hugging Face directory (never a hub)."""

import pytest
import torch

from vmmlib.models import build_text_backbone, create_model
from vmmlib.models.text import FULL_TEXT_SIZES, TitleEncoder


def _assert_same_weights(loaded, saved):
    expected = saved.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_full_bert_backbone_has_bert_base_chinese_size():
    with torch.device("meta"):
        with_pooler = build_text_backbone("bert", add_pooling_layer=True, **FULL_TEXT_SIZES)
        without = build_text_backbone("bert", **FULL_TEXT_SIZES)
    assert sum(p.numel() for p in with_pooler.parameters()) == 102_267_648
    assert without.pooler is None
    assert with_pooler.config.vocab_size == 21128


def test_tiny_backbones_are_built_from_a_config():
    bert = build_text_backbone("bert", vocab_size=500)
    roformer = build_text_backbone("roformer", vocab_size=500, num_hidden_layers=1)
    assert (bert.config.num_hidden_layers, bert.config.hidden_size, bert.config.vocab_size) == (2, 64, 500)
    assert (roformer.config.num_hidden_layers, roformer.config.model_type) == (1, "roformer")


def test_qq_baseline_loads_its_bert_from_a_local_directory(tmp_path):
    torch.manual_seed(0)
    saved = build_text_backbone(
        "bert", vocab_size=300, add_pooling_layer=True, hidden_size=32, num_attention_heads=4
    )
    saved.save_pretrained(tmp_path)
    model = create_model("qq_baseline_tiny", num_tags=5, text_model_dir=str(tmp_path))
    _assert_same_weights(model.text.backbone, saved)
    assert model.text.backbone.training  # a new model is in training mode throughout
    saved.half().save_pretrained(tmp_path / "fp16")  # a half-precision checkpoint loads as float32
    half = build_text_backbone("bert", tmp_path / "fp16", add_pooling_layer=True)
    assert {p.dtype for p in half.parameters()} == {torch.float32}
    assert model.text.pooler is None  # BERT's own (loaded) pooler is used


def test_mixnextvlad_and_uniter_load_a_roformer_directory_with_its_own_sizes(tmp_path):
    torch.manual_seed(0)
    saved = build_text_backbone(
        "roformer", vocab_size=300, num_hidden_layers=1, hidden_size=48, num_attention_heads=3
    )
    saved.save_pretrained(tmp_path)
    mix = create_model("mixnextvlad_roformer_qq_tiny", num_tags=5, text_model_dir=tmp_path, vocab_size=300)
    uniter = create_model("uniter_roformer_qq_tiny", num_tags=5, text_model_dir=tmp_path)
    _assert_same_weights(mix.text.backbone, saved)
    _assert_same_weights(uniter.encoder, saved)

    ids = torch.tensor([[101, 7, 8, 102, 0, 0]])
    batch = {
        "frames": torch.randn(1, 4, 1536),
        "frame_mask": torch.tensor([[1.0, 1.0, 0.0, 0.0]]),
        "text_ids": ids,
        "text_mask": (ids > 0).long(),
    }
    out = uniter.eval()(**batch, mlm=True)
    assert out["mlm_logits"].shape == (1, 6, 300)  # the decoder is tied to the loaded vocabulary
    assert mix.eval()(**batch)["embedding"].shape == (1, 256)


def test_loading_checks_kind_vocabulary_and_directory(tmp_path):
    build_text_backbone("bert", vocab_size=300).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="roformer"):
        build_text_backbone("roformer", tmp_path)
    with pytest.raises(ValueError, match="vocab_size"):
        build_text_backbone("bert", tmp_path, vocab_size=21128)
    with pytest.raises(FileNotFoundError):
        build_text_backbone("bert", tmp_path / "missing")
    with pytest.raises(ValueError, match="kind"):
        build_text_backbone("gpt2")


def test_title_encoder_pooling_uses_the_bert_pooler_or_the_cls_state():
    torch.manual_seed(0)
    bert = build_text_backbone("bert", vocab_size=300, add_pooling_layer=True).eval()
    ids = torch.tensor([[101, 5, 6, 102], [101, 102, 0, 0]])
    mask = (ids > 0).long()
    out = bert(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(TitleEncoder(bert, "pooler")(ids, mask), out.pooler_output)
    torch.testing.assert_close(TitleEncoder(bert, "cls")(ids, mask), out.last_hidden_state[:, 0])
    roformer = build_text_backbone("roformer", vocab_size=300)
    encoder = TitleEncoder(roformer, "pooler")  # HF RoFormer has no pooler: a dense+tanh is added
    assert encoder.pooler is not None and encoder(ids, mask).abs().max() <= 1
