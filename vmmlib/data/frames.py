"""Frame sampling: fixed-length frame windows with masks, as the seeds' readers build them."""

from __future__ import annotations

import numpy as np

FRAME_MODES = ("repeat_last", "zero_pad")


def sample_frames(
    frames: np.ndarray, max_frames: int = 32, mode: str = "zero_pad"
) -> tuple[np.ndarray, np.ndarray]:
    """Cut or pad a video's frames to `max_frames`.

    Args:
        frames: (L, D) array of any float dtype; L may be 0.
        max_frames: output length T.
        mode: `repeat_last` — the QQ TF baseline (SPEC §1.1): if L < T the last frame is repeated
            (frames i ≥ L are masked out); if L ≥ T, indices `i*(L//T) + (L//T)//2`.
            `zero_pad` — the 1st place's form: zero frames + mask when L < T; if L > T, indices
            `round((i + 0.5) * (L - 1) / T)`.

    Returns:
        (T, D) float32 frames and (T,) float32 mask (1 = real frame). A video with no frames gives
        all-zero frames and an all-zero mask.
    """
    if mode not in FRAME_MODES:
        raise ValueError(f"unknown frame mode {mode!r}; valid choices: {', '.join(FRAME_MODES)}")
    length, dim = frames.shape
    out = np.zeros((max_frames, dim), np.float32)
    mask = np.zeros(max_frames, np.float32)
    if length == 0:
        return out, mask
    if length < max_frames:
        out[:length] = frames
        mask[:length] = 1.0
        if mode == "repeat_last":
            out[length:] = frames[-1]
        return out, mask
    if length == max_frames:
        idx = np.arange(max_frames)
    elif mode == "repeat_last":
        step = length // max_frames
        idx = np.arange(max_frames) * step + step // 2
    else:
        idx = np.round((np.arange(max_frames) + 0.5) * (length - 1) / max_frames).astype(np.int64)
    out[:] = frames[idx]
    mask[:] = 1.0
    return out, mask
