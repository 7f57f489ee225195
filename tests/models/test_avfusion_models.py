"""The text + audio + video fusion model: outputs, gradients, masks, pair shuffling, loading from folders.

The family is imported inside the tests (not at module level) so that collecting this file does not
register its models before tests/models/test_registry.py lists the registry with its QQ batch.
"""

import importlib

import numpy as np
import pytest
import torch

VOCAB = 60


@pytest.fixture(scope="module")
def fam():
    return importlib.import_module("vmmlib.models.avfusion")


def make_batch(B=3, L=10, seed=0, audio=True):
    g = torch.Generator().manual_seed(seed)
    text_ids = torch.randint(5, VOCAB, (B, L), generator=g)
    text_ids[:, 0] = 1
    text_mask = torch.ones(B, L, dtype=torch.long)
    text_mask[1, 6:] = 0
    text_ids[1, 5], text_ids[1, 6:] = 2, 0
    text_ids[:, -1] = torch.where(text_mask[:, -1] == 1, 2, 0)
    batch = {
        "frames": torch.randn(B, 4, 3, 32, 32, generator=g),
        "text_ids": text_ids,
        "text_mask": text_mask,
    }
    if audio:
        batch["audio"] = torch.randn(B, 1, 32, 64, generator=g)
    return batch


def masks(model, B=3, seed=0):
    from vmmlib.objectives.masking import random_patch_mask, tube_mask

    g = torch.Generator().manual_seed(seed)
    video = tube_mask(B, 4, 16, tubelet_size=2, mask_ratio=0.75, generator=g)
    audio = random_patch_mask(B, 32, 0.3, generator=g) if model.audio is not None else None
    return video, audio


@pytest.mark.parametrize("name", ["avfusion_tiny", "avfusion_vt_tiny"])
def test_pretraining_forward_shapes_finite_and_every_parameter_gets_a_gradient(fam, name):
    from vmmlib.models import create_model

    torch.manual_seed(0)
    model = create_model(name, vocab_size=VOCAB, num_classes=5)
    batch = make_batch(audio=model.audio is not None)
    video_mask, audio_mask = masks(model)
    perm = torch.tensor([2, 1, 0])
    out = model(**batch, video_mask=video_mask, audio_mask=audio_mask, vt_perm=perm, mlm=True)
    assert out["cls"].shape == (3, 32) and out["itm_logits"].shape == (3, 2)
    assert out["video_embedding"].shape == out["text_embedding"].shape == (3, 32)
    assert out["qa_logits"].shape == (3, 5) and out["mlm_logits"].shape == (3, 10, VOCAB)
    assert out["video_pred"].shape == (3, 2 * 12, 2 * 8 * 8 * 3)  # 2 tubelets x 12 masked patches
    if model.audio is not None:
        assert out["audio_pred"].shape == (3, 32 - int(32 * 0.7), 8 * 8)
    else:
        assert "audio_pred" not in out
    for key, value in out.items():
        assert torch.isfinite(value).all(), key
    g = torch.Generator().manual_seed(1)
    sum((v * torch.randn(v.shape, generator=g)).sum() for v in out.values()).backward()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert not [n for n, p in params if p.grad is None], "parameters without a gradient"
    assert not [n for n, p in params if not torch.isfinite(p.grad).all()]
    # the frozen sin-cos positions of the audio tower are the only parameters not trained
    assert not [n for n, p in params if p.grad.abs().sum() == 0]


def test_padding_tokens_do_not_change_the_outputs_in_eval_mode(fam):
    model = fam.avfusion_tiny(vocab_size=VOCAB).eval()
    batch = make_batch()
    padded = {**batch, "text_ids": batch["text_ids"].clone()}
    padded["text_ids"][1, 6:] = 7
    with torch.no_grad():
        a, b = model(**batch), model(**padded)
    for key in a:
        torch.testing.assert_close(a[key], b[key])


def test_vt_perm_fuses_text_i_with_video_perm_i_and_mae_rows_stay_in_video_order(fam):
    model = fam.avfusion_tiny(vocab_size=VOCAB).eval()
    batch = make_batch()
    video_mask, audio_mask = masks(model)
    perm = torch.tensor([1, 2, 0])
    inverse = torch.argsort(perm)
    permuted = {**batch, "frames": batch["frames"][perm], "audio": batch["audio"][perm]}
    with torch.no_grad():
        shuffled = model(**batch, video_mask=video_mask, audio_mask=audio_mask, vt_perm=perm)
        direct = model(**permuted, video_mask=video_mask[perm], audio_mask=audio_mask[perm])
    torch.testing.assert_close(shuffled["cls"], direct["cls"])
    torch.testing.assert_close(shuffled["video_pred"], direct["video_pred"][inverse])
    torch.testing.assert_close(shuffled["audio_pred"], direct["audio_pred"][inverse])
    torch.testing.assert_close(shuffled["video_embedding"], direct["video_embedding"][inverse])


def test_masks_with_unequal_counts_are_refused(fam):
    model = fam.avfusion_tiny(vocab_size=VOCAB)
    video_mask, _ = masks(model)
    video_mask[0, video_mask[0].nonzero()[0]] = False  # one fewer masked token in video 0
    with pytest.raises(ValueError, match="counts differ"):
        model(**make_batch(), video_mask=video_mask)
    with pytest.raises(ValueError, match="pass `audio`"):
        model(**{k: v for k, v in make_batch().items() if k != "audio"})


