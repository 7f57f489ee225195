"""Audio inputs for the audio encoder: Kaldi-style log-mel filter banks computed in torch, and the
seed's raw-waveform "image" (seed 004, SPEC §1.5).

`kaldi_fbank` follows Kaldi's `compute-fbank-feats` (and `torchaudio.compliance.kaldi.fbank`,
`kaldi-native-fbank`) step by step, per frame of `frame_length_ms` every `frame_shift_ms`:

    dither (off by default) → remove the frame's DC offset → pre-emphasis x[i] −= c·x[i−1]
    (x[0] −= c·x[0]) → window (povey = hann^0.85, hanning, hamming, blackman, rectangular) →
    zero-pad to a power of two → |FFT|² → triangular mel banks (mel = 1127 ln(1 + f/700), equal
    spacing in mel between low_freq and high_freq, the Nyquist bin unused) → log(max(·, ε)),
    ε = float32 machine epsilon.

Kaldi's tools read 16-bit integers, so their features are those of the waveform × 32768 (log-mel
+ 2 ln 32768 ≈ +20.79); pass `waveform * 32768` to match them. torchaudio and the seed feed the
waveform in [-1, 1] with its mean removed, which `audio_spectrogram` does.

`audio_spectrogram` is the seed's `--audio2spectrogram` mode: fbank with a Hanning window, 10 ms
shift, no dither, `num_mel_bins = freq`, cut or zero-padded to `time` frames, transposed to
(1, freq, time); optionally standardised as AST does ((x − mean) / (2·std)). `waveform_image` is the
seed's default mode: the waveform cut or tiled to `image_size²` samples, shaped (1, S, S), then
normalised with mean 0.5 / std 0.5 like the ViT-MAE image processor.
"""

from __future__ import annotations

import math

import numpy as np
import torch

WINDOWS = ("povey", "hanning", "hamming", "blackman", "rectangular")
AUDIO_MODES = ("fbank", "waveform")
FLOAT_EPS = float(np.finfo(np.float32).eps)  # Kaldi's log floor (std::numeric_limits<float>::epsilon())
AUDIOSET_MEAN, AUDIOSET_STD = -4.2677393, 4.5689974  # AST's AudioSet fbank statistics


def mel_scale(freq: torch.Tensor | float) -> torch.Tensor | float:
    """Kaldi's mel scale: 1127 · ln(1 + f / 700)."""
    if isinstance(freq, torch.Tensor):
        return 1127.0 * torch.log1p(freq / 700.0)
    return 1127.0 * math.log1p(freq / 700.0)


def feature_window(kind: str, length: int, blackman_coeff: float = 0.42) -> torch.Tensor:
    """Kaldi's analysis window of `length` samples, float64 (length,)."""
    if kind not in WINDOWS:
        raise ValueError(f"unknown window {kind!r}; valid choices: {', '.join(WINDOWS)}")
    n = torch.arange(length, dtype=torch.float64)
    a = 2 * math.pi / (length - 1)
    if kind == "rectangular":
        return torch.ones(length, dtype=torch.float64)
    if kind == "hamming":
        return 0.54 - 0.46 * torch.cos(a * n)
    if kind == "blackman":
        return blackman_coeff - 0.5 * torch.cos(a * n) + (0.5 - blackman_coeff) * torch.cos(2 * a * n)
    hann = 0.5 - 0.5 * torch.cos(a * n)
    return hann.pow(0.85) if kind == "povey" else hann


