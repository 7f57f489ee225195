"""Run a training function in N processes from a notebook (Accelerate's `notebook_launcher`).

`launch(train, processes)` calls `train(accelerator)` in `processes` processes (one per GPU; on a CPU,
gloo processes) and returns the main process's return value. With `processes == 1` it calls
`train(None)` right here, so `fit` builds its own accelerator and nothing changes. A notebook wraps its
training call in it:

    result = launch(lambda acc: fit(net, loader, objective, ..., accelerator=acc), processes)

The global batch stays the loader's `batch_size` whatever `processes` is: the launched accelerator
splits each batch among the processes (`split_batches=True`, so `batch_size` must be divisible by
`processes`), and DDP averages the gradients. With the same seed, N processes therefore end with the
weights of one (to float tolerance: the reduction order differs) for a model without BatchNorm and
without dropout: `fit` seeds each process with `seed + process index`, so dropout masks differ, and
BatchNorm normalises with each process's share of the batch and keeps per-process running statistics
(the main process's are the ones saved). The models with BatchNorm: NeXtVLAD (`models.layers`) with
`cluster_bn` or `vlad_bn` on (qqbrowser's `qq_baseline` and `mixnextvlad_qq` by default; wbdc's baseline
has it off), every `yt8m_vlad` model, and the MoE classifier's gating BatchNorm.

How the processes are made: `fork` (Accelerate's choice on CUDA and CPU), so the closure, the model and
the loaders built before the call are copied into every process as they are: nothing is pickled, and
every process starts from the same weights. The kernel's model is left as it was (the processes train
copies): read the trained weights from `result.paths["model"]`. Nothing before the call may initialise
CUDA (a forked process cannot use it then): with `processes > 1` on a GPU, evaluate before training on
the CPU or not at all. The main process alone writes the run folder (`fit` does so already); its
return value comes back through a pickle file.

Multi-node: pass `num_nodes`, `node_rank` and `master_addr` (forwarded to `notebook_launcher`) and run
the same notebook on every node; or run a script under `accelerate launch` / `torchrun`, where `fit`
finds the process group by itself (README, "Many processes and nodes").
"""

from __future__ import annotations

import pickle
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accelerate import Accelerator, notebook_launcher
from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs

from vmmlib.train.config import resolve_mixed_precision

__all__ = ["launch"]


def launch(
    train: Callable[[Accelerator | None], Any],
    processes: int = 1,
    *,
    mixed_precision: str = "auto",
    **launcher_options: Any,
) -> Any:
    """Call `train(accelerator)` in `processes` processes; return the main process's result.

    Args:
        train: takes the launched `Accelerator` (None when `processes == 1`) and trains, e.g. a lambda
            calling `fit(..., accelerator=acc)`. It may be a closure over the kernel's objects.
        processes: processes on this node (one per GPU); 1 runs `train(None)` in this process.
        mixed_precision: the launched accelerator's, as `fit`'s option ('auto', 'no', 'bf16').
        launcher_options: more `notebook_launcher` arguments (`num_nodes`, `node_rank`,
            `master_addr`, `use_port`); the port defaults to a free one on a single node.

    Raises:
        ValueError: `processes` < 1.
        RuntimeError: CUDA is already initialised in this process (forked processes could not use it).
    """
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be an integer >= 1, got {processes!r}")
    if processes == 1:
        return train(None)
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        raise RuntimeError(
            "CUDA is already initialised in this process, so forked training processes cannot use it: "
            "with processes > 1 nothing before launch() may touch the GPU (restart the kernel)"
        )
    if launcher_options.get("num_nodes", 1) == 1:
        launcher_options.setdefault("use_port", str(_free_port()))
    _reset_accelerate_state()  # the kernel's single-process state must not leak into the processes
    with tempfile.TemporaryDirectory(prefix="vmm-launch-") as tmp:
        result_file = Path(tmp) / "result.pkl"
        notebook_launcher(
            _run,
            args=(train, str(result_file), mixed_precision),
            num_processes=processes,
            **launcher_options,
        )
        _reset_accelerate_state()
        if not result_file.exists():  # a node other than the main one
            return None
        with result_file.open("rb") as fh:
            return pickle.load(fh)  # written by this run's own main process just now


def _run(train: Callable[[Accelerator], Any], result_file: str, mixed_precision: str) -> None:
    """In each launched process: the accelerator, `train`, and the main process's result to a file."""
    import torch

    # The processes are forked from the kernel, whose OpenMP thread pool does not survive a fork: the
    # first multi-threaded op would wait forever for threads that are not there. One intra-op thread
    # per process (N processes on N cores) never enters an OpenMP region.
    torch.set_num_threads(1)
    cpu = not torch.cuda.is_available()  # gloo: Accelerate treats LOCAL_RANK as multi-CPU only with cpu=True
    split = DataLoaderConfiguration(split_batches=True)  # the loader's batch is the global batch
    precision = resolve_mixed_precision(mixed_precision)  # here: asking the GPU initialises CUDA
    # a task's model may hold parameters its fine-tune objective leaves unused (a pretraining head)
    unused = DistributedDataParallelKwargs(find_unused_parameters=True)
    accelerator = Accelerator(
        cpu=cpu, dataloader_config=split, mixed_precision=precision, kwargs_handlers=[unused]
    )
    result = train(accelerator)
    if accelerator.is_main_process:
        with open(result_file, "wb") as fh:
            pickle.dump(result, fh)
    accelerator.wait_for_everyone()


def _reset_accelerate_state() -> None:
    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
