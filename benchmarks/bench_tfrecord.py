"""Records/s of reading QQ Browser TFRecords: the `tfrecord` PyPI package vs vmmlib streaming vs the vmmlib cache.

    python benchmarks/bench_tfrecord.py --records 20000 --tmp /tmp/bench

Writes one QQ-format file (id, title, asr_text, tag_id, category_id, frame_feature = 32 x 3072-byte fp16
frames, ~96 KiB a record), warms the page cache, then times, best of --reps interleaved passes, in one process:

  (a) `tfrecord.reader.tfrecord_loader(path, None, description)` + turning frame_feature into a float16
      (32, 1536) array: the least work that gives usable frames (no CRC check: the package has none)
  (b) vmmlib `read_examples` with frames cut straight into (L, 1536) float16, both CRCs verified
  (c) vmmlib `FrameCache`, a shuffled epoch after the build pass: `cache[i]` for a random permutation
      (frames copied out of the memory map + metadata)

and the peak RSS of a fresh process streaming the whole file with (b).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vmmlib.io import FrameCache, TFRecordWriter, encode_example, read_examples

FRAME_DIM, NUM_FRAMES = 1536, 32
DESCRIPTION = {
    "id": "byte",
    "title": "byte",
    "asr_text": "byte",
    "tag_id": "int",
    "category_id": "int",
    "frame_feature": "byte",
}
RSS_SCRIPT = """
import sys
import psutil
from vmmlib.io import read_examples

def high_water_mark():  # VmHWM: this process's peak RSS (reset by exec, unlike ru_maxrss)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

proc = psutil.Process()
after_imports = proc.memory_info().rss
sampled = n = 0
for r in read_examples(sys.argv[1], raw_dtypes={"frame_feature": ("<f2", 1536)}):
    n += r["frame_feature"].shape[0] == 32
    if n % 100 == 0:
        sampled = max(sampled, proc.memory_info().rss)
print(n, after_imports, sampled, high_water_mark())
"""


def write_qq_file(path: Path, num_records: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    pool = rng.standard_normal((64, NUM_FRAMES, FRAME_DIM)).astype("<f2")  # distinct frame blocks, reused
    chars = [chr(c) for c in range(0x4E00, 0x4E00 + 2000)]
    with TFRecordWriter(path) as writer:
        for i in range(num_records):
            title = "".join(rng.choice(chars, int(rng.integers(5, 30))))
            asr = "".join(rng.choice(chars, int(rng.integers(0, 120))))
            frames = np.roll(pool[i % 64], i, axis=0)
            record = {
                "id": str(2_000_000_000 + i),
                "title": title,
                "asr_text": asr,
                "tag_id": rng.integers(0, 20_000, int(rng.integers(1, 11))),
                "category_id": int(rng.integers(100, 141)) * 100 + int(rng.integers(0, 23)),
                "frame_feature": [f.tobytes() for f in frames],
            }
            writer.write(encode_example(record))


def warm_page_cache(*paths: Path) -> None:
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 24):
                pass


def run_tfrecord_package(path: Path) -> int:
    from tfrecord.reader import tfrecord_loader

    n = 0
    for record in tfrecord_loader(str(path), None, DESCRIPTION):
        frames = record["frame_feature"].view(np.float16).reshape(-1, FRAME_DIM)
        n += frames.shape[0] == NUM_FRAMES
    return n


def run_vmmlib_stream(path: Path) -> int:
    n = 0
    for record in read_examples(path, raw_dtypes={"frame_feature": ("<f2", FRAME_DIM)}):
        n += record["frame_feature"].shape[0] == NUM_FRAMES
    return n


def run_vmmlib_stream_bytes(path: Path) -> int:
    """The same through the generic decode (frames as list[bytes]) + a join, for comparison."""
    n = 0
    for record in read_examples(path):
        frames = np.frombuffer(b"".join(record["frame_feature"]), "<f2").reshape(-1, FRAME_DIM)
        n += frames.shape[0] == NUM_FRAMES
    return n


def run_cache_epoch(cache: FrameCache, order: np.ndarray) -> int:
    n = 0
    for i in order.tolist():
        n += cache[i]["frames"].shape[0] == NUM_FRAMES
    return n


def run_cache_frames_only(cache: FrameCache, order: np.ndarray) -> int:
    """Only the frame gather: copy each record's (L, 1536) block out of the memory map."""
    n = 0
    for i in order.tolist():
        n += cache.frames(i).copy().shape[0] == NUM_FRAMES
    return n


def timed_pass(fn, *args, expected: int) -> tuple[float, float]:
    """One pass: (wall-clock records/s, CPU-time records/s). CPU time is less sensitive to other
    processes sharing the machine."""
    t0, c0 = time.perf_counter(), time.process_time()
    count = fn(*args)
    wall, cpu = expected / (time.perf_counter() - t0), expected / (time.process_time() - c0)
    if count != expected:
        raise AssertionError(f"{fn.__name__} saw {count} complete records, expected {expected}")
    return wall, cpu


