"""`vmm extract`: a folder of videos → per-second frame features of any vision backbone, written in the
on-disk format of `qqbrowser`, `wbdc` or `yt8m`. Layouts, projection and writers are in
`vmmlib.extract.formats`; the backbone and the batched encoding loop in `vmmlib.extract.backbone`.

    vmm extract VIDEO_DIR OUT_DIR --format qqbrowser|wbdc|yt8m [--backbone DIR] [--texts FILE] [--split S]

- **Frames**: `fps` frames a second (1, as QQ Browser's "1 fps" and YouTube-8M's "every second"), the
  frame at or after each time `k / fps`, at most `max_frames` (300, YouTube-8M's cap). Decoded with
  PyAV (`vmmlib.io.media`), scaled at decode so the shorter side is the backbone's input size, centre
  cropped, normalised with the backbone's mean/std (its `preprocessor_config.json`, else CLIP's for
  CLIP-like models and ImageNet's otherwise).
- **Backbone**: any vision model in a local Hugging Face folder through `AutoModel` (a multimodal model
  such as CLIP gives its `vision_model`); the feature is `pooler_output` (CLIP: the post-layernorm
  [CLS], as WBDC rank 8 extracted), or the [CLS] token when the folder holds no trained pooler (ViT).
  Without a folder: a tiny ViT built from a config with fixed seed (for tests and smoke runs).
- **Audio** (YouTube-8M only): the video's own soundtrack, decoded with PyAV at 16 kHz mono, Kaldi
  fbank (`vmmlib.data.audio_features`, 64 mel bins as VGGish, 25 ms / 10 ms) over each second → the
  mean and standard deviation of each bin (128 values) → whitened PCA to 128 → quantised. Seconds
  past the end of the soundtrack, and videos without one, get zero features (uint8 128 after
  quantisation, ≈ 0 dequantised: the whitened mean, and frame- and video-level agree). The official
  extractor's `--insert_zero_audio_features` writes uint8 0 instead (−2 dequantised) with a
  `mean_audio` of 0.0; its own audio was VGGish embeddings, which no package here provides.
- **Batching**: decoding runs in `workers` threads, up to `prefetch` videos ahead; frames of
  consecutive videos fill backbone batches of `batch_size`, so short videos do not leave it idle.
  Memory is bounded by (prefetch + 1) decoded videos of at most `max_frames` frames each, one batch,
  and the PCA's D × D statistics; the output is streamed to disk.
- **Resumable**: every video's features are saved atomically to `OUT_DIR/extract/features/<split>/`
  as soon as they are computed, keyed by the video's name and `source_key` (size, mtime, a hash of
  its first 64 KiB); a later call skips those videos, and extracts a replaced one again. The dataset files are written (each
  atomically) once every video is done, from those features. A broken video is reported (path and
  reason), counted and skipped; it is tried again by the next call.
- **Projection**: see `vmmlib.extract.formats`; it is fitted when the dataset is first written and
  saved in `OUT_DIR/extract/`, then reused by every later call into that folder (or another, with
  `pca=`), so later videos use the same projection. Delete `extract/pca_*.npz` to refit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vmmlib.data.audio_features import kaldi_fbank
from vmmlib.data.yt8m.reader import AUDIO_DIM
from vmmlib.extract.backbone import FrameEncoder, encode_batched, load_backbone
from vmmlib.extract.formats import (
    CovarianceAccumulator,
    Projection,
    VideoFeatures,
    atomic_write,
    check_texts,
    complete_layout,
    first_free_shard,
    format_spec,
    read_texts,
    split_files,
    write_split,
)
from vmmlib.io.media import MediaError, probe_media, read_audio, read_frames
from vmmlib.io.safe import InputError, inside
from vmmlib.io.safe_npz import load_npz

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = tuple(".mp4 .mkv .webm .avi .mov .m4v .flv .mpg .mpeg .ts .3gp .wmv".split())
AUDIO_RATE, AUDIO_MEL_BINS = 16000, 64
WORK_DIR = "extract"
_BAD_ID_CHARS = set(" \t\n,:")  # break label.tsv, result.csv, segment ids "vid:start"


# ------------------------------------------------------------------------------------------ inputs


@dataclass(frozen=True)
class VideoFile:
    id: str  # the file name without its suffix
    path: Path


def list_videos(video_dir: str | Path) -> list[VideoFile]:
    """Video files under `video_dir` (recursively, by suffix), sorted by id.

    Raises:
        FileNotFoundError: no such folder, or no video in it.
        ValueError: two files with the same id, or an id a format cannot hold (space, comma, colon).
    """
    root = Path(video_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"video folder {root} does not exist")
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in VIDEO_SUFFIXES or not path.is_file():
            continue
        vid = path.stem
        if vid in found:
            raise ValueError(f"two videos with the id {vid!r}: {found[vid]} and {path}")
        if _BAD_ID_CHARS & set(vid):
            raise ValueError(f"{path}: a video id (the file name) cannot hold spaces, commas or colons")
        found[vid] = path
    if not found:
        raise FileNotFoundError(f"no video files ({', '.join(VIDEO_SUFFIXES)}) under {root}")
    return [VideoFile(vid, found[vid]) for vid in sorted(found)]


SOURCE_HEAD = 64 * 1024  # bytes of each video hashed into its source key


def source_key(path: str | Path) -> str:
    """What identifies a video file's content cheaply: size, mtime and a hash of its first 64 KiB.

    Saved with its features, so a video replaced under the same name is extracted again."""
    path = Path(path)
    st = path.stat()
    with open(path, "rb") as f:
        head = hashlib.blake2b(f.read(SOURCE_HEAD), digest_size=8).hexdigest()
    return f"{st.st_size}:{st.st_mtime_ns}:{head}"


def check_out_dir(out_dir: str | Path) -> Path:
    """`out_dir` if it is a folder or can become one: refuses a path that is a file (or lies under
    one, or whose `extract/` is one) before anything is computed."""
    out = Path(out_dir)
    for path in (out / WORK_DIR, out, *out.parents):
        if path.exists() or path.is_symlink():
            if not path.is_dir():
                raise InputError(path, f"is not a folder: the output folder {out} cannot be made there")
            if path != out / WORK_DIR:
                break
    return out


def second_indices(num_frames: int, video_fps: float, fps: float = 1.0, max_frames: int = 300) -> np.ndarray:
    """Frame numbers sampled at `fps`: the first frame at or after each time k / fps inside the video.

    Args:
        num_frames: frames in the video stream; video_fps: its frame rate.

    Returns:
        int64 (T,), T = min(ceil(duration · fps), max_frames) ≥ 1.
    """
    if num_frames < 1 or video_fps <= 0:
        raise ValueError(f"need frames and a frame rate, got {num_frames} frames at {video_fps} fps")
    duration = num_frames / video_fps
    count = min(max(1, int(np.ceil(duration * fps - 1e-9))), max_frames)
    times = np.arange(count) / fps
    return np.minimum(np.ceil(times * video_fps - 1e-6), num_frames - 1).astype(np.int64)


def audio_seconds(
    waveform: np.ndarray, num_seconds: int, sample_rate: int = AUDIO_RATE, fps: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-second audio features: Kaldi fbank (64 mel bins) → mean ‖ std of each bin over the window.

    Args:
        waveform: mono float32 (N,) in [-1, 1].
        num_seconds: windows to describe (window k covers [k / fps, (k + 1) / fps)).

    Returns:
        features float32 (num_seconds, 128) (zeros where there is no audio) and mask bool (num_seconds,).
    """
    out = np.zeros((num_seconds, 2 * AUDIO_MEL_BINS), np.float32)
    mask = np.zeros(num_seconds, bool)
    step = int(round(sample_rate / fps))
    for k in range(num_seconds):
        chunk = np.asarray(waveform[k * step : (k + 1) * step], np.float64)
        fbank = kaldi_fbank(chunk, sample_rate, AUDIO_MEL_BINS, dither=0.0) if len(chunk) else None
        if fbank is None or fbank.shape[0] < 2:  # less than two 25 ms windows: no audio here
            continue
        out[k] = torch.cat([fbank.mean(0), fbank.std(0)]).numpy()
        mask[k] = True
    return out, mask


