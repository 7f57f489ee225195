"""GAP@k: vectorised `vmmlib.metrics.gap` against the official per-video Python loop, same inputs.

    .venv/bin/python benchmarks/bench_gap.py --videos 100000 --classes 3862 --top-k 20

Inputs (seeded): float32 scores, skewed low (u**8 * 0.95) with positives lifted to 0.6 + 0.4u so
GAP is ~0.1-0.2 and positives tie with negatives now and then (the official tie order is exercised);
bool labels, 1-5 per video (mean 3). 100k x 3862 float32 is 1.5 GB.

Each vectorised run is cold (the cached `random.sample` replay is cleared first); one warm run is
shown too. The loop baseline is google/youtube-8m's `eval_util.calculate_gap` transliterated: per video
`argpartition` top-k triplets appended to per-class lists, `flatten`, then one
`AveragePrecisionCalculator` (heap pushes, seed-0 `random.sample` shuffle, `sorted`, sum). With
`--loop-videos N` it runs on the first N videos only and its time is extrapolated linearly (said so in
the output). The vectorised GAP is checked to be identical on the videos the loop saw.
"""

from __future__ import annotations

import argparse
import heapq
import random
import time

import numpy as np

from vmmlib.metrics import _official_ties, gap


def make_inputs(videos: int, classes: int, labels_per_video: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.empty((videos, classes), np.float32)
    for start in range(0, videos, 8192):  # in blocks: no float64 temporaries of the full size
        block = rng.random((min(8192, videos - start), classes), dtype=np.float32)
        np.power(block, 8, out=block)
        scores[start : start + block.shape[0]] = block * np.float32(0.95)
    labels = np.zeros((videos, classes), bool)
    per_video = rng.integers(1, 2 * labels_per_video, videos)
    rows = np.repeat(np.arange(videos), per_video)
    labels[rows, rng.integers(0, classes, rows.size)] = True
    scores[labels] = (0.6 + 0.4 * rng.random(np.count_nonzero(labels))).astype(np.float32)
    return scores, labels


def official_loop_gap(predictions: np.ndarray, actuals: np.ndarray, top_k: int) -> tuple[float, float, float]:
    """`calculate_gap` as google/youtube-8m runs it. Returns (gap, top-k loop seconds, AP seconds)."""
    start = time.perf_counter()
    k = min(top_k, predictions.shape[1])
    num_classes = predictions.shape[1]
    triplets = []
    for video in range(predictions.shape[0]):  # top_k_by_class / top_k_triplets
        row, labels = predictions[video], actuals[video]
        indices = np.argpartition(row, -k)[-k:]
        triplets.extend([(index, row[index], labels[index]) for index in indices])
    out_predictions = [[] for _ in range(num_classes)]
    out_labels = [[] for _ in range(num_classes)]
    for triplet in triplets:
        out_predictions[triplet[0]].append(triplet[1])
        out_labels[triplet[0]].append(triplet[2])
    true_positives = [np.sum(actuals[:, i]) for i in range(num_classes)]
    flat_predictions = [item for sublist in out_predictions for item in sublist]
    flat_labels = [item for sublist in out_labels for item in sublist]
    loop_seconds = time.perf_counter() - start

    start = time.perf_counter()
    heap = []  # AveragePrecisionCalculator.accumulate, top_n=None
    for i in range(np.size(flat_predictions)):
        heapq.heappush(heap, (flat_predictions[i], flat_labels[i]))
    predlists = np.array(list(zip(*heap)))  # peek_ap_at_n -> ap_at_n(n=None)
    predictions_, labels_ = predlists[0], predlists[1]
    state = random.getstate()
    random.seed(0)
    suffidx = random.sample(range(len(predictions_)), len(predictions_))
    random.setstate(state)
    predictions_, labels_ = predictions_[suffidx], labels_[suffidx]
    sortidx = sorted(range(len(predictions_)), key=lambda j: predictions_[j], reverse=True)
    numpos = sum(true_positives)
    ap, poscount, delta_recall = 0.0, 0.0, 1.0 / numpos
    for i in range(len(sortidx)):
        if labels_[sortidx[i]] > 0:
            poscount += 1
            ap += poscount / (i + 1) * delta_recall
    return float(ap), loop_seconds, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--classes", type=int, default=3862)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--labels-per-video", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of the vectorised gap")
    parser.add_argument(
        "--loop-videos", type=int, default=None, help="run the loop on the first N videos only"
    )
    args = parser.parse_args()

    start = time.perf_counter()
    scores, labels = make_inputs(args.videos, args.classes, args.labels_per_video, args.seed)
    print(
        f"inputs: {args.videos} videos x {args.classes} classes, float32 scores ({scores.nbytes / 1e9:.2f} GB), "
        f"{np.count_nonzero(labels)} positive labels, top_k {args.top_k}  (made in {time.perf_counter() - start:.1f} s)"
    )

    times = []
    for _ in range(args.repeat):
        _official_ties._draw_index.cache_clear()  # time the cold path: no shuffle draws reused
        start = time.perf_counter()
        value = gap(scores, labels, args.top_k)
        times.append(time.perf_counter() - start)
    runs = ", ".join(f"{t:.3f}" for t in times)
    print(f"vectorised gap: {min(times):.3f} s (best of {args.repeat} cold runs: {runs})")
    start = time.perf_counter()
    gap(scores, labels, args.top_k)
    print(
        f"  warm run (shuffle draws cached, as for a repeated evaluation): {time.perf_counter() - start:.3f} s"
    )
    print(f"  GAP = {value!r}")

    loop_videos = min(args.loop_videos or args.videos, args.videos)
    sub_scores, sub_labels = scores[:loop_videos], labels[:loop_videos]
    loop_value, loop_seconds, ap_seconds = official_loop_gap(sub_scores, sub_labels, args.top_k)
    loop_total = loop_seconds + ap_seconds
    reference = value if loop_videos == args.videos else gap(sub_scores, sub_labels, args.top_k)
    if loop_videos == args.videos:
        print(
            f"loop baseline: {loop_total:.3f} s  [per-video top-k loop {loop_seconds:.3f} s + official AP {ap_seconds:.3f} s]"
        )
    else:
        scale = args.videos / loop_videos
        print(
            f"loop baseline on the first {loop_videos} videos: {loop_total:.3f} s  [per-video top-k loop "
            f"{loop_seconds:.3f} s + official AP {ap_seconds:.3f} s]; extrapolated linearly x{scale:.2f} "
            f"to {args.videos} videos: {loop_total * scale:.3f} s"
        )
        loop_total *= scale
    print(
        f"  GAP = {loop_value!r}; identical to the vectorised GAP on the same videos: {loop_value == reference}"
    )
    print(f"speed-up (loop / vectorised best): {loop_total / min(times):.1f}x")


if __name__ == "__main__":
    main()