def test_encoders_load_from_local_folders_the_test_saves(fam, tmp_path):
    from transformers import BertConfig, BertModel, DebertaV2Model, VideoMAEModel, ViTMAEModel

    torch.manual_seed(0)
    source = fam.avfusion_tiny(vocab_size=VOCAB)
    source.text.save_pretrained(tmp_path / "text")
    source.video.save_pretrained(tmp_path / "video")
    source.audio.save_pretrained(tmp_path / "audio")
    fusion = BertModel(
        BertConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    )
    fusion.save_pretrained(tmp_path / "fusion")
    loaded = fam.avfusion_tiny(
        text_model_dir=str(tmp_path / "text"),
        video_model_dir=str(tmp_path / "video"),
        audio_model_dir=str(tmp_path / "audio"),
        fusion_model_dir=str(tmp_path / "fusion"),
    )
    assert isinstance(loaded.text, DebertaV2Model) and isinstance(loaded.video, VideoMAEModel)
    assert isinstance(loaded.audio, ViTMAEModel) and loaded.fusion_config.hidden_size == 48
    for part in ("text", "video", "audio"):
        for (name, p), q in zip(
            getattr(source, part).state_dict().items(), getattr(loaded, part).state_dict().values()
        ):
            torch.testing.assert_close(p, q, msg=f"{part}.{name}")
    assert loaded.training
    out = loaded(**make_batch())
    assert out["cls"].shape == (3, 48) and torch.isfinite(out["cls"]).all()
    with pytest.raises(ValueError, match="expected 'videomae'"):
        fam.avfusion_tiny(video_model_dir=str(tmp_path / "text"))
    with pytest.raises(ValueError, match="1 × \\(32, 32\\)"):
        fam.avfusion_tiny(audio_model_dir=str(tmp_path / "audio"), audio_time=32)
    with pytest.raises(FileNotFoundError, match="config.json"):
        fam.avfusion_tiny(text_model_dir=str(tmp_path / "nothing"))


def test_non_square_spectrogram_gets_sincos_positions_on_its_grid(fam):
    model = fam.avfusion_tiny(vocab_size=VOCAB)
    pos = model.audio.embeddings.position_embeddings[0]
    torch.testing.assert_close(pos, fam.sincos_2d(32, 4, 8))
    assert model.audio_grid == (4, 8)
    assert not model.audio.embeddings.position_embeddings.requires_grad


def test_full_variants_have_base_sized_towers(fam):
    with torch.device("meta"):
        model = fam.avfusion()
    assert model.video.config.hidden_size == 768 and model.video.config.num_hidden_layers == 12
    assert model.text.config.vocab_size == 128100 and model.audio_grid == (8, 64)
    assert model.video_tokens == 8 * 14 * 14


def test_itm_scorer_on_cached_encodings_matches_the_forward_pass_and_full_reranking(fam):
    from vmmlib.metrics.retrieval import gt_ranks, rerank_top_k

    torch.manual_seed(0)
    model = fam.avfusion_vt_tiny(vocab_size=VOCAB).eval()
    batch = make_batch(B=4, audio=False)
    with torch.no_grad():
        texts = model.encode_text(batch["text_ids"], batch["text_mask"])
        videos = model.encode_video(batch["frames"])
        direct = model(**batch, vt_perm=torch.tensor([1, 0, 3, 2]))["itm_logits"].softmax(-1)[:, 1]
    scorer = fam.itm_scorer(model, texts, batch["text_mask"], videos, batch_size=3)
    np_scores = scorer(np.arange(4), np.array([1, 0, 3, 2]))
    np.testing.assert_allclose(np_scores, direct.numpy(), rtol=1e-5, atol=1e-6)
    sim = (texts["text_embedding"] @ videos["video_embedding"].T).numpy()
    rows, cols = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    all_pairs = scorer(rows.ravel(), cols.ravel()).reshape(4, 4)  # ALPRO: ITM on every pair
    reranked = rerank_top_k(sim, 4, scorer)  # k = every video: the full ITM order
    assert gt_ranks(reranked, range(4)).tolist() == gt_ranks(all_pairs, range(4)).tolist()


def test_a_text_video_fine_tune_starts_from_a_pretraining_with_audio(fam, tmp_path):
    # the full pipeline pretrains `avfusion` (audio too) and fine-tunes `avfusion_vt` (ALPRO: no audio)
    from vmmlib.train.checkpoint import load_weights, save_weights

    torch.manual_seed(0)
    pretrained = fam.avfusion_tiny(vocab_size=VOCAB)
    save_weights(pretrained, tmp_path / "model.safetensors")
    vt = fam.avfusion_vt_tiny(vocab_size=VOCAB)
    with pytest.warns(UserWarning, match=r"weights of towers AVFusion was built without \(audio, audio_map"):
        load_weights(vt, tmp_path / "model.safetensors")
    assert torch.equal(vt.video_proj.weight, pretrained.video_proj.weight)
    assert torch.equal(vt.text.get_input_embeddings().weight, pretrained.text.get_input_embeddings().weight)
    # the other way round a tower is missing: refused, naming the file and the keys
    save_weights(vt, tmp_path / "vt.safetensors")
    with pytest.raises(
        RuntimeError, match=r"vt\.safetensors does not fit AVFusion: missing \d+ key\(s\): audio"
    ):
        load_weights(fam.avfusion_tiny(vocab_size=VOCAB), tmp_path / "vt.safetensors")