@dataclass
class DecodedVideo:
    video: VideoFile
    frames: np.ndarray  # uint8 (T, S, S, 3), centre-cropped
    audio: np.ndarray | None  # float32 (T, 128) raw per-second audio features (yt8m), else None
    audio_mask: np.ndarray | None  # bool (T,): the second has audio
    note: str = ""  # e.g. why the audio is zeros


def decode_video(
    video: VideoFile, image_size: int, *, fps: float = 1.0, max_frames: int = 300, audio: bool = False
) -> DecodedVideo:
    """Decode the sampled frames (and, with `audio`, the per-second soundtrack features) of one video.

    Raises:
        MediaError: the file cannot be opened or holds no decodable video.
    """
    info = probe_media(video.path)
    if not info.num_frames or info.fps <= 0:
        raise MediaError(video.path, "no video stream with frames and a frame rate")
    indices = second_indices(info.num_frames, info.fps, fps, max_frames)
    frames = read_frames(video.path, indices, short_side=image_size)  # (T, H, W, 3), min(H, W) = S
    top, left = (frames.shape[1] - image_size) // 2, (frames.shape[2] - image_size) // 2
    frames = np.ascontiguousarray(frames[:, top : top + image_size, left : left + image_size])
    if not audio:
        return DecodedVideo(video, frames, None, None)
    note = "no audio stream"
    if info.sample_rate:
        try:
            wave = read_audio(video.path, AUDIO_RATE)
            return DecodedVideo(video, frames, *audio_seconds(wave, len(frames), AUDIO_RATE, fps))
        except MediaError as e:
            note = e.reason
    zeros = np.zeros((len(frames), 2 * AUDIO_MEL_BINS), np.float32)
    return DecodedVideo(video, frames, zeros, np.zeros(len(frames), bool), note=f"audio zeros: {note}")


