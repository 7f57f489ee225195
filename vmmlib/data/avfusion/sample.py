"""Deterministic sample data for the text + audio + video task (seed 004 layout + ALPRO annotations).

    data_dir/
      train.csv, validation.csv       video,audio,text: relative paths under videos/, audio/, text/
      videos/<clip>.mp4               H.264 (yuv420p) + mono AAC soundtrack, `fps` frames per second
      audio/<clip>.wav                16-bit PCM mono, the same sound as the soundtrack
      text/<clip>.txt                 "<title>#<description>" (the seed derivative's title is before '#')
      retrieval/{train,val,test}.jsonl  {"caption", "clip_name"}: 2 captions per training video, 1 otherwise
      qa/{train,val,test}.jsonl       {"question", "answer", "video_id", "answer_type"}
      qa/train_ans2label.json         the training answers → labels (ALPRO's answer vocabulary)
      tokenizer/                      a DeBERTa-v2 (Unigram) tokenizer over the sample's words

Planted structure: every clip has a colour, a direction and a speed. The colour sets the moving
square's RGB and the tone's frequency; the direction sets where the square moves; the speed sets how
far per frame and how fast the tone pulses. Titles, descriptions, captions and QA answers name the
same factors (plus filler words), so text, video and audio all carry the clip's identity and a
model can learn to match them. Question types: what (colour), where (direction), how (speed).
Same arguments → byte-identical files; the folder is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from vmmlib.data._atomic import write_dataset_dir
from vmmlib.data.avfusion.reader import AnswerVocab, build_deberta_tokenizer
from vmmlib.io.media import write_video, write_wav

COLOURS = {"red": (220, 40, 40), "green": (40, 200, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
TONES = {"red": 330.0, "green": 550.0, "blue": 880.0, "yellow": 1320.0}  # Hz
DIRECTIONS = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}  # (dy, dx)
SPEEDS = {"slowly": (1, 2.0), "quickly": (3, 6.0)}  # pixels per frame, tone pulses per second
FILLER = "the a this clip shows video scene camera view we see here today look short simple".split()
SPLITS = ("train", "val", "test")


def _frames(rng, colour, direction, speed, num_frames, size) -> np.ndarray:
    bg = rng.integers(20, 60, 3)
    frames = np.empty((num_frames, size, size, 3), np.uint8)
    side = size // 4
    y, x = rng.integers(0, size - side, 2)
    (dy, dx), step = DIRECTIONS[direction], SPEEDS[speed][0]
    for t in range(num_frames):
        img = np.clip(bg + rng.normal(0, 6, (size, size, 3)), 0, 255)
        top, left = (y + dy * step * t) % (size - side), (x + dx * step * t) % (size - side)
        img[top : top + side, left : left + side] = COLOURS[colour]
        frames[t] = img.astype(np.uint8)
    return frames


def _sound(rng, colour, speed, seconds, sample_rate) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    pulse = 0.5 + 0.5 * np.sin(2 * np.pi * SPEEDS[speed][1] * t)
    wave = 0.3 * np.sin(2 * np.pi * TONES[colour] * t + rng.uniform(0, 2 * np.pi)) * pulse
    return (wave + rng.normal(0, 0.01, t.shape)).astype(np.float32)


def _caption(rng, colour, direction, speed) -> str:
    fill = " ".join(rng.choice(FILLER, size=int(rng.integers(1, 4))))
    forms = [
        f"{fill} {colour} square moving {direction} {speed}",
        f"a {colour} block goes {direction} {speed} {fill}",
        f"{speed} a {colour} box slides {direction}",
    ]
    return forms[int(rng.integers(len(forms)))]


def _questions(clip, colour, direction, speed) -> list[dict]:
    return [
        {"question": "what colour is the square", "answer": colour, "video_id": clip, "answer_type": "what"},
        {
            "question": "where does the square move",
            "answer": direction,
            "video_id": clip,
            "answer_type": "where",
        },
        {"question": "how does the square move", "answer": speed, "video_id": clip, "answer_type": "how"},
    ]


def _jsonl(path: Path, records: list[dict]) -> None:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records), encoding="utf-8"
    )


def _csv(path: Path, clips: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["video", "audio", "text"])
    writer.writerows([f"{c}.mp4", f"{c}.wav", f"{c}.txt"] for c in clips)
    path.write_text(buf.getvalue(), encoding="utf-8")


def write_avfusion_sample(
    out_dir: str | Path,
    *,
    videos: int = 60,
    val_videos: int = 12,
    test_videos: int = 12,
    num_frames: int = 16,
    frame_size: int = 64,
    fps: int = 8,
    sample_rate: int = 16000,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write the avfusion sample dataset (module docstring) into `out_dir`, atomically.

    Args:
        videos: clips in total; the last `val_videos` + `test_videos` form the val and test splits.
        num_frames, frame_size, fps: each mp4 has `num_frames` frames of frame_size² pixels (even).
        sample_rate: audio rate of the wav files and the AAC tracks.
        seed: same seed and sizes → byte-identical files.

    Returns:
        The dataset folder.
    """
    if videos - val_videos - test_videos < 1 or min(val_videos, test_videos) < 1:
        raise ValueError(
            f"need ≥ 1 clip per split, got {videos} videos with {val_videos} val and {test_videos} test"
        )
    args = (videos, val_videos, test_videos, num_frames, frame_size, fps, sample_rate, seed)
    return write_dataset_dir(out_dir, lambda tmp: _write(tmp, *args), overwrite=overwrite)


