"""Training throughput of `vmmlib.train.loop.fit`: samples/s and, on a GPU, model FLOPs utilisation.

Two workloads, each a full `fit` step (forward, backward, clip, the device-side NaN guard, AdamW):
- `uniter`: UNITER (`uniter_qq`, a BERT-base stack at `--size base`) on frame features + title
  tokens, BCE on the tag head;
- `clip`: a Chinese-CLIP ViT-B/16 + RoBERTa-base step (`cnclip_vitb16`) with the symmetric
  contrastive loss over the batch.

Each configuration (workload × precision × processes) runs in fresh processes (Accelerate fixes
mixed precision once per process); N processes are `torch.multiprocessing` workers joined by gloo on
CPU (NCCL on GPUs), the same DDP path `accelerate launch` and `notebook_launcher` take. Time is
taken between the objective's calls after `--warmup` steps, so setup and the final save are out.

    samples/s = global batch × timed steps / seconds
    MFU       = 6 · parameters · tokens per step / step time / peak FLOP/s   (GPU only; the
                transformer parts dominate the parameters; tokens = frames + text, or patches + text)

`--memory` instead compares one step with and without activation checkpointing
(`create_model(..., activation_checkpointing=True)`): the bytes autograd keeps for the backward pass
(exact), and the step's peak RSS growth (CPU; it shows the saving only once activations outweigh the
weights, gradients and allocator slack) or max_memory_allocated (GPU).

    python benchmarks/bench_fit.py --size tiny                       # seconds: the test runs this
    python benchmarks/bench_fit.py --size small --processes 1 2      # CPU figures
    python benchmarks/bench_fit.py --size base --precisions no bf16  # on a GPU: BERT-base / ViT-B/16
    python benchmarks/bench_fit.py --size small --memory             # activation checkpointing
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Dense bf16 / tf32-or-fp32 peak TFLOP/s by device name fragment (vendor data sheets, SXM parts).
PEAK_TFLOPS = {"H200": (989.0, 494.0), "H100": (989.0, 494.0), "A100": (312.0, 156.0), "L4": (121.0, 60.0)}
SIZES = {  # per workload: model overrides, batch, frames/patch grid, text length
    "tiny": {"layers": 2, "hidden": 64, "heads": 2, "ffn": 128, "batch": 4, "frames": 8, "text": 16, "image": 32},
    "small": {"layers": 4, "hidden": 256, "heads": 4, "ffn": 1024, "batch": 8, "frames": 16, "text": 32, "image": 64},
    "base": {"layers": 12, "hidden": 768, "heads": 12, "ffn": 3072, "batch": 32, "frames": 32, "text": 32, "image": 224},
}  # fmt: skip


def build(workload: str, size: str, checkpointing: bool = False):
    """(model, a sample maker `sample(generator)`, tokens per sample) of a workload at a size."""
    from vmmlib.models import create_model

    s = SIZES[size]
    text = {"text_layers": s["layers"], "text_hidden": s["hidden"], "text_heads": s["heads"]}
    text["text_intermediate"] = s["ffn"]
    extra = {"activation_checkpointing": True} if checkpointing else {}
    if workload == "uniter":
        model = create_model(
            "uniter_qq", num_tags=1000, feature_dim=1536, vocab_size=21128, mlm_head=False, **text, **extra
        )

        def sample(g):
            return {
                "frames": torch.randn(s["frames"], 1536, generator=g),
                "frame_mask": torch.ones(s["frames"], dtype=torch.long),
                "text_ids": torch.randint(1, 21128, (s["text"],), generator=g),
                "text_mask": torch.ones(s["text"], dtype=torch.long),
                "labels": (torch.rand(1000, generator=g) < 0.003).float(),
            }

        return model, sample, s["frames"] + s["text"] + 1
    vision = {"vision_layers": s["layers"], "vision_hidden": s["hidden"], "vision_heads": s["heads"]}
    vision["vision_intermediate"] = s["ffn"]
    model = create_model(
        "cnclip_vitb16", image_size=s["image"], patch_size=16, vocab_size=21128, **vision, **text, **extra
    )

    def sample(g):
        return {
            "frames": torch.randn(3, s["image"], s["image"], generator=g),
            "text_ids": torch.randint(1, 21128, (s["text"],), generator=g),
            "text_mask": torch.ones(s["text"], dtype=torch.long),
        }

    return model, sample, (s["image"] // 16) ** 2 + 1 + s["text"]


def objective_for(workload: str):
    def uniter(model, batch):
        out = model(**{k: v for k, v in batch.items() if k != "labels"})
        return {"bce": F.binary_cross_entropy_with_logits(out["tag_logits"].float(), batch["labels"])}

    def clip(model, batch):
        out = model(**batch)
        logits = out["logit_scale"] * out["image_features"].float() @ out["text_features"].float().T
        target = torch.arange(len(logits), device=logits.device)
        return {"contrastive": (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2}

    return uniter if workload == "uniter" else clip


class Samples(torch.utils.data.Dataset):
    """`n` synthetic samples, each from its own seed."""

    def __init__(self, make, n: int):
        self.make, self.n = make, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        return self.make(torch.Generator().manual_seed(i))


def _worker(rank: int, cfg: dict, port: int, results) -> None:
    if port:  # a spawned process of a group (port 0: this process, inline)
        os.environ.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank)
        )
        os.environ["WORLD_SIZE"] = str(cfg["processes"])
        torch.set_num_threads(max(1, cfg["threads"] // cfg["processes"]))
    from accelerate import Accelerator

    from vmmlib.train.loop import fit

    acc = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg["precision"])
    torch.manual_seed(0)
    model, make, tokens = build(cfg["workload"], cfg["size"])
    steps = cfg["warmup"] + cfg["steps"] + 1  # the timed steps end where the next one starts
    from vmmlib.train.loop import make_loader

    batch = SIZES[cfg["size"]]["batch"]
    loader = make_loader(Samples(make, batch * cfg["processes"] * 4), batch, shuffle=False, drop_last=True)
    stamps = []
    objective = objective_for(cfg["workload"])

    def timed(model, batch):
        if acc.device.type == "cuda":
            torch.cuda.synchronize()  # only here, in the benchmark: the step's end is the next's start
        stamps.append(time.perf_counter())
        return objective(model, batch)

    with tempfile.TemporaryDirectory() as out:
        fit(
            model, loader, timed, steps=steps, lr=1e-4, out_dir=out, warmup_steps=0, log_every=steps,
            progress=False, accelerator=acc, mixed_precision=cfg["precision"],
        )  # fmt: skip
    if acc.is_main_process:
        seconds = stamps[-1] - stamps[cfg["warmup"]]
        timed_steps = len(stamps) - 1 - cfg["warmup"]
        params = sum(p.numel() for p in model.parameters())
        batch *= cfg["processes"]
        row = {**cfg, "params_M": round(params / 1e6, 2), "global_batch": batch}
        row["samples_per_s"] = round(batch * timed_steps / seconds, 2)
        row["step_ms"] = round(1000 * seconds / timed_steps, 1)
        peak = _peak_flops(cfg["precision"])
        if peak:
            row["mfu_pct"] = round(100 * 6 * params * tokens * batch / (seconds / timed_steps) / peak, 1)
        results.put(row)


def _peak_flops(precision: str) -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, (bf16, tf32) in PEAK_TFLOPS.items():
        if key in name:
            return 1e12 * (bf16 if precision == "bf16" else tf32)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_config(cfg: dict, inline: bool = False) -> dict:
    """One configuration in `cfg["processes"]` fresh processes (or, `inline`, in this one: one process
    whose Accelerate state may be fixed already); the main process's figures."""
    if inline:
        import queue

        results = queue.SimpleQueue()
        _worker(0, {**cfg, "processes": 1}, 0, results)
        return results.get()
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(
        _worker, args=(cfg, _free_port(), results), nprocs=cfg["processes"], start_method="spawn"
    )
    return results.get()


