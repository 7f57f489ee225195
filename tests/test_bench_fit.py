"""`benchmarks/bench_fit.py` at its tiny size, in this process, so the benchmark never rots."""

import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_fit.py"


def test_bench_fit_measures_both_workloads_at_the_tiny_size():
    spec = importlib.util.spec_from_file_location("bench_fit", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(
        ["--tiny", "--inline", "--precisions", "no", "--processes", "1", "--steps", "1", "--warmup", "1"]
    )
    assert [r["workload"] for r in rows] == ["uniter", "clip"]
    assert all(r["samples_per_s"] > 0 and r["params_M"] > 0 and r["global_batch"] == 4 for r in rows), rows
