"""Faster inference backends for a trained model, for predictions under a time budget.

The WBDC 2022 semi-final timed `inference.sh` and voided runs that were too slow; teams exported to
ONNX / TensorRT (SPEC §9.1). `prepare(model, backend)` returns a module to predict with, called
exactly like the model (`out = fast(**batch)`, a dict of tensors), so a task's prediction loop takes
it unchanged (`predict_options={"infer_backend": "onnx"}`).

Backends (`BACKENDS`):

- "eager": the model itself in eval mode (fp32 on CPU; `vmmlib.predict.loop` adds bf16 autocast on GPU).
- "onnx": ONNX Runtime (CPU) on the graph `torch.onnx.export(dynamo=True)` makes of the model at its
  first call, every input dimension dynamic, with ONNX Runtime's transformer fusions applied
  (`onnxscript.rewriter.ort_fusions`: scaled-dot-product attention → one `MultiHeadAttention` node,
  bias + GELU → `BiasGelu`; residual + LayerNorm stays two nodes, as ORT's `SkipLayerNormalization`
  is ~5× slower on CPU); fp32, so it agrees with eager to ~1e-6. Needs the optional packages `onnx`, `onnxscript` and `onnxruntime`.
- "onnx_int8": the same fused graph with its MatMul weights quantised to int8 by ONNX Runtime's
  dynamic quantisation (activations quantised per call).
- "int8": PyTorch dynamic int8 quantisation of every `nn.Linear` (`torch.ao.quantization`, on the
  quantised engine torch picks, `torch.backends.quantized.engine`); no extra package.
- "auto" (`choose_backend`): times eager and the others on a few batches and keeps the fastest that
  agrees with eager; never one slower than eager.

Where the time goes (the 4 × 256 single-stream model, batches of 32 videos of ~286 positions, one
thread, CPU time of an AMD EPYC with AVX-512 VNNI and BF16, no AMX; issue 21): per layer eager spends
~183 ms in the Linear GEMMs (72 %), ~46 ms in attention (18 %), ~21 ms in GELU (8 %). int8 makes the
GEMMs ~2.8× faster (~65 ms, activation quantisation included) and leaves attention and GELU in fp32,
so an int8 path lands near 2× eager (torch int8 ~1.8-1.9×, fused ONNX int8 ~2.0×, bf16 autocast
~1.7×; fp32 ONNX ~1.07×): the fp32 remainder bounds it. Unfused, ONNX Runtime's graph lost ~15 % of
its time in `Where`/`IsNaN` of the exported attention mask, and fused, ~15 % in ORT's slow
`SkipLayerNormalization` kernel (now split back); with several threads on shared cores,
spinning ORT workers (the default of ONNX Runtime) cost more than they save.

int8 paths trade a little accuracy for speed: check `argmax_agreement` on held-out batches before
submitting with them (`benchmarks/bench_wbdc_inference.py` and "auto" do).
"""

from __future__ import annotations

import copy
import inspect
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = [
    "AUTO_CANDIDATES", "BACKENDS", "CHOICES", "OnnxModule", "argmax_agreement", "choose_backend", "cpu_summary",
    "prepare", "prepare_models", "race", "throughput",
]  # fmt: skip

BACKENDS = ("eager", "onnx", "onnx_int8", "int8")
CHOICES = (*BACKENDS, "auto")  # what `infer_backend` accepts
AUTO_CANDIDATES = ("int8", "onnx_int8", "onnx")  # what "auto" races against eager
MIN_AGREEMENT = 0.999  # argmax agreement with eager a fast path must reach