def check_same_frames(path: Path, cache: FrameCache, k: int = 50) -> None:
    from tfrecord.reader import tfrecord_loader

    ours = read_examples(path, raw_dtypes={"frame_feature": ("<f2", FRAME_DIM)})
    theirs = tfrecord_loader(str(path), None, DESCRIPTION)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if i == k:
            break
        ref = b["frame_feature"].view(np.float16).reshape(-1, FRAME_DIM)
        assert np.array_equal(a["frame_feature"], ref) and np.array_equal(cache[i]["frames"], ref)


def peak_rss_streaming(path: Path) -> tuple[int, float, float, float]:
    """(records, RSS after imports, max sampled RSS while streaming, peak RSS), MiB, in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(path)], capture_output=True, text=True, check=True
    )
    n, *sizes = map(int, out.stdout.split())
    return n, *(x / 2**20 for x in sizes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records in the test file")
    parser.add_argument("--tmp", type=Path, default=None, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--reps", type=int, default=3, help="timed passes per reader; the best is reported")
    parser.add_argument("--keep", action="store_true", help="keep the file and cache afterwards")
    args = parser.parse_args(argv)

    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="bench_tfrecord_"))
    tmp.mkdir(parents=True, exist_ok=True)
    path, cache_dir = tmp / "qq_bench.tfrecords", tmp / "qq_bench_cache"
    n = args.records
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()}"
    )
    try:
        t0 = time.perf_counter()
        write_qq_file(path, n)
        size = path.stat().st_size
        print(
            f"wrote {n} records, {size / 2**20:.0f} MiB ({size / n / 1024:.1f} KiB/record) in {time.perf_counter() - t0:.1f}s"
        )

        t0 = time.perf_counter()
        cache = FrameCache.for_tfrecords(
            path,
            cache_dir,
            frame_key="frame_feature",
            frame_dim=FRAME_DIM,
            meta_keys=("title", "asr_text", "tag_id", "category_id"),
            rebuild=True,
        )
        build_s = time.perf_counter() - t0
        print(f"cache build pass: {n / build_s:,.0f} records/s ({build_s:.1f}s, includes fsync)")
        check_same_frames(path, cache)
        warm_page_cache(path, cache_dir / "frames.npy")
        order = np.random.default_rng(0).permutation(n)

        readers = [
            ("(a)  tfrecord package + frames array       ", run_tfrecord_package, path),
            ("(b)  vmmlib read_examples, raw frames, CRC ", run_vmmlib_stream, path),
            ("(b') vmmlib read_examples, list[bytes]+join", run_vmmlib_stream_bytes, path),
            ("(c)  vmmlib FrameCache shuffled cache[i]   ", run_cache_epoch, cache, order),
            ("(c') vmmlib FrameCache shuffled frames only", run_cache_frames_only, cache, order),
        ]
        # passes interleaved (a, b, b', c, c', a, b, ...) so a change in machine load hits all alike
        passes: dict[str, list[tuple[float, float]]] = {label: [] for label, *_ in readers}
        for _ in range(args.reps):
            for label, fn, *fn_args in readers:
                passes[label].append(timed_pass(fn, *fn_args, expected=n))
        wall, cpu = {}, {}
        for label, *_ in readers:
            wall[label[:4]] = max(w for w, _ in passes[label])
            cpu[label[:4]] = max(c for _, c in passes[label])
            print(
                f"{label} {wall[label[:4]]:>9,.0f} records/s   (CPU time: {cpu[label[:4]]:>9,.0f}/s)   "
                f"passes: {', '.join(f'{w:,.0f}' for w, _ in passes[label])}"
            )
        a, b, b2, c, c2 = (wall[k] for k in ("(a) ", "(b) ", "(b')", "(c) ", "(c')"))
        ca, cb, cc = (cpu[k] for k in ("(a) ", "(b) ", "(c) "))
        print(f"b/a = {b / a:.2f}   (target >= 1.5; CPU time {cb / ca:.2f})   b'/a = {b2 / a:.2f}")
        print(f"c/a = {c / a:.2f}   (target >= 4;   CPU time {cc / ca:.2f})   c'/a = {c2 / a:.2f}")
        count, base_mib, sampled_mib, peak_mib = peak_rss_streaming(path)
        print(
            f"RSS streaming all {count} records ({size / 2**20:.0f} MiB file) in a fresh process: "
            f"after imports {base_mib:.0f} MiB, max while streaming {sampled_mib:.0f} MiB, peak (VmHWM) {peak_mib:.0f} MiB"
        )
        print(f"load at the end {os.getloadavg()}")
    finally:
        if not args.keep:
            shutil.rmtree(cache_dir, ignore_errors=True)
            path.unlink(missing_ok=True)
            if args.tmp is None:
                shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