def _memory_worker(cfg: dict, results) -> None:
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    model, make, _ = build(cfg["workload"], cfg["size"], checkpointing=cfg["checkpointing"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).train()
    samples = [make(torch.Generator().manual_seed(i)) for i in range(SIZES[cfg["size"]]["batch"])]
    batch = {k: torch.stack([x[k] for x in samples]).to(device) for k in samples[0]}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    saved = []  # bytes autograd keeps for the backward pass: the activations checkpointing drops

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        terms = objective_for(cfg["workload"])(model, batch)
    sum(terms.values()).backward()
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # KiB → MiB, step only
    saved_mb = round(sum(saved) / 2**20, 1)
    results.put({**cfg, "saved_for_backward_MiB": saved_mb, "peak_step_MiB": round(peak_mb, 1)})


def run_memory(cfg: dict) -> dict:
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    p = ctx.Process(target=_memory_worker, args=(cfg, results))
    p.start()
    row = results.get()
    p.join()
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=list(SIZES), default="tiny")
    ap.add_argument("--tiny", action="store_true", help="same as --size tiny")
    ap.add_argument("--workloads", nargs="+", default=["uniter", "clip"], choices=["uniter", "clip"])
    ap.add_argument("--precisions", nargs="+", default=["no", "bf16"], choices=["no", "bf16"])
    ap.add_argument("--processes", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads in all")
    ap.add_argument(
        "--memory", action="store_true", help="peak memory with vs without activation checkpointing"
    )
    ap.add_argument("--json", type=Path, help="also write the rows here")
    ap.add_argument("--inline", action="store_true", help="one process, this one (no spawn): the test's mode")
    args = ap.parse_args(argv)
    size = "tiny" if args.tiny else args.size
    rows = []
    for workload in args.workloads:
        if args.memory:
            for ckpt in (False, True):
                cfg = {"workload": workload, "size": size, "checkpointing": ckpt, "threads": args.threads}
                rows.append(run_memory(cfg))
                print(json.dumps(rows[-1]), flush=True)
            continue
        for precision in args.precisions:
            for n in args.processes:
                cfg = {"workload": workload, "size": size, "precision": precision, "processes": n}
                cfg.update(steps=args.steps, warmup=args.warmup, threads=args.threads)
                rows.append(run_config(cfg, inline=args.inline))
                print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