def prepare(
    model: nn.Module,
    backend: str = "eager",
    *,
    threads: int | None = None,
    export_dir: str | Path | None = None,
    fuse: bool = True,
    spinning: bool = False,
) -> nn.Module:
    """A module that predicts like `model` (same call, same output keys) on `backend`.

    Args:
        model: a trained model whose forward takes tensors as keywords and returns a dict of tensors.
        backend: one of `BACKENDS`.
        threads: intra-op threads of ONNX Runtime (None: `torch.get_num_threads()`).
        export_dir: where the ONNX backends write `model.onnx` (None: a temporary folder).
        fuse: apply ONNX Runtime's transformer fusions to the exported graph (ONNX backends).
        spinning: let ONNX Runtime's idle workers spin (a little faster on an idle machine, slower
            when other processes share the cores).

    Returns:
        `model` in eval mode ("eager"), a quantised copy ("int8") or an `OnnxModule`; `model` itself
        is left as it was otherwise.

    Raises:
        ValueError: an unknown backend (naming the valid ones).
        ImportError: an ONNX backend without onnxruntime / onnxscript installed.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown infer_backend {backend!r}; valid choices: {', '.join(BACKENDS)}")
    if backend == "eager":
        return model.eval()
    if backend == "int8":
        from torch.ao.quantization import quantize_dynamic

        return quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear}, dtype=torch.qint8)
    for package in ("onnxruntime", "onnxscript", "onnx"):
        try:
            __import__(package)
        except ImportError as err:
            raise ImportError(
                f"infer_backend={backend!r} needs {package}: pip install onnx onnxscript onnxruntime"
            ) from err
    return OnnxModule(model, quantize=backend == "onnx_int8", threads=threads, export_dir=export_dir, fuse=fuse,
                      spinning=spinning)  # fmt: skip


def prepare_models(
    models: nn.Module | Iterable[nn.Module],
    backend: str = "eager",
    *,
    sample: list[dict] | None = None,
    **options,
) -> tuple[list[nn.Module], torch.device | None, dict]:
    """What a task's `predict(..., infer_backend=...)` calls: each model through `prepare`, the device to
    predict on (None: the default, a GPU when present, for "eager"; the CPU otherwise, as the int8 and
    ONNX Runtime backends run there) and a report for the run's metrics ({"infer_backend": ...}; "auto"
    adds what it measured). Pass the first two on to `vmmlib.predict.loop.predict_all`.

    Args:
        backend: one of `CHOICES`; "auto" runs `choose_backend` on the first model over `sample`
            (a few batches of tensors, as the models take them) and prepares every model the same way
            (on a machine with a GPU it is "eager": the fast backends run on the CPU).
    """
    models = [models] if isinstance(models, nn.Module) else list(models)
    report = {"infer_backend": backend}
    if backend == "auto" and torch.cuda.is_available():  # the fast paths are CPU ones: a GPU beats them
        backend, report = "eager", {"infer_backend": "eager", "infer_auto": "a GPU is present"}
    if backend == "auto":
        if not sample:
            raise ValueError('infer_backend="auto" needs a few sample batches to time the backends on')
        auto = {k: options.pop(k) for k in ("candidates", "min_agreement", "rounds", "log") if k in options}
        first, report = choose_backend(models[0], sample, **auto, **options)
        backend = report["infer_backend"]
        prepared = [first] + [prepare(m, backend, **options) for m in models[1:]]
    else:
        prepared = [prepare(m, backend, **options) for m in models]
    return prepared, (None if backend == "eager" else torch.device("cpu")), report


def choose_backend(
    model: nn.Module,
    sample: list[dict],
    *,
    candidates: Iterable[str] | None = None,
    min_agreement: float = MIN_AGREEMENT,
    rounds: int = 3,
    log: Callable[[str], None] | None = print,
    **options,
) -> tuple[nn.Module, dict]:
    """The fastest backend for `model` on this machine that agrees with eager, measured on `sample`.

    Each candidate is prepared (a candidate whose packages are missing is skipped), its argmax
    agreement with eager taken on `sample`, then eager and the candidates are timed in `rounds`
    interleaved rounds (`race`, on the CPU). The pick is the fastest candidate that reaches
    `min_agreement` and beats eager; eager otherwise, so "auto" is never slower than eager.

    Args:
        sample: a few batches (dicts of CPU tensors as the model takes them); 2-3 of the real batch size.
        candidates: the backends to try (None: `AUTO_CANDIDATES`).
        options: passed on to `prepare` (threads, export_dir).

    Returns:
        (the prepared module, report): report = {"infer_backend": pick, "infer_engine": torch's
        quantised engine, "infer_rate_<backend>": items/s, "infer_agreement_<backend>": 0-1, ...}.
    """
    model = model.cpu().eval()
    modules, agreement, skipped = {"eager": model}, {"eager": 1.0}, {}
    root = options.pop("export_dir", None)
    for name in AUTO_CANDIDATES if candidates is None else candidates:
        try:
            modules[name] = prepare(model, name, export_dir=Path(root) / name if root else None, **options)
            agreement[name] = argmax_agreement(model, modules[name], sample)
        except ImportError as err:
            modules.pop(name, None)
            skipped[name] = str(err)
    rates = race(modules, sample, rounds=rounds)
    fit = [n for n in modules if n != "eager" and agreement[n] >= min_agreement and rates[n] > rates["eager"]]
    pick = max(fit, key=rates.__getitem__, default="eager")
    report = {"infer_backend": pick, "infer_engine": torch.backends.quantized.engine,
              "infer_threads": torch.get_num_threads(), "infer_cpu": cpu_summary()}  # fmt: skip
    report |= {f"infer_rate_{n}": round(r, 2) for n, r in rates.items()}
    report |= {f"infer_agreement_{n}": a for n, a in agreement.items()}
    report |= {f"infer_skipped_{n}": why for n, why in skipped.items()}
    if log:
        measured = ", ".join(f"{n} {rates[n]:.1f}/s (agree {100 * agreement[n]:.1f} %)" for n in modules)
        log(f"infer_backend auto: picked {pick}; measured {measured}; on {report['infer_cpu']}"
            + (f"; skipped {', '.join(skipped)}" if skipped else ""))  # fmt: skip
    return modules[pick], report


class OnnxModule(nn.Module):
    """`model` run by ONNX Runtime on CPU; exported at the first call from that call's inputs.

    The graph's inputs are the tensor keywords of that call that `model.forward` names; its outputs
    the tensors of the returned dict, under the same keys (named `in_<key>` / `out_<key>` in the
    graph, apart from its node names). Every dimension of every input is dynamic
    (`torch.export.Dim.AUTO`). Outputs come back as torch tensors on the inputs' device.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        quantize: bool = False,
        threads: int | None = None,
        export_dir: str | Path | None = None,
        fuse: bool = True,
        spinning: bool = False,
    ):
        super().__init__()
        self._model = [model]  # a list: not a submodule, so `.to()` / `.eval()` leave it alone
        self.quantize, self.threads, self.fuse, self.spinning = quantize, threads, fuse, spinning
        self.fusions: dict[str, int] = {}  # what `ort_fusions` fused at the export ({} when off or failed)
        self.export_dir = Path(export_dir) if export_dir else Path(tempfile.mkdtemp(prefix="vmm_onnx_"))
        if not export_dir:  # a temporary folder goes when the module does
            weakref.finalize(self, shutil.rmtree, self.export_dir, ignore_errors=True)
        self.session = None
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        params = inspect.signature(model.forward).parameters.values()
        self._named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}

    def export(self, example: dict[str, torch.Tensor]) -> Path:
        """Export the model with `example` inputs and open the ONNX Runtime session; the .onnx path."""
        import onnxruntime as ort

        model = self._model[0]
        was_training, device = model.training, next(model.parameters()).device
        model.cpu().eval()
        names = [k for k in example if k in self._named] or list(example)
        example = {k: example[k].cpu() for k in names}
        with torch.no_grad():
            self.outputs = [k for k, v in model(**example).items() if torch.is_tensor(v)]
        self.export_dir.mkdir(parents=True, exist_ok=True)
        path = self.export_dir / "model.onnx"
        dims = {k: dict.fromkeys(range(v.ndim), torch.export.Dim.AUTO) for k, v in example.items()}
        program = torch.onnx.export(
            _DictToTuple(model, names, self.outputs).eval(), tuple(example.values()), dynamo=True,
            dynamic_shapes=(tuple(dims.values()),), input_names=[f"in_{k}" for k in names], output_names=[f"out_{k}" for k in self.outputs], verbose=False,
        )  # fmt: skip
        if self.fuse:
            self.fusions = _fuse_for_ort(program)
        program.save(str(path))
        if self.fuse:
            _unfuse_skip_layer_norm(path)
        model.to(device).train(was_training)
        if self.quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantised = self.export_dir / "model.int8.onnx"
            quantize_dynamic(str(path), str(quantised), weight_type=QuantType.QInt8)
            path = quantised
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning workers wait faster between ops but burn the cores other processes share.
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.spinning else "0")
        self.path, self.options = path, options  # what a profiling session reopens
        self.session = ort.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=UNFUSED
        )
        self.inputs = [i.name.removeprefix("in_") for i in self.session.get_inputs()]
        return path

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        tensors = {k: v for k, v in batch.items() if torch.is_tensor(v)}
        if self.session is None:
            self.export(tensors)
        missing = [k for k in self.inputs if k not in tensors]
        if missing:
            raise KeyError(f"the ONNX graph needs inputs {missing}; the batch has {sorted(tensors)}")
        device = next(iter(tensors.values())).device
        feeds = {f"in_{k}": tensors[k].detach().cpu().numpy() for k in self.inputs}
        values = self.session.run([f"out_{k}" for k in self.outputs], feeds)
        return {k: torch.from_numpy(np.asarray(v)).to(device) for k, v in zip(self.outputs, values)}