def mel_banks(
    num_mel_bins: int, padded_window: int, sample_rate: float, low_freq: float = 20.0, high_freq: float = 0.0
) -> torch.Tensor:
    """Kaldi's triangular mel filters over the FFT bins, float64 (num_mel_bins, padded_window // 2 + 1).

    high_freq ≤ 0 counts down from the Nyquist frequency. The last column (Nyquist) is all zero, as in
    Kaldi, which uses only the first padded_window // 2 bins.
    """
    nyquist = 0.5 * sample_rate
    high = high_freq if high_freq > 0 else nyquist + high_freq
    if not 0 <= low_freq < high <= nyquist:
        raise ValueError(f"need 0 ≤ low_freq < high_freq ≤ {nyquist}, got {low_freq} and {high}")
    num_fft_bins = padded_window // 2
    mel_low, mel_high = mel_scale(float(low_freq)), mel_scale(float(high))
    delta = (mel_high - mel_low) / (num_mel_bins + 1)
    b = torch.arange(num_mel_bins, dtype=torch.float64).unsqueeze(1)
    left, center, right = mel_low + b * delta, mel_low + (b + 1) * delta, mel_low + (b + 2) * delta
    mel = mel_scale(torch.arange(num_fft_bins, dtype=torch.float64) * (sample_rate / padded_window))
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    weights = torch.where(mel <= center, up, down)
    weights = torch.where((mel > left) & (mel < right), weights, torch.zeros_like(weights))
    return torch.nn.functional.pad(weights, (0, 1))  # the unused Nyquist bin


