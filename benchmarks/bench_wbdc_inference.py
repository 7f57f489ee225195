"""WBDC test inference under a time budget: videos/s of the fine-tuned single-stream model, eager fp32
against vmmlib's fast backends (`vmmlib.predict.backends`), measured in the same run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_wbdc_inference.py --size small --steps 12

What it does: writes the WBDC sample (`vmm sample wbdc` layout) to a temporary folder, fine-tunes
`wbdc_single_stream` (`--size`: "tiny" is the registered tiny variant; "small" 4 layers × 256 wide;
"base" the full 12 × 768 BERT-base shape) for `--steps` steps on the labelled videos, then runs the
test split (`--test` videos, 32 frames of 768-d features + title/ocr/asr text up to 256 tokens) in
batches of `--batch-size` through each backend. The timing covers the model only: the batches are
read, tokenised and collated once beforehand, so the data pipeline (the same for every backend) does
not blur the ratio. Each backend is prepared first (the ONNX export is not timed); then `--repeats`
rounds each time one pass of every backend in turn (after one warm-up batch), and each backend's
best pass is reported: interleaving keeps load from other processes from favouring one backend.
Each backend gets two figures: videos/s by the wall clock (the one the check uses) and by the CPU
time of the process (less blurred when other processes share the cores; it counts spinning waits).
Agreement = share of test videos whose argmax class equals eager's (`--min-agreement`, 99.9 %).

Every ratio line ends with the machine (`fast_inference.cpu_summary`: CPU model, the AVX-512 VNNI /
BF16 / AMX flags that decide int8 and bf16 speed, usable cpus, load average): a ratio means nothing
apart from the CPU and the load it was measured under. `--threads` sets torch's and ONNX Runtime's
threads; `--profile` prints where each backend's time goes on one batch (per op, its least time over
3 passes: torch profiler for eager / int8, ONNX Runtime's session profiling for the ONNX backends).

The "fastest" line names the quickest backend that reaches the agreement and its ratio to eager;
the script exits 1 if no backend agrees or that ratio is below `--min-ratio` (1.5 by default).
`tests/test_fast_inference.py` runs it at tiny size for agreement only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vmmlib.data.tokenize import load_tokenizer
from vmmlib.data.wbdc.reader import WBDCDataset, collate, default_vocab, open_split
from vmmlib.data.wbdc.sample import write_wbdc_sample
from vmmlib.models import create_model
from vmmlib.predict.backends import (
    BACKENDS,
    MIN_AGREEMENT,
    UNFUSED,
    OnnxModule,
    argmax_agreement,
    cpu_summary,
    prepare,
)
from vmmlib.predict.loop import tensors
from vmmlib.train.loop import fit, make_loader

SIZES = {
    "tiny": ("wbdc_single_stream_tiny", {}),
    "small": (
        "wbdc_single_stream",
        dict(text_layers=4, text_hidden=256, text_heads=4, text_intermediate=1024),
    ),
    "base": ("wbdc_single_stream", {}),
}


def build(size: str, vocab_size: int) -> torch.nn.Module:
    name, overrides = SIZES[size]
    return create_model(name, vocab_size=vocab_size, **overrides)


def objective(model, batch):
    return {"ce": F.cross_entropy(model(**tensors(batch))["logits"], batch["labels"])}


def time_backends(
    model: torch.nn.Module, batches: list[dict], backends: list[str], *, repeats: int, export_root: Path
) -> tuple[dict[str, torch.nn.Module], dict[str, tuple[float, float, float]]]:
    """Prepare each backend (the ONNX export is not timed), check its argmax agreement with eager, then
    time `repeats` rounds of one pass per backend in turn (interleaved, so load from other processes
    hits every backend alike); keep each one's best pass by the wall clock and by the CPU time of the
    process (all its threads: less blurred by other processes, but it counts spinning waits).
    Returns the modules and {backend: (videos/s by wall clock, videos/s by CPU time, agreement)}."""
    modules, agreement = {"eager": model}, {"eager": 1.0}
    for backend in backends:
        start = time.perf_counter()
        modules[backend] = prepare(model, backend, export_dir=export_root / backend)
        modules[backend](**batches[0])  # ONNX export happens here
        agreement[backend] = argmax_agreement(model, modules[backend], batches)
        fused = getattr(modules[backend], "fusions", None)
        print(
            f"{backend:>10}: ready in {time.perf_counter() - start:.0f} s"
            + (f", fused {fused}" if fused else "")
        )
    videos = sum(len(b["frames"]) for b in batches)
    wall, cpu = dict.fromkeys(modules, 0.0), dict.fromkeys(modules, 0.0)
    with torch.no_grad():
        for module in modules.values():
            module(**batches[0])  # warm-up
        for _ in range(repeats):
            for name, module in modules.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                for batch in batches:
                    module(**batch)
                wall[name] = max(wall[name], videos / (time.perf_counter() - start))
                cpu[name] = max(cpu[name], videos / max(time.process_time() - start_cpu, 1e-9))
    machine = cpu_summary()
    for name in modules:
        print(f"{name:>10}: {wall[name]:8.1f} videos/s   ×{wall[name] / wall['eager']:.2f} eager   "
              f"(by CPU time {cpu[name]:7.1f} videos/s ×{cpu[name] / cpu['eager']:.2f})   "
              f"agreement {100 * agreement[name]:6.2f} %   [{machine}]")  # fmt: skip
    return modules, {name: (wall[name], cpu[name], agreement[name]) for name in modules}


def profile_backends(
    modules: dict[str, torch.nn.Module], batch: dict, *, passes: int = 3, top: int = 8
) -> None:
    """Where each backend's time goes on one batch: the ops (torch profiler; ONNX Runtime's session
    profiling for the ONNX backends), each op's least time over `passes` passes (the pass least
    disturbed by other processes), the `top` ones with their share."""
    for name, module in modules.items():
        ops = (
            _ort_ops(module, batch, passes)
            if isinstance(module, OnnxModule)
            else _torch_ops(module, batch, passes)
        )
        total = sum(ops.values())
        print(f"profile {name}: {total:.0f} ms per batch of {len(batch['frames'])} (the ops' least times "
              f"over {passes} passes; {torch.get_num_threads()} threads, engine {torch.backends.quantized.engine})")  # fmt: skip
        for op, ms in sorted(ops.items(), key=lambda kv: -kv[1])[:top]:
            print(f"    {op:52s} {ms:8.1f} ms {100 * ms / total:5.1f} %")


@torch.no_grad()
def _torch_ops(module, batch: dict, passes: int) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    best: dict[str, float] = {}
    module(**batch)
    for _ in range(passes):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            module(**batch)
        for event in prof.key_averages():
            if event.self_cpu_time_total > 0:
                ms = event.self_cpu_time_total / 1e3
                best[event.key] = min(best.get(event.key, ms), ms)
    return best


def _ort_ops(module: OnnxModule, batch: dict, passes: int) -> dict[str, float]:
    import json
    from collections import defaultdict

    import onnxruntime as ort

    options = module.options
    options.enable_profiling = True
    session = ort.InferenceSession(
        str(module.path), options, providers=["CPUExecutionProvider"], disabled_optimizers=UNFUSED
    )
    options.enable_profiling = False
    feeds = {f"in_{k}": batch[k].numpy() for k in module.inputs}
    for _ in range(passes + 1):
        session.run(None, feeds)
    runs: dict[str, list[float]] = defaultdict(list)
    op_of = {}
    for event in json.loads(Path(session.end_profiling()).read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            runs[event["name"]].append(event["dur"] / 1e3)
            op_of[event["name"]] = event["args"]["op_name"]
    ops: dict[str, float] = defaultdict(float)
    for node, times in runs.items():
        ops[op_of[node]] += min(times[1:] or times)  # the first run warms up
    return dict(ops)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="small")
    ap.add_argument("--steps", type=int, default=12, help="fine-tuning steps (batches of 8); 0: untrained")
    ap.add_argument("--labeled", type=int, default=400)
    ap.add_argument("--test", type=int, default=256, help="test videos timed")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--backends", nargs="+", default=[b for b in BACKENDS if b != "eager"], choices=BACKENDS)
    ap.add_argument("--min-ratio", type=float, default=1.5)
    ap.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT)
    ap.add_argument(
        "--threads", type=int, default=0, help="torch and ONNX Runtime threads (0: torch's default)"
    )
    ap.add_argument("--profile", action="store_true", help="also print where each backend's time goes")
    ap.add_argument("--data-dir", default="", help="an existing WBDC dataset (default: a fresh sample)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_wbdc_"))
    try:
        return run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> int:
    """The benchmark with parsed `args`, its sample data and exports under `tmp`; the exit status."""
    data_dir = Path(args.data_dir) if args.data_dir else write_wbdc_sample(
        tmp / "wbdc", labeled=args.labeled, unlabeled=0, test=args.test, raw_frame_videos=0
    )  # fmt: skip
    tokenizer = load_tokenizer(default_vocab(data_dir))
    labeled, test = open_split(data_dir, "labeled"), open_split(data_dir, "test_a")
    train_set = WBDCDataset(labeled["entries"], tokenizer, features=labeled["features"], train=True)
    test_set = WBDCDataset(test["entries"][: args.test], tokenizer, features=test["features"])
    model = build(args.size, len(tokenizer))
    params = sum(p.numel() for p in model.parameters())
    print(f"model: wbdc_single_stream size={args.size} ({params / 1e6:.1f} M parameters); torch threads "
          f"{torch.get_num_threads()}, cpus {len(os.sched_getaffinity(0))}")  # fmt: skip
    start = time.perf_counter()
    if args.steps:  # 0: time the untrained model
        loader = make_loader(train_set, 8, shuffle=True, seed=0, collate_fn=collate)
        fit(model, loader, objective, steps=args.steps, lr=2e-4, warmup_steps=args.steps // 10,
            out_dir=tmp / "run", progress=False, log_every=0)  # fmt: skip
    print(f"fine-tuned {args.steps} steps in {time.perf_counter() - start:.0f} s")
    model.eval()
    batches = [
        tensors(collate([test_set[i] for i in range(s, min(s + args.batch_size, len(test_set)))]))
        for s in range(0, len(test_set), args.batch_size)
    ]
    lengths = [b["text_ids"].shape[1] for b in batches]
    print(f"test: {len(test_set)} videos in {len(batches)} batches of {args.batch_size}, "
          f"{batches[0]['frames'].shape[1]} frames, text length {min(lengths)}-{max(lengths)}")  # fmt: skip
    modules, results = time_backends(model, batches, args.backends, repeats=args.repeats, export_root=tmp)
    if args.profile:
        profile_backends(modules, batches[0])
    eager_rate = results.pop("eager")[0]
    valid = {b: r for b, (r, _, a) in results.items() if a >= args.min_agreement}
    if not valid:
        print(f"no fast backend agrees with eager on >= {100 * args.min_agreement:.1f} % of videos")
        return 1
    best = max(valid, key=valid.get)
    ratio = valid[best] / eager_rate
    verdict = "meets" if ratio >= args.min_ratio else "MISSES"
    print(f"fastest: {best} {valid[best]:.1f} videos/s vs eager {eager_rate:.1f} videos/s: ratio {ratio:.2f} "
          f"({verdict} --min-ratio {args.min_ratio}) on {cpu_summary()}, {torch.get_num_threads()} threads")  # fmt: skip
    return 0 if ratio >= args.min_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