def _fuse_for_ort(program) -> dict[str, int]:
    """Rewrite the exported graph in place with ONNX Runtime's transformer fusions; {fusion: count}.

    A graph the rewriter cannot handle stays as exported (with a warning): fusion is only speed.
    """
    import warnings

    try:
        from onnxscript.rewriter.ort_fusions import optimize_for_ort

        program.model, counts = optimize_for_ort(program.model)
    except Exception as err:  # noqa: BLE001 - any rewriter failure leaves the plain graph
        warnings.warn(f"ONNX Runtime fusions failed, the graph stays unfused: {err}", stacklevel=3)
        return {}
    return {k: v for k, v in counts.items() if v}


UNFUSED = ["SkipLayerNormFusion"]  # ONNX Runtime fusions left off (see `_unfuse_skip_layer_norm`)


def _unfuse_skip_layer_norm(path: Path) -> int:
    """Split each `SkipLayerNormalization` of the graph at `path` back into Add (+ bias Add) and
    `LayerNormalization`, in place; how many. ONNX Runtime's CPU kernel of the fused node takes ~5×
    the time of the two plain ones (1.32, AVX-512: 11.8 vs 2.3 ms on 9152 × 256), ~12 % of an int8
    forward of the small WBDC model. Nodes whose mean / inverse-std outputs are used stay fused."""
    import onnx
    from onnx import helper

    graph = onnx.load(str(path))
    used = {i for n in graph.graph.node for i in n.input} | {o.name for o in graph.graph.output}
    nodes, count = [], 0
    for node in graph.graph.node:
        if node.op_type != "SkipLayerNormalization" or any(o in used for o in node.output[1:3]):
            nodes.append(node)
            continue
        x, skip, gamma, beta, bias = [*node.input, "", "", ""][:5]
        total = node.output[3] if len(node.output) > 3 and node.output[3] else f"{node.output[0]}_skip_sum"
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        if bias:
            nodes += [helper.make_node("Add", [x, skip], [f"{total}_no_bias"]),
                      helper.make_node("Add", [f"{total}_no_bias", bias], [total])]  # fmt: skip
        else:
            nodes.append(helper.make_node("Add", [x, skip], [total]))
        norm = [total, gamma, *([beta] if beta else [])]
        nodes.append(helper.make_node("LayerNormalization", norm, [node.output[0]], axis=-1, epsilon=eps))
        count += 1
    if count:
        del graph.graph.node[:]
        graph.graph.node.extend(nodes)
        onnx.save(graph, str(path))
    return count


