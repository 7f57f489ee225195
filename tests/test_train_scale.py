"""Training that scales: gradient accumulation equals one larger batch (for every task's fine-tune
objective), resumes exactly mid-accumulation, and a step reads nothing back from the device."""

import os
import subprocess
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from tests.test_train import BATCH, TinyNet, objective, regression_data, run_fit, same_tensors
from vmmlib.objectives import make_objective
from vmmlib.tasks import get_task
from vmmlib.train.loop import make_loader
from vmmlib.train.step import _accumulate, _guarded_update

GRAD_RTOL = 1e-5  # measured: ≤ 4.3e-7 of the largest gradient (fp32 summation order)
ACCUM_ATOL = 2e-6  # measured: max |Δw| = 6e-8 after 8 AdamW steps (fp32 summation order)


def test_n_micro_batches_of_b_give_the_weights_of_one_batch_of_n_b(tmp_path):
    one = TinyNet(dropout=0.0)
    run_fit(one, tmp_path / "one", steps=8, loader=make_loader(regression_data(), 16, shuffle=True, seed=0))
    accumulated = TinyNet(dropout=0.0)
    result = run_fit(
        accumulated, tmp_path / "acc", steps=8, grad_accum_steps=4,
        loader=make_loader(regression_data(), 4, shuffle=True, seed=0),
    )  # fmt: skip
    assert (
        result.last_step == 8 and len(result.history) == 4
    )  # steps, schedule and rows count optimiser steps
    a, b = one.state_dict(), accumulated.state_dict()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert diff <= ACCUM_ATOL, diff


class KilledAt:
    """The plain objective, raising on call `at` (a kill in the middle of an accumulation)."""

    def __init__(self, at):
        self.at, self.calls = at, 0

    def __call__(self, model, batch):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return objective(model, batch)


def test_a_run_killed_mid_accumulation_resumes_to_the_same_weights(tmp_path):
    args = {"steps": 6, "grad_accum_steps": 3, "save_every": 2}
    run_fit(TinyNet(), tmp_path / "whole", **args)
    with pytest.raises(KeyboardInterrupt):  # step 5's second micro-batch: the checkpoint is at step 4
        run_fit(TinyNet(), tmp_path / "killed", obj=KilledAt(3 * 4 + 2), **args)
    resumed = run_fit(TinyNet(), tmp_path / "killed", **args)
    assert resumed.resumed_from == 4
    assert same_tensors(
        load_file(tmp_path / "whole/model.safetensors"), load_file(tmp_path / "killed/model.safetensors")
    )


# --------------------------------------------------------------------------- every task's objective


def _qqbrowser(root, qq_sample):
    T = get_task("qqbrowser")
    data = T.load(qq_sample)
    return T, data, "uniter_qq_tiny", {"mse": 1.0, "kl": 0.5, "tag": 1.0}, {}


def _wbdc(root, qq_sample):
    T = get_task("wbdc")
    data = T.load(
        T.make_sample(root, labeled=40, unlabeled=4, test=4, seed=5),
        max_frames=4, max_text_len=16, max_title_len=8, pretrain_eval_videos=2,
    )  # fmt: skip
    return T, data, "wbdc_single_stream_tiny", {"ce": 1.0}, {}


def _yt8m(root, qq_sample):
    T = get_task("yt8m")
    data = T.load(
        T.make_sample(
            root, videos=4, validate_videos=24, test_videos=2, train_shards=1, validate_shards=2, test_shards=1,
            seed=5,
        ),
        window=5, cache=False,
    )  # fmt: skip
    return T, data, "framebert_mean_yt8m_tiny", {"bce": 1.0, "l2": 1.0}, {}


def _avfusion_qa(root, qq_sample):
    T = get_task("avfusion")
    data = T.load(
        T.make_sample(root, videos=6, val_videos=2, test_videos=1, num_frames=2, frame_size=16, seed=3),
        downstream="qa", num_frames=2, image_size=16, frame_strategy="uniform", max_text_len=16, with_audio=False,
    )  # fmt: skip
    return T, data, "avfusion_vt_tiny", {"qa": 1.0}, {}


def _rows(batch, start, stop):
    """Items start..stop of a collated batch (dicts and lists of tensors or of per-item values)."""
    if isinstance(batch, dict):
        return {k: _rows(v, start, stop) for k, v in batch.items()}
    if torch.is_tensor(batch) and batch.ndim == 0:
        return batch
    return batch[start:stop]


def _grads(net, obj, micro):
    net.zero_grad(set_to_none=True)
    f = SimpleNamespace(
        model=net, world=1, adversary=None, accelerator=SimpleNamespace(backward=lambda loss: loss.backward())
    )
    terms, loss = _accumulate(f, obj, micro)
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}, terms


