"""YouTube-8M 2019 segment truth, read in one place: by the data folder (`vmmlib.data.yt8m.folder`)
and the scorer (`vmmlib.metrics.yt8m.segment_map`), neither importing the other.

The rated (segment, class) -> score map of the official `segment_eval_inference.read_labels`, built
from the context lists of v3 validate/test SequenceExamples.
"""

from __future__ import annotations

from collections.abc import Sequence


def read_segment_truth(
    video_ids: Sequence[str | bytes],
    segment_start_times: Sequence[Sequence[int]],
    segment_labels: Sequence[Sequence[int]],
    segment_scores: Sequence[Sequence[float]],
) -> dict[tuple[str, int], float]:
    """The rated (segment, class) -> score map of `segment_eval_inference.read_labels`.

    Args:
        video_ids: (V,) video ids (bytes are decoded as UTF-8, as hughshaoqz does).
        segment_start_times, segment_labels, segment_scores: per video, the aligned context lists
            of a v3 validate/test SequenceExample.

    Returns:
        {("vid:start", class): score}; a repeated key keeps its last score, as the official dict does.
    """
    truth: dict[tuple[str, int], float] = {}
    for vid, starts, classes, scores in zip(
        video_ids, segment_start_times, segment_labels, segment_scores, strict=True
    ):
        vid = vid.decode("utf-8") if isinstance(vid, bytes) else str(vid)
        for label, start, score in zip(classes, starts, scores, strict=True):
            truth[(f"{vid}:{int(start)}", int(label))] = float(score)
    return truth
