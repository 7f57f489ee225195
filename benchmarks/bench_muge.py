"""MUGE speed, each ratio measured in the same run: `vmm prepare muge` against Chinese-CLIP's own LMDB builder,
and chunked top-10 retrieval over a 100k-image gallery against a full-matrix argsort.

    python benchmarks/bench_muge.py prepare --images 20000 --check fast --reps 3
    python benchmarks/bench_muge.py retrieval --queries 2000 --gallery 100000 --dim 512

prepare: a `train_imgs.tsv` of `--images` real JPEGs (the sample generator's topic images at `--size` px,
base64, ~`--distinct` distinct ones repeated under new ids) and a `train_texts.jsonl` of one query per
image. (a) `cn_clip.preprocess.build_lmdb_dataset` (installed with `pip install --no-deps cn-clip`, run
in this process as its `__main__`, its tqdm silenced), which checks nothing; (b) `prepare_muge(check=...)`,
which checks every image: `fast` validates every base64 character, reads the file signature and requires
the end-of-image marker; `decode` has Pillow decode each image. `--workers` as `prepare_muge` (default:
its own choice, one checking process per spare CPU for a TSV of 256 MiB or more). Interleaved repetitions, best of `--reps`;
prints images/s of each and the ratio (b) / (a). The two LMDBs are checked identical.

retrieval: random L2-normalised float32 features. (a) `sim = Q Gᵀ` in full, `argsort` per row, first 10;
(b) `vmmlib.metrics.muge.similarity_top_k` (chunks of `--chunk` queries, `argpartition` top 10). Reports
queries/s and peak traced memory (tracemalloc: numpy's allocations) of each, and checks the rankings equal.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import runpy
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import lmdb
import numpy as np


def _write_data(root: Path, images: int, distinct: int, size: int) -> None:
    from vmmlib.data.muge.sample import COLOURS, PATTERNS, topic_image

    rng = np.random.default_rng(0)
    topics = [(c, p) for c in COLOURS for p in PATTERNS]
    pool = [
        base64.b64encode(topic_image(topics[i % len(topics)], rng, size)).decode() for i in range(distinct)
    ]
    with open(root / "train_imgs.tsv", "w") as f:
        for i in range(images):
            f.write(f"{100000 + i}\t{pool[i % distinct]}\n")
    with open(root / "train_texts.jsonl", "w") as f:
        for i in range(images):
            f.write(
                json.dumps({"text_id": i, "text": f"查询{i}", "image_ids": [100000 + i]}, ensure_ascii=False)
                + "\n"
            )


def _cn_clip_builder(data_dir: Path, out: Path) -> None:
    import cn_clip

    script = Path(cn_clip.__file__).parent / "preprocess" / "build_lmdb_dataset.py"
    argv = sys.argv
    sys.argv = [str(script), "--data_dir", str(data_dir), "--splits", "train", "--lmdb_dir", str(out)]
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = argv


def _dump(path: Path) -> dict:
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = {k: v for k, v in txn.cursor()}
    env.close()
    return items


def bench_prepare(args) -> None:
    from vmmlib.data.muge.prepare import prepare_muge

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write_data(root, args.images, args.distinct, args.size)
        mb = (root / "train_imgs.tsv").stat().st_size / 2**20
        print(f"{args.images} images, {mb:.1f} MiB of TSV, check={args.check}, workers={args.workers}")
        best = {"cn_clip": float("inf"), "vmmlib": float("inf")}
        for rep in range(args.reps):
            for name in best:
                out = root / f"{name}{rep}"
                start = time.perf_counter()
                if name == "cn_clip":
                    _cn_clip_builder(root, out)
                else:
                    prepare_muge(
                        root, ["train"], lmdb_dir=out, check=args.check, workers=args.workers, progress=False
                    )
                best[name] = min(best[name], time.perf_counter() - start)
        for env in ("imgs", "pairs"):
            ours = {k: v for k, v in _dump(root / "vmmlib0" / "train" / env).items()}
            assert ours == _dump(root / "cn_clip0" / "train" / env), f"the {env} LMDBs differ"
    rates = {k: args.images / v for k, v in best.items()}
    for k, v in rates.items():
        print(f"  {k:8s} {v:10.0f} images/s  (best of {args.reps}: {best[k]:.3f} s)")
    print(f"  ratio vmmlib / cn_clip = {rates['vmmlib'] / rates['cn_clip']:.2f}x (LMDBs identical)")


def _full_argsort(texts: np.ndarray, images: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(texts @ images.T), axis=1, kind="stable")[:, :k]


def _measure(fn):
    tracemalloc.start()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, seconds, peak


def bench_retrieval(args) -> None:
    from vmmlib.metrics.muge import similarity_top_k

    rng = np.random.default_rng(0)

    def unit(n):
        x = rng.standard_normal((n, args.dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    texts, images = unit(args.queries), unit(args.gallery)
    print(f"{args.queries} queries × {args.gallery} images × {args.dim}-d, top 10")
    full, t_full, m_full = _measure(lambda: _full_argsort(texts, images, 10))
    ours, t_ours, m_ours = _measure(lambda: similarity_top_k(texts, images, 10, chunk=args.chunk).index)
    assert np.array_equal(full, ours), "rankings differ"
    print(f"  full argsort  {args.queries / t_full:9.1f} queries/s   peak {m_full / 2**20:8.1f} MiB")
    print(f"  chunked top-k {args.queries / t_ours:9.1f} queries/s   peak {m_ours / 2**20:8.1f} MiB")
    print(
        f"  ratio = {t_full / t_ours:.1f}x faster, {m_full / max(m_ours, 1):.1f}x less peak memory (rankings equal)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--distinct", type=int, default=2000)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--check", default="fast", choices=["decode", "fast", "header", "none"])
    p.add_argument("--workers", type=int, help="checking processes (default: prepare_muge's own choice)")
    p.add_argument("--reps", type=int, default=3)
    p.set_defaults(func=bench_prepare)
    p = sub.add_parser("retrieval")
    p.add_argument("--queries", type=int, default=2000)
    p.add_argument("--gallery", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--chunk", type=int, default=128)
    p.set_defaults(func=bench_retrieval)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