@pytest.mark.parametrize("setup", [_qqbrowser, _wbdc, _yt8m, _avfusion_qa], ids=lambda s: s.__name__[1:])
def test_every_task_objective_accumulates_to_the_gradients_of_the_larger_batch(setup, tmp_path, qq_sample):
    """Eval mode (no dropout, fixed norm statistics): the loss weighting alone is under test. MUGE's
    and avfusion retrieval's contrastive objectives take in-batch negatives: not accumulable this way."""
    T, data, model, weights, options = setup(tmp_path / "data", qq_sample)
    train_set, _ = T.finetune_datasets(data, 2, 0)
    torch.manual_seed(0)
    net = T.build_model(data, model, {}, "").eval()
    obj = make_objective(T.finetune_objective, T.FINETUNE_TERMS, data, weights, options)
    whole = next(iter(make_loader(train_set, 6, shuffle=False, seed=0)))
    big, big_terms = _grads(net, obj, [whole])
    small, small_terms = _grads(
        net, obj, [_rows(whole, 0, 2), _rows(whole, 2, 6)]
    )  # micro-batches of 2 and 4
    assert big.keys() == small.keys() and big
    scale = max(g.abs().max().item() for g in big.values())
    worst = max((small[k] - big[k]).abs().max().item() for k in big) / scale
    assert worst <= GRAD_RTOL, worst  # relative to the largest gradient
    for k in big_terms:
        torch.testing.assert_close(small_terms[k], big_terms[k], rtol=1e-5, atol=1e-6, msg=k)


# --------------------------------------------------------------------------- no host sync per step

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
# Host tensors even on a GPU: the optimiser's step counters (unless capturable) and the DataLoader's seed.
HOST_SIDE = (f"torch{os.sep}optim{os.sep}", f"torch{os.sep}utils{os.sep}data{os.sep}")


def _count_reads(monkeypatch, calls):
    """Count the reads of a tensor's value on the host, but those of the host-side tensors (HOST_SIDE)."""
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            if not any(part in frame.filename for frame in traceback.extract_stack() for part in HOST_SIDE):
                calls.append(1)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)


def test_a_training_step_reads_the_device_at_most_once_per_log_every_steps(tmp_path, monkeypatch):
    loader = make_loader(regression_data(), BATCH, shuffle=False, seed=0)
    args = {"log_every": 10, "ema_decay": 0.9, "grad_clip": 1.0, "save_every": 0, "eval_every": 0}
    counts = {}
    for steps in (10, 40):
        calls = []
        with monkeypatch.context() as m:
            _count_reads(m, calls)
            run_fit(TinyNet(), tmp_path / str(steps), loader=loader, steps=steps, **args)
        counts[steps] = len(calls)
    per_step = (counts[40] - counts[10]) / 30
    assert per_step <= 1 / 10, counts


@pytest.mark.parametrize("fused", [True, False], ids=["fused-found_inf", "torch.where"])
def test_a_step_found_non_finite_on_the_device_leaves_weights_and_moments_untouched(fused):
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(lin.parameters(), lr=0.1, fused=fused)
    f, params = SimpleNamespace(optimizer=opt, unwrapped=lin, ema=None), list(lin.parameters())
    lin(torch.randn(4, 3)).sum().backward()
    _guarded_update(f, params, torch.tensor(True))
    opt.zero_grad()
    weights = [p.detach().clone() for p in params]
    moments = [{k: v.clone() for k, v in opt.state[p].items()} for p in params]
    lin(torch.randn(4, 3)).sum().mul(float("nan")).backward()
    _guarded_update(f, params, torch.tensor(False))
    assert all(torch.equal(a, b) for a, b in zip(weights, params))
    assert all(torch.equal(m[k], opt.state[p][k]) for m, p in zip(moments, params) for k in m)


DDP_ACCUM = """
import sys
from accelerate import Accelerator
sys.path.insert(0, {tests_dir!r})
from test_train import TinyNet, make_loader, regression_data, run_fit
acc = Accelerator(cpu=True)  # two gloo processes; the same 8 samples per step either way
a, b = TinyNet(dropout=0.0), TinyNet(dropout=0.0)
run_fit(a, {out!r} + "/a", loader=make_loader(regression_data(), 4, shuffle=True, seed=3), steps=6, accelerator=acc)
run_fit(b, {out!r} + "/b", loader=make_loader(regression_data(), 2, shuffle=True, seed=3), steps=6,
        grad_accum_steps=2, accelerator=acc)  # DDP's all-reduce only on the second micro-batch
sa, sb = a.state_dict(), b.state_dict()
assert max((sa[k] - sb[k]).abs().max().item() for k in sa) <= 2e-6  # measured 3e-8
print("ddp accum ok")
"""


@pytest.mark.slow
def test_two_processes_accumulating_give_the_weights_of_the_unaccumulated_run(tmp_path):
    script = tmp_path / "ddp_accum.py"
    script.write_text(DDP_ACCUM.format(tests_dir=str(Path(__file__).parent), out=str(tmp_path)))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ddp accum ok" in out.stdout, out.stderr[-4000:]