# ------------------------------------------------------------------------------------------ work folder


class WorkDir:
    """`OUT_DIR/extract/`: settings, per-video features, the saved projections, file manifest, reports."""

    def __init__(self, out_dir: str | Path, split: str):
        self.out_dir = Path(out_dir)
        self.root = self.out_dir / WORK_DIR
        self.split_key = split.replace("/", "-")
        self.features = self.root / "features" / self.split_key

    def feature_path(self, vid: str) -> Path:
        return self.features / f"{vid}.npz"

    def has(self, vid: str, source: str) -> bool:
        """Whether features of this video exist and were made from the file `source` describes
        (`source_key`): a replaced video, even under the same name, is extracted again."""
        path = self.feature_path(vid)
        if not path.is_file():
            return False
        try:
            return str(load_npz(path, ["source"]).get("source", "")) == source
        except (OSError, ValueError):  # a torn or foreign file (an InputError): extract again
            return False

    def save(self, decoded: DecodedVideo, feats: np.ndarray, source: str) -> None:
        arrays = {"frames": feats.astype(np.float32), "source": np.array(source)}
        if decoded.audio is not None:
            arrays.update(audio=decoded.audio, audio_mask=decoded.audio_mask, note=np.array(decoded.note))
        atomic_write(self.feature_path(decoded.video.id), lambda f: np.savez(f, **arrays))

    def load(self, vid: str) -> dict[str, np.ndarray]:
        return load_npz(self.feature_path(vid))

    def check_settings(self, settings: dict) -> None:
        """Record the settings on first use; refuse features made with other settings."""
        path = self.root / "settings.json"
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved != settings:
                diff = {
                    k: (saved.get(k), settings.get(k)) for k in settings if saved.get(k) != settings.get(k)
                }
                raise ValueError(
                    f"{self.root} holds features extracted with other settings {diff} (saved, now): "
                    "use another OUT_DIR, the same settings, or overwrite=True (--overwrite) to start again"
                )
        else:
            text = json.dumps(settings, indent=1).encode()
            atomic_write(path, lambda f: f.write(text))

    def manifest(self) -> dict:
        path = self.root / "manifest.json"
        return json.loads(path.read_text()) if path.is_file() else {"splits": {}, "created": []}

    def save_manifest(self, manifest: dict) -> None:
        text = json.dumps(manifest, indent=1).encode()
        atomic_write(self.root / "manifest.json", lambda f: f.write(text))

    def reset(self) -> None:
        """Forget this split's features and files, the projections and the settings (overwrite)."""
        manifest = self.manifest()
        for rel in manifest["splits"].pop(self.split_key, []):
            inside(self.out_dir, rel, what="manifest entry").unlink(missing_ok=True)
        shutil.rmtree(self.features, ignore_errors=True)
        for name in ("pca_frames.npz", "pca_audio.npz", "settings.json"):
            (self.root / name).unlink(missing_ok=True)
        if self.root.is_dir():
            self.save_manifest(manifest)