def _frame_starts(num_samples: int, window: int, shift: int, snip_edges: bool) -> torch.Tensor:
    if snip_edges:
        count = 1 + (num_samples - window) // shift if num_samples >= window else 0
        return torch.arange(count) * shift
    count = (num_samples + shift // 2) // shift
    return torch.arange(count) * shift + shift // 2 - window // 2


def _frames(waveform: torch.Tensor, window: int, shift: int, snip_edges: bool) -> torch.Tensor:
    """(N,) → (F, window): snip_edges=False reflects samples outside the signal as Kaldi does."""
    n = waveform.shape[-1]
    starts = _frame_starts(n, window, shift, snip_edges)
    idx = starts.unsqueeze(1) + torch.arange(window)  # (F, window)
    if not snip_edges and n > 0:
        idx = torch.where(idx < 0, -idx - 1, idx)
        idx = torch.where(idx >= n, 2 * n - 1 - idx, idx).clamp(0, n - 1)
    return waveform[idx]


def kaldi_fbank(
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int = 16000,
    num_mel_bins: int = 80,
    *,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    window: str = "povey",
    preemphasis: float = 0.97,
    remove_dc_offset: bool = True,
    dither: float = 0.0,
    low_freq: float = 20.0,
    high_freq: float = 0.0,
    round_to_power_of_two: bool = True,
    snip_edges: bool = True,
    use_log: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Kaldi log-mel filter-bank features of a mono waveform, computed in float64 torch.

    Args:
        waveform: float (N,) samples (any scale; see the module docstring on Kaldi's int16 scale).
        sample_rate: Hz.
        num_mel_bins: mel filters (Kaldi's default is 23; 80 and 128 are common).
        frame_length_ms, frame_shift_ms: analysis window and hop (25 / 10 ms).
        window: povey (Kaldi's default), hanning, hamming, blackman or rectangular.
        preemphasis: pre-emphasis coefficient (0 disables).
        remove_dc_offset: subtract each frame's mean before pre-emphasis.
        dither: Gaussian dither amplitude added to every sample of every frame (Kaldi default 1.0 on
            int16 samples; 0 here so features are deterministic).
        low_freq, high_freq: mel range in Hz; high_freq ≤ 0 is an offset from Nyquist.
        round_to_power_of_two: zero-pad each frame to the next power of two before the FFT.
        snip_edges: True: only whole frames, 1 + (N − L) // S of them; False: (N + S/2) // S frames
            centred on multiples of the hop, edges reflected.
        use_log: log of the mel energies (floored at float32 epsilon); False gives the energies.
        generator: for the dither noise.

    Returns:
        float32 (num_frames, num_mel_bins); num_frames may be 0 for a waveform shorter than a window.
    """
    x = torch.as_tensor(np.asarray(waveform) if not isinstance(waveform, torch.Tensor) else waveform)
    if x.ndim != 1:
        raise ValueError(f"kaldi_fbank takes a mono (N,) waveform, got shape {tuple(x.shape)}")
    x = x.to(torch.float64)
    window_size = int(sample_rate * frame_length_ms * 0.001)
    shift = int(sample_rate * frame_shift_ms * 0.001)
    padded = 1 << (window_size - 1).bit_length() if round_to_power_of_two else window_size
    frames = _frames(x, window_size, shift, snip_edges)  # (F, L)
    if frames.shape[0] == 0:
        return torch.zeros(0, num_mel_bins)
    if dither:
        frames = frames + dither * torch.randn(frames.shape, generator=generator, dtype=torch.float64)
    if remove_dc_offset:
        frames = frames - frames.mean(dim=1, keepdim=True)
    if preemphasis:
        shifted = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # x[i-1], with x[-1] := x[0]
        frames = frames - preemphasis * shifted
    frames = frames * feature_window(window, window_size)
    power = torch.fft.rfft(frames, n=padded).abs().pow(2)  # (F, padded/2 + 1)
    banks = mel_banks(num_mel_bins, padded, sample_rate, low_freq, high_freq)  # (M, padded/2 + 1)
    mel = power @ banks.T  # (F, M)
    if use_log:
        mel = torch.log(mel.clamp_min(FLOAT_EPS))
    return mel.to(torch.float32)


def fit_frames(features: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Cut (keep the first) or zero-pad (at the end) a (T, M) feature matrix to (num_frames, M)."""
    T, M = features.shape
    if T >= num_frames:
        return features[:num_frames]
    return torch.cat([features, features.new_zeros(num_frames - T, M)])


def audio_spectrogram(
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int = 16000,
    freq: int = 128,
    time: int = 1024,
    *,
    mean: float | None = AUDIOSET_MEAN,
    std: float | None = AUDIOSET_STD,
    window: str = "hanning",
) -> torch.Tensor:
    """The seed's spectrogram input: (1, freq, time) log-mel image of a waveform in [-1, 1].

    The waveform's mean is removed, `kaldi_fbank` runs with the seed's options (Hanning window, 10 ms
    shift, no dither, `freq` mel bins), the frames are cut or zero-padded to `time`, then transposed.
    With `mean`/`std` the values are standardised as AST does, (x − mean) / (2·std) (AudioSet statistics
    by default; None leaves raw log-mel values). Padding frames are zero before standardisation, as AST.

    Returns:
        float32 (1, freq, time).
    """
    x = torch.as_tensor(
        np.asarray(waveform, np.float32) if not isinstance(waveform, torch.Tensor) else waveform
    )
    x = x.to(torch.float64)
    fbank = kaldi_fbank(x - x.mean(), sample_rate, freq, window=window, dither=0.0)
    image = fit_frames(fbank, time).T.unsqueeze(0)  # (T, F) -> (1, F, T)
    if mean is not None and std is not None:
        image = (image - mean) / (2 * std)
    return image.contiguous()


def waveform_image(waveform: torch.Tensor | np.ndarray, image_size: int = 224) -> torch.Tensor:
    """The seed's raw-waveform input: cut or tile to image_size² samples, shape (1, S, S), then
    normalise with mean 0.5 / std 0.5 (x ↦ 2x − 1, the ViT-MAE image processor's constants).

    An empty waveform gives zeros before normalisation (all −1 after).

    Returns:
        float32 (1, image_size, image_size).
    """
    x = torch.as_tensor(
        np.asarray(waveform, np.float32) if not isinstance(waveform, torch.Tensor) else waveform
    )
    x = x.to(torch.float32).reshape(-1)
    need = image_size * image_size
    if x.numel() == 0:
        x = torch.zeros(need)
    elif x.numel() < need:
        x = x.repeat(math.ceil(need / x.numel()))
    image = x[:need].reshape(1, image_size, image_size)
    return (image - 0.5) / 0.5


def audio_input(
    waveform: torch.Tensor | np.ndarray,
    sample_rate: int = 16000,
    *,
    mode: str = "fbank",
    freq: int = 128,
    time: int = 1024,
    image_size: int = 224,
    mean: float | None = AUDIOSET_MEAN,
    std: float | None = AUDIOSET_STD,
) -> torch.Tensor:
    """The audio encoder's input in either of the seed's modes.

    Args:
        mode: `fbank` → `audio_spectrogram` (1, freq, time); `waveform` → `waveform_image`
            (1, image_size, image_size).
    """
    if mode not in AUDIO_MODES:
        raise ValueError(f"unknown audio mode {mode!r}; valid choices: {', '.join(AUDIO_MODES)}")
    if mode == "fbank":
        return audio_spectrogram(waveform, sample_rate, freq, time, mean=mean, std=std)
    return waveform_image(waveform, image_size)
