"""Peak RSS of `vmm validate qqbrowser` and `vmm validate wbdc` on big files, streaming vs whole-file (16.6).

    python benchmarks/bench_validate_memory.py                       # the issue's sizes
    python benchmarks/bench_validate_memory.py --qq-mib 64 --qq-small-mib 16 --wbdc-mb 20   # quick

Builds, in a temporary folder:
  (a) result.zip whose result.json is --qq-mib MiB (default 512, the member cap) of 256-d float16
      vectors, as the official baseline writes them;
  (b) result.zip whose result.json is --qq-small-mib MiB of one-value vectors (`"id123":[0.5]`): the
      shape that made the old validator grow ~19× its member (many ids, each a numpy array);
  (c) a WBDC result.csv of --wbdc-mb MB (`id,category` lines, every id distinct).

Each validator runs in its own subprocess (`vmmlib.app.cli.main(["validate", ...])`), which reports its
peak RSS (VmHWM of /proc/self/status: `resource.getrusage`'s ru_maxrss of a freshly exec'd child
starts at its parent's peak), the peak after imports, and the seconds taken. The old whole-file
validators (the modules as of commit OLD_COMMIT, read with `git show`) run in the same way on
versions of the same files cut to 1/--old-divisor of the size (at full size they need ~10 GB); the
ratio column is (peak - after imports) / file size, so both are comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

OLD_COMMIT = "29680c1"  # main before issue 16's streaming validators
REPO = Path(__file__).resolve().parents[1]
_MiB = 1 << 20

CHILD = r"""
import json, resource, sys, time, importlib.util
task, path, old = sys.argv[1], sys.argv[2], sys.argv[3]
def rss():  # peak RSS in MB; getrusage's ru_maxrss would include the parent's peak (kept across exec)
    hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
    return int(hwm[0].split()[1]) / 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
if old:
    spec = importlib.util.spec_from_file_location("old_validator", old)
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    run = lambda: module.validate(path)
else:
    import io, contextlib
    from vmmlib.app.cli import main
    from vmmlib.submissions import get_format
    get_format(task)  # import the format module before the baseline
    def run():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return main(["validate", task, path])
base = rss(); start = time.perf_counter()
result = run()
print(json.dumps({"peak_mb": rss(), "base_mb": base, "seconds": time.perf_counter() - start,
                  "result": result if isinstance(result, int) else len(result)}))
"""


def write_qq(path: Path, mib: float, dim: int, seed: int = 0) -> int:
    """result.zip with a result.json of about `mib` MiB; returns the member's size in bytes."""
    rng = np.random.default_rng(seed)
    pool = [json.dumps(v) for v in rng.normal(size=(512, dim)).astype(np.float16).tolist()]
    target, size, i = int(mib * _MiB) - 8192, 1, 0  # the cap itself is allowed: stay just under it
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("result.json", "w", force_zip64=True) as f:
            f.write(b"{")
            chunk = []
            while size < target - 64:
                item = f'{"," if i else ""}"{i}":{pool[i % len(pool)]}'
                chunk.append(item)
                size += len(item)
                i += 1
                if len(chunk) == 4096:
                    f.write("".join(chunk).encode())
                    chunk = []
            f.write(("".join(chunk) + "}").encode())
    return size + 1


def write_wbdc(path: Path, mb: float) -> int:
    from vmmlib.io.wbdc_categories import CATEGORY_IDS

    target, size, i = int(mb * 1e6), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while size < target:
            lines = "".join(f"{100000000000 + i + k},{CATEGORY_IDS[(i + k) % 200]}\n" for k in range(10_000))
            f.write(lines)
            size += len(lines)
            i += 10_000
    return size


def measure(task: str, path: Path, old: Path | None) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, task, str(path), str(old or "")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def old_module(task: str, folder: Path) -> Path | None:
    try:
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{OLD_COMMIT}:vmmlib/submissions/{task}.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    path = folder / f"old_{task}.py"
    path.write_text(source)
    return path


def report(name: str, size: int, result: dict) -> None:
    grown = result["peak_mb"] - result["base_mb"]
    print(
        f"{name:<44} {size / 1e6:9.1f} MB  peak RSS {result['peak_mb']:8.1f} MB  "
        f"(after imports {result['base_mb']:6.1f})  grown {grown:8.1f} MB = {grown * 1e6 / _MiB / (size / _MiB):6.2f}×"
        f"  {result['seconds']:7.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qq-mib", type=float, default=512, help="result.json of 256-d vectors (MiB)")
    parser.add_argument(
        "--qq-small-mib", type=float, default=128, help="result.json of one-value vectors (MiB)"
    )
    parser.add_argument("--wbdc-mb", type=float, default=200, help="WBDC result.csv (MB)")
    parser.add_argument(
        "--old-divisor", type=float, default=16, help="the old validators get 1/this of the size"
    )
    parser.add_argument("--skip-old", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        folder = Path(tmp)
        cases = [
            ("qqbrowser", "qq 256-d float16 vectors", lambda p, s: write_qq(p, s, 256), args.qq_mib, ".zip"),
            ("qqbrowser", "qq one-value vectors (the 19x shape)", lambda p, s: write_qq(p, s, 1), args.qq_small_mib, ".zip"),
            ("wbdc", "wbdc result.csv", lambda p, s: write_wbdc(p, s * _MiB / 1e6), args.wbdc_mb * 1e6 / _MiB, ".csv"),
        ]  # fmt: skip
        for k, (task, name, write, size, suffix) in enumerate(cases):
            path = folder / f"case{k}{suffix}"
            member = write(path, size)
            report(f"new  {name}", member, measure(task, path, None))
            old = None if args.skip_old else old_module(task, folder)
            if old is not None:
                small = folder / f"case{k}-small{suffix}"
                member_small = write(small, size / args.old_divisor)
                report(f"old  {name} (1/{args.old_divisor:g} size)", member_small, measure(task, small, old))
                small.unlink()
            path.unlink()


if __name__ == "__main__":
    main()