# ------------------------------------------------------------------------------------------ the command


@dataclass
class ExtractResult:
    """What one `extract` call did."""

    out_dir: Path
    format: str
    split: str
    videos: int  # video files found
    extracted: int  # videos whose features this call computed
    resumed: int  # videos already extracted by an earlier call (skipped)
    failed: dict[str, str] = field(default_factory=dict)  # id → reason (path included)
    frames: int = 0  # frames (seconds) written
    files: list[Path] = field(default_factory=list)  # dataset files written
    projection: str = "none"  # fitted | reused | none (written as extracted)
    audio_notes: dict[str, str] = field(default_factory=dict)  # id → why its audio is zeros (yt8m)
    complete: bool = True  # False: stopped by max_videos before writing the dataset

    def summary(self) -> dict:
        """A JSON-able summary (paths as strings)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["out_dir"], out["files"] = str(self.out_dir), [str(f) for f in self.files]
        return out


def _pca_file(pca: str | Path, name: str) -> Path:
    """`pca_{name}.npz` of a saved projection given as a file, an OUT_DIR or its `extract/` folder."""
    given = Path(pca)
    if given.suffix == ".npz":
        return given.with_name(f"pca_{name}.npz")
    return (given / WORK_DIR if (given / WORK_DIR).is_dir() else given) / f"pca_{name}.npz"


def _projection(work: WorkDir, name: str, pca, fit: Callable[[], Projection | None], *,
                input_dim: int, output_dim: int, whiten: bool, backbone: str) -> tuple[Projection | None, str]:  # fmt: skip
    """The projection saved as `pca_{name}.npz` (in `pca` if given, else in OUT_DIR/extract), else `fit()`
    (saved there). Returns it (None: nothing to fit) and how it was obtained: reused, fitted or none."""
    path = work.root / f"pca_{name}.npz"
    source = _pca_file(pca, name) if pca else path
    if pca and not source.is_file() and name == "frames":
        raise FileNotFoundError(f"no saved projection at {source}")
    if source.is_file():
        proj = Projection.load(source)
        problems = []
        if proj.backbone != backbone:
            problems.append(
                f"it was fitted on features of backbone {proj.backbone}, these come from {backbone}"
            )
        if (proj.input_dim, proj.output_dim, proj.whiten) != (input_dim, output_dim, whiten):
            problems.append(f"it maps {proj.input_dim} → {proj.output_dim} (whiten={proj.whiten}), "
                            f"this needs {input_dim} → {output_dim} (whiten={whiten})")  # fmt: skip
        if problems:
            raise ValueError(f"the saved projection {source} does not fit: {'; '.join(problems)}")
        if source != path:
            shutil.copyfile(source, path)
        return proj, "reused"
    proj = fit()
    if proj is None:
        return None, "none"
    proj.save(path)
    return proj, "fitted"


def _fit(work: WorkDir, ids: list[str], key: str, output_dim: int, whiten: bool, backbone: str):
    """PCA of the saved `key` rows (frames, or the audio seconds that have audio) of videos `ids`."""
    acc = None
    for vid in ids:
        stored = work.load(vid)
        rows = stored[key][stored["audio_mask"]] if key == "audio" else stored[key]
        acc = acc or CovarianceAccumulator(rows.shape[1])
        acc.update(rows)
    if key == "audio" and acc.count < 2:
        return None  # no soundtrack in the set: the audio stays zeros
    if acc.count < 2:
        raise ValueError(
            f"a PCA needs at least 2 frames, these {len(ids)} video(s) have {acc.count}: extract more "
            "videos, or reuse the projection of an earlier, larger extraction with pca= (--pca OUT_DIR)"
        )
    return Projection.fit(acc, output_dim, whiten=whiten, videos=len(ids), backbone=backbone)


def _projected(work: WorkDir, ids: list[str], texts: dict, frames_proj, audio_proj, with_audio: bool, result):
    """The videos as a writer stores them, loaded one at a time; counts the frames into `result`."""
    for vid in ids:
        stored = work.load(vid)
        result.frames += len(stored["frames"])
        if "note" in stored and str(stored["note"]):
            result.audio_notes[vid] = str(stored["note"])
        frames = frames_proj.apply(stored["frames"]) if frames_proj else stored["frames"]
        audio = None
        if with_audio:
            audio = np.zeros((len(frames), AUDIO_DIM), np.float32)
            if audio_proj is not None:
                audio = audio_proj.apply(stored["audio"]) * stored["audio_mask"][:, None]
        yield VideoFeatures(vid, frames, audio, texts.get(vid, {}))


def _write_dataset(work: WorkDir, spec, split: str, ids: list[str], texts: dict, projections, result, *,
                   shard_size: int, overwrite: bool, vocab) -> list[Path]:  # fmt: skip
    """Write the split's files from the saved features; keep the manifest of the files extract owns."""
    manifest = work.manifest()
    owned = {*manifest["created"], *manifest["splits"].get(work.split_key, [])}
    first = first_free_shard(work.out_dir, spec.name, split, owned)
    files = split_files(work.out_dir, spec.name, split, len(ids), shard_size, first)
    rel = [str(f.relative_to(work.out_dir)) for f in files]
    foreign = [f for f, r in zip(files, rel) if f.exists() and r not in owned]
    if foreign and not overwrite:
        raise FileExistsError(
            f"{', '.join(map(str, foreign))} exist and were not written by vmm extract: "
            "pass overwrite=True (--overwrite) to replace them, or choose another OUT_DIR or split"
        )
    write_split(files, spec.name, _projected(work, ids, texts, *projections, spec.audio, result), shard_size)
    for stale in set(manifest["splits"].get(work.split_key, [])) - set(rel):
        inside(work.out_dir, stale, what="manifest entry").unlink(missing_ok=True)
    manifest["splits"][work.split_key] = rel
    created = complete_layout(work.out_dir, spec.name, texts, vocab)
    manifest["created"] = sorted({*manifest["created"], *(str(f.relative_to(work.out_dir)) for f in created)})
    work.save_manifest(manifest)
    return files


