"""Video and audio files through PyAV (FFmpeg): probe, frame-index sampling, decode, and encode.

- `probe_media(path)`: frame count, fps, size, duration and the audio stream's rate/channels.
- `frame_indices(...)`: which frames a clip takes: `rate` (VideoMAE: `clip_len` frames every
  `frame_sample_rate`, seed 004), `uniform` (the middle of `clip_len` equal segments, ALPRO's
  evaluation) or `random` (one random frame per segment, TSN-style training); several clips per video
  at test time (`num_clips`, `clip_index`).
- `read_frames(path, indices)`: those frames as RGB uint8 (T, H, W, 3), optionally resized at decode.
- `read_audio(path, sample_rate)`: the first audio stream, resampled and down-mixed by FFmpeg's
  swresample to float32 in [-1, 1] (mono by default). torchaudio and soundfile do not load here
  (SPEC §9.3); PyAV reads wav, mp3, aac, flac and the soundtrack of any video file.
- `write_video(path, frames, fps, audio=...)`: H.264 (yuv420p) + AAC mp4; `write_wav`: 16-bit PCM.

Every failure to open or decode a file raises `MediaError`, whose message names the file and the reason,
so a data reader can skip the item, log it, and count it.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vmmlib.io.safe import InputError

FRAME_STRATEGIES = ("rate", "uniform", "random")


class MediaError(InputError, RuntimeError):
    """A media file that cannot be opened or decoded; `path` and `reason` are kept as attributes.

    An `InputError` (`vmm` prints it in one line), and still a RuntimeError for older handlers."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(str(path), reason)

    def __reduce__(self):
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class MediaInfo:
    """What `probe_media` reports. Video fields are 0 when the file has no video stream, audio fields 0
    when it has no audio stream."""

    num_frames: int  # video frames: the container's count, else duration × fps rounded
    fps: float  # average frame rate
    width: int
    height: int
    duration: float  # seconds (container duration; the longest stream)
    sample_rate: int  # audio sampling rate (Hz) of the first audio stream
    channels: int  # audio channels of the first audio stream
    audio_codec: str  # e.g. "aac", "pcm_s16le"; "" without audio


def _open(path: str | Path):
    if not Path(path).is_file():
        raise MediaError(path, "no such file")
    try:
        return av.open(str(path))
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as err:
        raise MediaError(path, f"cannot open ({type(err).__name__}: {err})") from err


def probe_media(path: str | Path) -> MediaInfo:
    """Read the stream headers of a media file (no decoding).

    Raises:
        MediaError: the file is missing or not a media file FFmpeg can open.
    """
    with _open(path) as container:
        duration = container.duration / 1e6 if container.duration else 0.0
        num_frames = fps = width = height = 0
        if container.streams.video:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            width, height = stream.codec_context.width, stream.codec_context.height
            num_frames = stream.frames
            if not num_frames:
                seconds = float(stream.duration * stream.time_base) if stream.duration else duration
                num_frames = int(round(seconds * fps))
        sample_rate = channels = 0
        codec = ""
        if container.streams.audio:
            audio = container.streams.audio[0]
            sample_rate, channels = audio.rate, len(audio.layout.channels)
            codec = audio.codec_context.name
    return MediaInfo(num_frames, fps, width, height, duration, sample_rate, channels, codec)