def _write(
    root: Path, videos, val_videos, test_videos, num_frames, frame_size, fps, sample_rate, seed
) -> None:
    rng = np.random.default_rng(seed)
    for sub in ("videos", "audio", "text", "retrieval", "qa", "tokenizer"):
        (root / sub).mkdir()
    n_train = videos - val_videos - test_videos
    split_of = ["train"] * n_train + ["val"] * val_videos + ["test"] * test_videos
    clips = {s: [] for s in SPLITS}
    retrieval = {s: [] for s in SPLITS}
    qa = {s: [] for s in SPLITS}
    texts = []
    for i, split in enumerate(split_of):
        clip = f"video{i:05d}"
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        direction = list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
        speed = list(SPEEDS)[int(rng.integers(len(SPEEDS)))]
        sound = _sound(rng, colour, speed, num_frames / fps, sample_rate)
        write_video(root / "videos" / f"{clip}.mp4", _frames(rng, colour, direction, speed, num_frames, frame_size),
                    fps, audio=sound, sample_rate=sample_rate)  # fmt: skip
        write_wav(root / "audio" / f"{clip}.wav", sound, sample_rate)
        text = f"{_caption(rng, colour, direction, speed)}#{_caption(rng, colour, direction, speed)}"
        (root / "text" / f"{clip}.txt").write_text(text + "\n", encoding="utf-8")
        captions = [_caption(rng, colour, direction, speed) for _ in range(2 if split == "train" else 1)]
        retrieval[split] += [{"caption": c, "clip_name": clip} for c in captions]
        qa[split] += _questions(clip, colour, direction, speed)
        clips[split].append(clip)
        texts += [text.replace("#", " "), *captions]
    _csv(root / "train.csv", clips["train"])
    _csv(root / "validation.csv", clips["val"])
    for split in SPLITS:
        _jsonl(root / "retrieval" / f"{split}.jsonl", retrieval[split])
        _jsonl(root / "qa" / f"{split}.jsonl", qa[split])
    AnswerVocab.from_answers([r["answer"] for r in qa["train"]]).write(root / "qa" / "train_ans2label.json")
    texts += [r["question"] for split in SPLITS for r in qa[split]]
    build_deberta_tokenizer(texts, root / "tokenizer")
