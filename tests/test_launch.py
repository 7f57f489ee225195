"""`vmmlib.train.launch`: N processes from a notebook end with the weights of one process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

from vmmlib.train.launch import launch
from vmmlib.train.loop import fit, make_loader


class Regressor(nn.Module):
    """No BatchNorm, no dropout: nothing that differs between processes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.text = nn.Linear(8, 16)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, 1)

    def forward(self, x):  # (B, 8) -> (B, 1)
        return self.head(self.norm(torch.relu(self.text(x))))


def mse(model, batch):
    x, y = batch
    return {"mse": nn.functional.mse_loss(model(x), y)}


def test_two_gloo_processes_end_with_the_weights_of_one(tmp_path):
    """Run in a fresh interpreter of its own process group, so that a hung launch fails (and its
    processes die) instead of hanging the suite."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_launch as t; "
    code += f"t.compare_one_and_two_processes(t.Path({str(tmp_path)!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        assert proc.wait(timeout=300) == 0
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def compare_one_and_two_processes(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=g)
    data = TensorDataset(x, x[:, :1].sin())
    loader = make_loader(data, 8, shuffle=True, seed=3, drop_last=True)  # the global batch: 8
    args = dict(steps=6, lr=1e-2, warmup_steps=1, log_every=2, progress=False, seed=3)

    def train(net, out):  # as the notebooks do: a closure over a model built in the kernel
        return lambda acc: fit(net, loader, mse, out_dir=out, accelerator=acc, **args)

    one = launch(train(Regressor(), tmp_path / "one"), 1)
    two = launch(train(Regressor(), tmp_path / "two"), 2)
    assert two.last_step == one.last_step == 6
    assert two.history["train/loss"].to_numpy() == pytest.approx(
        one.history["train/loss"].to_numpy(), rel=1e-5
    )
    a, b = load_file(one.paths["model"]), load_file(two.paths["model"])
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6)
    assert (tmp_path / "two" / "history.csv").exists()


def test_processes_must_be_a_positive_integer():
    with pytest.raises(ValueError, match="processes"):
        launch(lambda acc: None, 0)