def default_batch_size(device: torch.device) -> int:
    """Frames per backbone batch: 64 on a GPU, 16 on CPU (a ViT-S/16 on 2 cores: 16.0 frames/s at
    16, 14.8 at 64; big batches spill the caches)."""
    return 64 if device.type == "cuda" else 16


def extract(
    video_dir: str | Path,
    out_dir: str | Path,
    *,
    format: str,
    backbone: str | Path | FrameEncoder = "",
    texts: str | Path | None = None,
    split: str | None = None,
    fps: float = 1.0,
    max_frames: int = 300,
    batch_size: int | None = None,
    workers: int = 2,
    device: str | None = None,
    pooling: str = "auto",
    pca: str | Path | None = None,
    vocab: str | Path | None = None,
    shard_size: int = 1000,
    overwrite: bool = False,
    max_videos: int | None = None,
    progress: bool = True,
) -> ExtractResult:
    """Extract per-second frame features of every video in `video_dir` into `out_dir` in `format`'s layout.

    Args:
        format: `qqbrowser`, `wbdc` or `yt8m`.
        backbone: a local Hugging Face vision model folder ("" = the tiny built-in ViT), or a
            `FrameEncoder` built by the caller.
        texts: titles / ASR / labels per video id (`vmmlib.extract.formats.read_texts`).
        split: where the videos go (default: the format's test split: test_a, test_a, test).
        fps, max_frames: frames sampled per second of video, and at most this many per video.
        batch_size, workers: frames per backbone batch (default: `default_batch_size`); decoding
            threads (0 = decode inline).
        device: torch device (default cuda when available; bf16 autocast there).
        pooling: see `load_backbone`.
        pca: a saved projection to use (an earlier OUT_DIR, its `extract/` folder or a `pca_frames.npz`)
            instead of fitting one; by default the one in `out_dir` is reused when present.
        vocab: the BERT vocab.txt a fresh QQ Browser / WBDC folder gets (default: bert-base-chinese's
            as cn-clip ships it, else the sample data's character vocabulary).
        shard_size: videos per record file (QQ `pointwise`, YouTube-8M).
        overwrite: start again: forget this split's features and files and the saved projections, and
            replace record files that vmm extract did not write.
        max_videos: extract at most this many videos not yet extracted, then stop before writing the
            dataset (`complete=False`); a later call resumes.
        progress: a progress bar over the videos.

    Returns:
        `ExtractResult`; a report of it is also saved as `extract/report-<split>.json`.
    """
    from vmmlib.progress import progress as progress_bar

    spec, split = format_spec(format, split)
    check_out_dir(out_dir)  # before the backbone is built: a wrong path fails in a second
    videos = list_videos(video_dir)
    fields = read_texts(texts) if texts else {}
    check_texts(spec.name, fields)
    sources = {v.id: source_key(v.path) for v in videos}
    encoder = (
        backbone
        if isinstance(backbone, FrameEncoder)
        else load_backbone(backbone, device=device, pooling=pooling)
    )
    work = WorkDir(out_dir, split)
    if overwrite:
        work.reset()
    settings = {"backbone": encoder.name, "feature_dim": encoder.feature_dim, "image_size": encoder.image_size,
                "fps": fps, "max_frames": max_frames, "format": spec.name}  # fmt: skip
    work.check_settings(settings)
    have = {v.id for v in videos if work.has(v.id, sources[v.id])}
    todo = [v for v in videos if v.id not in have]
    result = ExtractResult(Path(out_dir), spec.name, split, len(videos), 0, len(videos) - len(todo))
    todo = todo if max_videos is None else todo[:max_videos]
    bar = progress_bar(
        total=len(todo), unit="video", desc=f"extract {spec.name}/{split}", disable=not progress
    )

    def done(decoded: DecodedVideo, feats: np.ndarray) -> None:
        work.save(decoded, feats, sources[decoded.video.id])
        have.add(decoded.video.id)
        result.extracted += 1
        bar.update(1)

    def failed(video: VideoFile, reason: str) -> None:
        result.failed[video.id] = f"{video.path}: {reason}"
        if progress:
            bar.write(f"skipped {video.path}: {reason}")
        else:
            log.warning("skipped %s: %s", video.path, reason)
        bar.update(1)

    decode = lambda v: decode_video(v, encoder.image_size, fps=fps, max_frames=max_frames, audio=spec.audio)  # noqa: E731
    try:
        batch_size = batch_size or default_batch_size(encoder.device)
        encode_batched(todo, encoder, decode, done, failed, batch_size=batch_size, workers=workers)
    finally:
        bar.close()
    left = [v for v in videos if v.id not in have and v.id not in result.failed]
    if left:
        result.complete = False
        return _report(work, result)
    ids = [v.id for v in videos if v.id in have]
    if not ids:
        raise ValueError(f"none of the {len(videos)} videos under {video_dir} could be read: {result.failed}")
    projections = _projections(work, spec, encoder, ids, pca)
    result.projection = projections[2]
    result.files = _write_dataset(work, spec, split, ids, fields, projections[:2], result,
                                  shard_size=shard_size, overwrite=overwrite, vocab=vocab)  # fmt: skip
    return _report(work, result)


def _projections(work: WorkDir, spec, encoder, ids: list[str], pca) -> tuple:
    """(frames projection or None, audio projection or None, how the frames one was obtained)."""
    frames_proj, how = None, "none"
    if spec.whiten or encoder.feature_dim != spec.frame_dim:
        frames_proj, how = _projection(
            work, "frames", pca, lambda: _fit(work, ids, "frames", spec.frame_dim, spec.whiten, encoder.name),
            input_dim=encoder.feature_dim, output_dim=spec.frame_dim, whiten=spec.whiten, backbone=encoder.name,
        )  # fmt: skip
    audio_proj = None
    if spec.audio:
        audio_proj, _ = _projection(
            work, "audio", pca, lambda: _fit(work, ids, "audio", AUDIO_DIM, True, encoder.name),
            input_dim=2 * AUDIO_MEL_BINS, output_dim=AUDIO_DIM, whiten=True, backbone=encoder.name,
        )  # fmt: skip
    return frames_proj, audio_proj, how


def _report(work: WorkDir, result: ExtractResult) -> ExtractResult:
    text = json.dumps(result.summary(), indent=1, ensure_ascii=False).encode("utf-8")
    atomic_write(work.root / f"report-{work.split_key}.json", lambda f: f.write(text))
    return result
