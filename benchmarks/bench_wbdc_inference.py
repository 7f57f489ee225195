"""WBDC test inference under a time budget: videos/s of the fine-tuned single-stream model, eager fp32
against vmmlib's fast backends (`vmmlib.fast_inference`), measured in the same run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_wbdc_inference.py --size small --steps 12

What it does: writes the WBDC sample (`vmm sample wbdc` layout) to a temporary folder, fine-tunes
`wbdc_single_stream` (`--size`: "tiny" is the registered tiny variant; "small" 4 layers × 256 wide;
"base" the full 12 × 768 BERT-base shape) for `--steps` steps on the labelled videos, then runs the
test split (`--test` videos, 32 frames of 768-d features + title/ocr/asr text up to 256 tokens) in
batches of `--batch-size` through each backend. The timing covers the model only: the batches are
read, tokenised and collated once beforehand, so the data pipeline (the same for every backend) does
not blur the ratio. Each backend is prepared first (the ONNX export is not timed); then `--repeats`
rounds each time one pass of every backend in turn (after one warm-up batch), and each backend's
best pass is reported: interleaving keeps load from other processes from favouring one backend. Agreement = share of test videos whose argmax class equals
eager's; the fast path must reach ≥ 99.9 %.

The "fastest" line names the quickest backend whose agreement is ≥ 99.9 % and its ratio to eager;
the script exits 1 if that ratio is below `--min-ratio` (1.5 by default).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from vmmlib.data.sample_wbdc import write_wbdc_sample
from vmmlib.data.tokenize import load_tokenizer
from vmmlib.data.wbdc import WBDCDataset, collate, default_vocab, open_split
from vmmlib.fast_inference import BACKENDS, argmax_agreement, prepare, throughput
from vmmlib.models import create_model
from vmmlib.predict import tensors
from vmmlib.train import fit, make_loader

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
) -> dict[str, tuple[float, float]]:
    """Prepare each backend (the ONNX export is not timed), check its argmax agreement with eager, then
    time `repeats` rounds of one pass per backend in turn (interleaved, so load from other processes
    hits every backend alike); print each one's best pass. Returns {backend: (videos/s, agreement)}."""
    modules, agreement = {"eager": model}, {"eager": 1.0}
    for backend in backends:
        start = time.perf_counter()
        modules[backend] = prepare(model, backend, export_dir=export_root / backend)
        modules[backend](**batches[0])  # ONNX export happens here
        agreement[backend] = argmax_agreement(model, modules[backend], batches)
        print(f"{backend:>10}: ready in {time.perf_counter() - start:.0f} s")
    rates = dict.fromkeys(modules, 0.0)
    for _ in range(repeats):
        for name, module in modules.items():
            rates[name] = max(rates[name], throughput(module, batches, warmup=1, repeats=1))
    for name, rate in rates.items():
        print(f"{name:>10}: {rate:8.1f} videos/s   agreement {100 * agreement[name]:6.2f} %   "
              f"×{rate / rates['eager']:.2f} eager")  # fmt: skip
    return {name: (rates[name], agreement[name]) for name in modules}


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
    ap.add_argument("--data-dir", default="", help="an existing WBDC dataset (default: a fresh sample)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="bench_wbdc_"))
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
    results = time_backends(model, batches, args.backends, repeats=args.repeats, export_root=tmp)
    eager_rate = results.pop("eager")[0]
    valid = {b: r for b, (r, a) in results.items() if a >= 0.999}
    if not valid:
        print("no fast backend agrees with eager on >= 99.9 % of videos")
        return 1
    best = max(valid, key=valid.get)
    ratio = valid[best] / eager_rate
    print(f"fastest: {best} {valid[best]:.1f} videos/s vs eager {eager_rate:.1f} videos/s: ratio {ratio:.2f}")
    return 0 if ratio >= args.min_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
