"""Cost of the run folders' data fingerprint (`vmmlib.runs.data_fingerprint`): files per second and
bytes read, on a synthetic folder of N files of S MiB (cold page cache not forced).

    python benchmarks/bench_data_fingerprint.py [--files 200] [--mib 1] [--dir /tmp/vmm_fp_bench]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

from vmmlib.runs import DATA_BLOCK, data_fingerprint


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--mib", type=float, default=1.0)
    parser.add_argument("--dir", default="/tmp/vmm_fp_bench")
    args = parser.parse_args()
    root = Path(args.dir)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    size = int(args.mib * (1 << 20))
    for i in range(args.files):
        (root / f"shard{i:05d}.bin").write_bytes(os.urandom(size))
    start = time.perf_counter()
    prints = data_fingerprint(root)
    seconds = time.perf_counter() - start
    read = sum(min(size, 2 * DATA_BLOCK) for _ in prints)
    print(
        f"{len(prints)} files of {args.mib} MiB: {seconds:.3f} s, {len(prints) / seconds:.0f} files/s, "
        f"{read / (1 << 20):.1f} MiB read of {len(prints) * size / (1 << 20):.0f} MiB"
    )
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