class _DictToTuple(nn.Module):
    """Positional inputs (in `names` order) → the model's dict outputs as a tuple in `outputs` order:
    the plain signature `torch.export` traces."""

    def __init__(self, model: nn.Module, names: list[str], outputs: list[str]):
        super().__init__()
        self.model, self.names, self.outputs = model, names, outputs

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(**dict(zip(self.names, inputs)))
        return tuple(out[k] for k in self.outputs)


CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def cpu_summary() -> str:
    """The CPU a timing ran on: model name, the flags that decide int8 / bf16 speed, usable cores and
    load, e.g. "AMD EPYC; avx2 avx512f avx512_vnni avx512_bf16; 2 cpus; load 3.1". Timings of the fast
    paths only mean something tied to this."""
    import os

    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:  # not Linux: the name only
        import platform

        name = platform.processor() or name
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    have = " ".join(f for f in CPU_FLAGS if f in flags) or "no AVX2/AVX-512/AMX flags"
    return f"{name}; {have}; {cpus} cpus; load {load:.1f}"


@torch.no_grad()
def argmax_agreement(
    reference: Callable[..., dict], fast: Callable[..., dict], batches: Iterable[dict], key: str = "logits"
) -> float:
    """Fraction of rows whose argmax over `key` is the same for both modules (1.0: all agree).

    Args:
        batches: dicts of tensors as the modules take them (e.g. `vmmlib.predict.loop.tensors(batch)`).
    """
    same = total = 0
    for batch in batches:
        a = reference(**batch)[key].float().argmax(-1)
        b = fast(**batch)[key].float().argmax(-1)
        same += int((a == b).sum())
        total += a.numel()
    return same / max(total, 1)


@torch.no_grad()
def throughput(
    module: Callable[..., dict], batches: list[dict], *, warmup: int = 1, repeats: int = 1
) -> float:
    """Items per second of `module` over `batches` (after `warmup` batches, best of `repeats` passes)."""
    for batch in batches[:warmup]:
        module(**batch)
    items = sum(len(next(iter(b.values()))) for b in batches)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for batch in batches:
            module(**batch)
        best = min(best, time.perf_counter() - start)
    return items / best


def race(
    modules: dict[str, Callable[..., dict]], batches: list[dict], *, rounds: int = 3
) -> dict[str, float]:
    """{name: items/s}: each module's best pass over `batches` in `rounds` rounds of one pass each, in
    turn, after one warm-up batch each (the first ONNX call exports). Interleaving spreads load from other processes over every
    module alike, and the best pass is the one least disturbed by it."""
    rates = dict.fromkeys(modules, 0.0)
    with torch.no_grad():
        for module in modules.values():
            module(**batches[0])
    for _ in range(rounds):
        for name, module in modules.items():
            rates[name] = max(rates[name], throughput(module, batches, warmup=0, repeats=1))
    return rates