def frame_indices(
    num_frames: int,
    clip_len: int,
    *,
    strategy: str = "rate",
    frame_sample_rate: int = 4,
    num_clips: int = 1,
    clip_index: int | None = 0,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Indices of the `clip_len` frames one clip takes from a video of `num_frames` frames.

    Args:
        num_frames: frames in the video (≥ 1).
        clip_len: frames per clip (T).
        strategy: `rate`: T frames `frame_sample_rate` apart (a window of T·rate frames, VideoMAE's
            sampler as seed 004 calls it); a video shorter than the window is stretched over its whole
            length instead (indices `linspace(0, n-1, T)`, repeats allowed). `uniform`: the middle
            frame of each of T equal segments. `random`: one uniformly random frame per segment.
        frame_sample_rate: the stride of `rate`.
        num_clips: clips taken from the video at test time; `clip_index` in [0, num_clips) picks one.
            `rate`: window starts spread evenly over the video; `uniform`: the position inside each
            segment moves from (k + 0.5)/num_clips. `clip_index=None` means training: a random window
            start for `rate` (needs `rng`), and for `random` always.
        rng: numpy Generator for the random draws (`random`, or `rate` with clip_index=None).

    Returns:
        int64 (T,) non-decreasing indices in [0, num_frames).
    """
    if strategy not in FRAME_STRATEGIES:
        raise ValueError(f"unknown frame strategy {strategy!r}; valid choices: {', '.join(FRAME_STRATEGIES)}")
    if num_frames < 1 or clip_len < 1:
        raise ValueError(f"need num_frames ≥ 1 and clip_len ≥ 1, got {num_frames} and {clip_len}")
    if clip_index is not None and not 0 <= clip_index < num_clips:
        raise ValueError(f"clip_index {clip_index} out of range for num_clips={num_clips}")
    needs_rng = strategy == "random" or (strategy == "rate" and clip_index is None)
    if needs_rng and rng is None:
        raise ValueError(f"strategy {strategy!r} with clip_index={clip_index} draws at random: pass rng")
    if strategy == "rate":
        span = clip_len * frame_sample_rate
        if num_frames < span:
            return np.round(np.linspace(0, num_frames - 1, clip_len)).astype(np.int64)
        last_start = num_frames - span
        if clip_index is None:
            start = int(rng.integers(0, last_start + 1))
        else:
            start = (
                int(round(last_start * (clip_index + 0.5) / num_clips)) if num_clips > 1 else last_start // 2
            )
        return start + np.arange(clip_len, dtype=np.int64) * frame_sample_rate
    edges = np.linspace(0, num_frames, clip_len + 1)  # T equal segments of the video
    if strategy == "uniform":
        offset = 0.5 if clip_index is None else (clip_index + 0.5) / num_clips
        pos = edges[:-1] + offset * np.diff(edges)
    else:
        pos = edges[:-1] + rng.random(clip_len) * np.diff(edges)
    return np.minimum(np.floor(pos), num_frames - 1).astype(np.int64)


def _scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    return max(1, int(round(width * scale))), max(1, int(round(height * scale)))


def read_frames(
    path: str | Path, indices: np.ndarray | list[int], *, short_side: int | None = None
) -> np.ndarray:
    """Decode the frames at `indices` (any order, repeats allowed) as RGB.

    Frames are decoded sequentially up to the largest index (short clips; no seeking, whose accuracy
    depends on the file's key frames). An index past the last decodable frame takes the last decoded
    frame: container frame counts can overstate what decodes, and a stream may break off mid-way.

    Args:
        path: a video file.
        indices: frame numbers (0-based, decode order).
        short_side: if given, every frame is scaled (bilinear, at decode) so its shorter side has this
            many pixels, keeping the aspect ratio.

    Returns:
        uint8 (T, H, W, 3).

    Raises:
        MediaError: missing file, no video stream, or nothing decodable.
    """
    wanted = np.asarray(indices, dtype=np.int64)
    if wanted.size == 0:
        raise ValueError("read_frames needs at least one index")
    if (wanted < 0).any():
        raise ValueError(f"negative frame index in {wanted.tolist()}")
    last_needed = int(wanted.max())
    got: dict[int, np.ndarray] = {}
    tail = None  # the last frame decoded: it stands in for indices past the end
    with _open(path) as container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        size = _scaled_size(stream.codec_context.width, stream.codec_context.height, short_side)
        need = set(wanted.tolist())
        try:
            for i, frame in enumerate(container.decode(stream)):
                tail = frame
                if i in need:
                    got[i] = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                if i >= last_needed:
                    break
        except (av.FFmpegError, ValueError) as err:
            if tail is None:
                raise MediaError(path, f"video decoding failed ({type(err).__name__}: {err})") from err
        if tail is None:
            raise MediaError(path, "no decodable video frame")
        missing = [int(i) for i in wanted if int(i) not in got]
        if missing:
            fallback = tail.to_ndarray(format="rgb24", width=size[0], height=size[1])
            got.update(dict.fromkeys(missing, fallback))
    return np.stack([got[int(i)] for i in wanted])


def read_audio(path: str | Path, sample_rate: int = 16000, *, mono: bool = True) -> np.ndarray:
    """Decode the first audio stream, resampled to `sample_rate` Hz, as float32 in [-1, 1].

    Args:
        path: any file FFmpeg reads with an audio stream (wav, mp3, m4a, the soundtrack of an mp4, ...).
        sample_rate: output rate (Hz); swresample does the conversion.
        mono: down-mix every channel to one (FFmpeg's standard matrix, e.g. 5.1 → mono).

    Returns:
        float32 (N,) when mono, else (C, N).

    Raises:
        MediaError: missing file, no audio stream, or the stream cannot be decoded.
    """
    with _open(path) as container:
        if not container.streams.audio:
            raise MediaError(path, "no audio stream")
        stream = container.streams.audio[0]
        layout = "mono" if mono else stream.layout.name
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
        chunks = []
        try:
            for frame in container.decode(stream):
                chunks += [f.to_ndarray() for f in resampler.resample(frame)]
            chunks += [f.to_ndarray() for f in resampler.resample(None)]
        except (av.FFmpegError, ValueError) as err:
            raise MediaError(path, f"audio decoding failed ({type(err).__name__}: {err})") from err
    if not chunks:
        raise MediaError(path, "the audio stream holds no samples")
    samples = np.concatenate(chunks, axis=1).astype(np.float32)  # (C, N)
    return samples[0] if mono else samples


def write_wav(path: str | Path, waveform: np.ndarray, sample_rate: int = 16000) -> None:
    """Write a mono float waveform in [-1, 1] (N,) as a 16-bit PCM wav (clipped, rounded)."""
    pcm = np.round(np.clip(np.asarray(waveform, np.float64), -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) → planar yuv420p (3H/2, W): BT.601 limited range, chroma averaged over 2×2.

    Done in numpy because FFmpeg's swscale conversion, called through PyAV, occasionally gives
    different bytes for the same frame (seen here with PyAV 18), which would break reproducible files.
    """
    x = rgb.astype(np.float64)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    y = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    u = 128 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255
    v = 128 + (112.0 * r - 93.786 * g - 18.214 * b) / 255
    H, W = y.shape

    def sub(c):  # 2x2 average
        return c.reshape(H // 2, 2, W // 2, 2).mean(axis=(1, 3))

    planes = [y.reshape(-1), sub(u).reshape(-1), sub(v).reshape(-1)]
    return np.clip(np.round(np.concatenate(planes)), 0, 255).astype(np.uint8).reshape(H * 3 // 2, W)


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: int = 8,
    *,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    crf: int = 18,
) -> None:
    """Encode RGB frames as an H.264 (yuv420p) mp4, with a mono AAC track when `audio` is given.

    The same input gives the same bytes (the colour conversion is `rgb_to_yuv420p`, x264 runs
    single-threaded without macroblock-tree rate control). Width and height must be even (yuv420p).

    Args:
        frames: uint8 (T, H, W, 3).
        fps: frame rate.
        audio: float32 (N,) mono waveform in [-1, 1] at `sample_rate`.
        crf: x264 constant rate factor (lower = better quality).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    T, H, W, _ = frames.shape
    if H % 2 or W % 2:
        raise ValueError(f"H.264 yuv420p needs an even frame size, got {W}x{H}")
    with av.open(str(path), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=Fraction(fps))
        video.width, video.height, video.pix_fmt = W, H, "yuv420p"
        # mbtree off: with it, libx264 (core 165) gave different bytes for the same input from one
        # call to the next in a process; single-threaded for the same reason
        video.options = {"crf": str(crf), "threads": "1", "preset": "medium", "x264-params": "mbtree=0"}
        video.codec_context.thread_count = 1  # slice threads follow the core count: fix it for equal bytes
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate, layout="mono")
        for i in range(T):
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(frames[i]), format="yuv420p")
            frame.pts = i
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if astream is not None:
            _encode_audio(container, astream, np.asarray(audio, np.float32), sample_rate)


def _encode_audio(container, stream, audio: np.ndarray, sample_rate: int) -> None:
    frame_size = 1024  # the AAC encoder's fixed frame size
    for start in range(0, len(audio), frame_size):
        chunk = np.zeros((1, frame_size), np.float32)
        piece = audio[start : start + frame_size]
        chunk[0, : len(piece)] = piece
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = sample_rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
