"""Tests for `vmmlib.train.loop.fit` and `vmmlib.train.checkpoint`: learning, parameter groups, schedules, exact
resume, the NaN/inf guard, EMA, best-checkpoint selection, history.csv and atomic writes.

Everything runs on CPU with a tiny MLP (with dropout, so RNG state matters) on a synthetic
regression set; the objective returns two named terms.
"""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

from vmmlib.train import checkpoint
from vmmlib.train.loop import (
    EMA,
    EpochShuffleSampler,
    check_fit_args,
    fit,
    load_weights,
    lr_multiplier,
    make_loader,
    param_groups,
    save_weights,
)

N_SAMPLES, BATCH = 64, 8  # 8 batches per epoch


def regression_data(seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_SAMPLES, 8, generator=g)
    y = torch.sin(x @ torch.randn(8, 1, generator=g)) + 0.5 * x[:, :1]
    return TensorDataset(x, y)


class TinyNet(nn.Module):
    """`text.` is the "backbone" (prefix matched by backbone_prefixes), the rest is the head."""

    def __init__(self, seed: int = 0, dropout: float = 0.2):
        super().__init__()
        torch.manual_seed(seed)
        self.text = nn.Linear(8, 32)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 1)

    def forward(self, x):  # (B, 8) -> (B, 1)
        return self.head(self.norm(self.drop(torch.relu(self.text(x)))))


def objective(model, batch):
    x, y = batch
    pred = model(x)
    return {"mse": F.mse_loss(pred, y), "l1": 0.1 * F.l1_loss(pred, y)}


def full_mse(model: nn.Module, ds: TensorDataset) -> float:
    model.eval()
    with torch.no_grad():
        return F.mse_loss(model(ds.tensors[0]), ds.tensors[1]).item()


def run_fit(model, out_dir, *, loader=None, obj=objective, **kw):
    args = {"steps": 20, "lr": 1e-2, "log_every": 2, "progress": False, "seed": 0}
    args.update(kw)
    loader = loader if loader is not None else make_loader(regression_data(), BATCH, shuffle=True, seed=0)
    return fit(model, loader, obj, out_dir=out_dir, **args)


def assert_all_checkpoints_finite(out_dir: Path) -> None:
    files = list(Path(out_dir).rglob("*.safetensors"))
    assert files
    for f in files:
        for name, t in load_file(f).items():
            assert torch.isfinite(t).all(), f"{f}: {name}"


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- learning


def test_fit_cuts_the_training_mse_at_least_fivefold(tmp_path):
    ds = regression_data()
    model = TinyNet(dropout=0.0)
    before = full_mse(model, ds)
    result = run_fit(model, tmp_path, steps=150, lr=3e-2, warmup_steps=10, schedule="cosine")
    after = full_mse(model, ds)
    assert after < before / 5, (before, after)
    assert result.last_step == 150 and result.resumed_from == 0
    assert (tmp_path / "model.safetensors").is_file()
    reloaded = load_weights(TinyNet(seed=1, dropout=0.0), tmp_path / "model.safetensors")
    assert full_mse(reloaded, ds) == pytest.approx(after)


# --------------------------------------------------------------------------- optimiser and schedule


def test_param_groups_give_backbone_lr_and_no_decay_to_biases_and_norm_weights():
    groups = param_groups(
        TinyNet(), lr=1e-2, weight_decay=0.05, backbone_lr=1e-4, backbone_prefixes=("text.",)
    )
    where = {n: (g["name"], g["lr"], g["weight_decay"]) for g in groups for n in g["param_names"]}
    assert where == {
        "text.weight": ("backbone", 1e-4, 0.05),
        "text.bias": ("backbone", 1e-4, 0.0),
        "norm.weight": ("others", 1e-2, 0.0),
        "norm.bias": ("others", 1e-2, 0.0),
        "head.weight": ("others", 1e-2, 0.05),
        "head.bias": ("others", 1e-2, 0.0),
    }
    without_backbone = param_groups(TinyNet(), lr=1e-2, weight_decay=0.05)
    assert {g["name"] for g in without_backbone} == {"others"}
    with pytest.raises(ValueError, match="no trainable parameter name starts with"):
        param_groups(TinyNet(), lr=1e-2, weight_decay=0.0, backbone_lr=1e-4, backbone_prefixes=("bert.",))


@pytest.mark.parametrize(
    ("schedule", "step", "expected"),
    [
        ("linear", 0, 0.0),
        ("linear", 5, 0.5),  # half-way through the 10 warmup steps
        ("linear", 10, 1.0),
        ("linear", 55, 0.5),  # half-way through the 90 decay steps
        ("linear", 100, 0.0),
        ("linear", 130, 0.0),
        ("cosine", 5, 0.5),
        ("cosine", 10, 1.0),
        ("cosine", 55, 0.5),  # cos(pi/2) = 0
        ("cosine", 32.5, 0.5 * (1 + math.cos(math.pi * 0.25))),
        ("cosine", 100, 0.0),
        ("cosine", 150, 0.0),  # clamped, transformers' would rise again
        ("constant", 5, 0.5),
        ("constant", 70, 1.0),
    ],
)
def test_lr_multiplier_is_warmup_then_the_named_decay(schedule, step, expected):
    got = lr_multiplier(step, warmup_steps=10, total_steps=100, schedule=schedule)
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lr_multiplier_matches_transformers_get_scheduler(schedule):
    from transformers import get_scheduler

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    hf = get_scheduler(schedule, opt, num_warmup_steps=7, num_training_steps=40)
    for step in range(41):
        assert lr_multiplier(step, warmup_steps=7, total_steps=40, schedule=schedule) == pytest.approx(
            hf.lr_lambdas[0](step), abs=1e-12
        )


def test_fit_applies_per_group_warmups_and_logs_the_rate_of_each_step(tmp_path):
    result = run_fit(
        TinyNet(), tmp_path, steps=20, lr=1e-2, backbone_lr=1e-3, warmup_steps=4, backbone_warmup_steps=8,
        schedule="linear", schedule_steps=40, log_every=1,
    )  # fmt: skip
    h = result.history.set_index("step")
    for step in (1, 3, 5, 9, 20):  # step s uses the multiplier after s - 1 optimiser steps
        assert h.loc[step, "lr/others"] == pytest.approx(
            1e-2 * lr_multiplier(step - 1, warmup_steps=4, total_steps=40, schedule="linear")
        )
        assert h.loc[step, "lr/backbone"] == pytest.approx(
            1e-3 * lr_multiplier(step - 1, warmup_steps=8, total_steps=40, schedule="linear")
        )
    assert h.loc[20, "lr/others"] == pytest.approx(1e-2 * 21 / 36)  # (40 - 19) / (40 - 4)


# --------------------------------------------------------------------------- exact resume


class CrashAt:
    """The objective, raising at its `step`-th call (a crash after the last checkpoint)."""

    def __init__(self, step: int):
        self.step, self.calls = step, 0

    def __call__(self, model, batch):
        self.calls += 1
        if self.calls == self.step:
            raise KeyboardInterrupt(f"simulated kill at step {self.step}")
        return objective(model, batch)


def rng_eating_eval(model):
    """Draws from the global RNG, so fit must restore the RNG states after evaluating."""
    torch.randn(100)
    return {"mse": full_mse(model, regression_data())}


def plain_loader():
    return DataLoader(regression_data(), batch_size=BATCH, shuffle=True)  # RandomSampler, no generator


class EpochStream(IterableDataset):
    """A stream that orders itself per (seed, epoch), like `vmmlib.io.TFRecordIterableDataset`."""

    def __init__(self, seed: int = 0):
        self.data, self.seed, self.epoch = regression_data(), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(
            N_SAMPLES, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        )
        return (self.data[i] for i in order.tolist())


LOADERS = {
    "make_loader": lambda: make_loader(regression_data(), BATCH, shuffle=True, seed=3),
    "plain": plain_loader,
    "stream": lambda: make_loader(EpochStream(seed=3), BATCH, shuffle=True, seed=3),
}
# schedule_steps: the decay horizon must not follow the `steps` of a deliberately short first call.
RESUME_ARGS = {
    "steps": 20, "schedule_steps": 20, "warmup_steps": 3, "ema_decay": 0.9,
    "eval_fn": rng_eating_eval, "eval_every": 5, "metric": "mse",
    "log_every": 4,  # the step-10 checkpoint holds a half-filled logging window
}  # fmt: skip


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Run A of each loader kind: 20 steps in one go."""
    runs = {}
    for kind, make in LOADERS.items():
        out = tmp_path_factory.mktemp(f"a_{kind}")
        result = run_fit(TinyNet(), out, loader=make(), greater_is_better=False, **RESUME_ARGS)
        runs[kind] = (out, result)
    return runs


@pytest.mark.parametrize("kind", list(LOADERS))
@pytest.mark.parametrize(
    ("how", "at", "save_every"),
    [
        ("stop", 12, 0),  # fit(steps=12) then fit(steps=20): mid-epoch
        ("stop", 16, 0),  # exactly at an epoch boundary
        ("crash", 13, 5),  # killed at step 13, resumes from the step-10 checkpoint (mid-epoch)
        ("crash", 17, 8),  # resumes from step 16 (epoch boundary)
    ],
)
def test_a_resumed_run_ends_with_exactly_the_weights_of_an_uninterrupted_one(
    tmp_path, uninterrupted, kind, how, at, save_every
):
    args = {**RESUME_ARGS, "save_every": save_every, "greater_is_better": False}
    if how == "stop":
        run_fit(TinyNet(), tmp_path, loader=LOADERS[kind](), **{**args, "steps": at})
    else:
        with pytest.raises(KeyboardInterrupt):
            run_fit(TinyNet(), tmp_path, loader=LOADERS[kind](), obj=CrashAt(at), **args)
    # A fresh process: a differently initialised model and a new loader; everything comes from disk.
    resumed = run_fit(TinyNet(seed=99), tmp_path, loader=LOADERS[kind](), **args)
    assert resumed.resumed_from == (at if how == "stop" else at - at % save_every)

    a_dir, a = uninterrupted[kind]
    for name in (
        "model.safetensors",
        "checkpoints/last/model.safetensors",
        "checkpoints/last/ema.safetensors",
    ):
        assert same_tensors(load_file(a_dir / name), load_file(tmp_path / name)), name
    train_cols = [c for c in a.history.columns if not c.startswith("eval/")]
    b_hist = resumed.history.set_index("step").loc[a.history["step"], :].reset_index()
    pd.testing.assert_frame_equal(a.history[train_cols], b_hist[train_cols])
    if how == "crash":  # the same evaluations too
        pd.testing.assert_frame_equal(a.history, resumed.history)


def test_resuming_a_finished_run_changes_nothing_and_a_checkpoint_beyond_steps_is_refused(tmp_path):
    first = run_fit(TinyNet(), tmp_path, steps=10)
    weights = load_file(tmp_path / "model.safetensors")
    again = run_fit(TinyNet(seed=5), tmp_path, steps=10)
    assert again.resumed_from == 10
    assert same_tensors(weights, load_file(tmp_path / "model.safetensors"))
    pd.testing.assert_frame_equal(first.history, again.history)
    with pytest.raises(ValueError, match="step 10 > steps=6"):
        run_fit(TinyNet(), tmp_path, steps=6)
    fresh = run_fit(TinyNet(), tmp_path, steps=6, resume=False)
    assert fresh.resumed_from == 0 and fresh.history["step"].max() == 6


# --------------------------------------------------------------------------- NaN / inf guard


class NonFiniteAt:
    """NaN loss at the steps in `nan_loss`; finite loss but NaN gradients at `nan_grad`; records the
    weights each call sees."""

    def __init__(self, nan_loss=(), nan_grad=(), nan_from=None):
        self.nan_loss, self.nan_grad, self.nan_from = set(nan_loss), set(nan_grad), nan_from
        self.calls, self.seen = 0, []

    def __call__(self, model, batch):
        self.calls += 1
        self.seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        terms = objective(model, batch)
        if self.calls in self.nan_loss or (self.nan_from is not None and self.calls >= self.nan_from):
            terms["mse"] = terms["mse"] * float("nan")
        if self.calls in self.nan_grad:  # sqrt'(0) = inf, times 0: the loss stays 0, the grads are NaN
            terms["l1"] = terms["l1"] + torch.sqrt(model.head.bias.sum() * 0.0)
        return terms


def test_non_finite_steps_are_skipped_with_a_warning_and_training_goes_on(tmp_path):
    obj = NonFiniteAt(nan_loss=(3, 4), nan_grad=(7,))
    with pytest.warns(RuntimeWarning, match="non-finite") as caught:
        result = run_fit(TinyNet(), tmp_path, obj=obj, steps=12, save_every=2, max_nonfinite_steps=3)
    skipped_msgs = [str(w.message) for w in caught if "optimiser step skipped" in str(w.message)]
    assert [m.split(":")[0] for m in skipped_msgs] == ["step 3", "step 4", "step 7"]
    # Skipped steps leave the weights alone: step 5 sees what step 3 saw, step 8 what step 7 saw.
    assert same_tensors(obj.seen[2], obj.seen[4]) and same_tensors(obj.seen[6], obj.seen[7])
    assert not same_tensors(obj.seen[4], obj.seen[5])  # finite steps do move them
    h = result.history.set_index("step")
    assert result.last_step == 12 and h["train/skipped"].to_dict() == {2: 0, 4: 2, 6: 0, 8: 1, 10: 0, 12: 0}
    assert math.isnan(h.loc[4, "train/loss"])  # no finite step in that window
    assert h.drop(index=4)["train/loss"].notna().all()
    assert_all_checkpoints_finite(tmp_path)


def test_non_finite_loss_k_steps_in_a_row_raises_and_no_checkpoint_holds_non_finite_values(tmp_path):
    obj = NonFiniteAt(nan_from=4)
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError) as err:
        run_fit(TinyNet(), tmp_path, obj=obj, steps=20, save_every=1, max_nonfinite_steps=3)
    assert "loss was non-finite for 3 consecutive steps at step 6; last terms: {'mse': nan" in str(err.value)
    assert json.loads((tmp_path / "checkpoints/last/state.json").read_text())["step"] == 5
    assert_all_checkpoints_finite(tmp_path)


def test_non_finite_weights_are_never_written(tmp_path):
    model = TinyNet()
    with torch.no_grad():
        model.head.weight[0, 3] = float("inf")
    with pytest.raises(RuntimeError, match="'head.weight' holds non-finite values"):
        save_weights(model, tmp_path / "w.safetensors")
    assert list(tmp_path.iterdir()) == []
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(RuntimeError, match="non-finite"):
        checkpoint.save_training_checkpoint(
            tmp_path / "last", model=model, optimizer=opt, scheduler=sched, ema_state=None,
            rng_states=[checkpoint.capture_rng_state()], state={"step": 1}, history_rows=[],
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- EMA


class Scalar(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0]))


def test_ema_weights_are_evaluated_and_match_a_hand_computation(tmp_path):
    raw_seen, evaluated = [], []

    def obj(model, batch):
        raw_seen.append(model.w.item())
        return {"sq": ((model.w - 3.0) ** 2).sum() + 0.0 * batch[0].sum()}

    def eval_fn(model):
        evaluated.append(model.w.item())
        return {"w": model.w.item()}

    loader = make_loader(TensorDataset(torch.zeros(4, 1)), 1, shuffle=False)
    decay = 0.5
    model = Scalar()
    run_fit(
        model,
        tmp_path,
        loader=loader,
        obj=obj,
        steps=6,
        lr=0.1,
        ema_decay=decay,
        eval_fn=eval_fn,
        eval_every=3,
    )
    raw_final = load_file(tmp_path / "checkpoints/last/model.safetensors")["w"].item()
    thetas = raw_seen + [raw_final]  # theta_0 .. theta_6: the raw weight after each step
    shadow, hand = thetas[0], {}
    for t in range(1, 7):
        shadow = decay * shadow + (1 - decay) * thetas[t]
        hand[t] = shadow
    assert evaluated == pytest.approx([hand[3], hand[6]], abs=1e-6)
    assert abs(evaluated[0] - thetas[3]) > 1e-3  # the EMA, not the raw weight, was evaluated
    assert raw_seen[3] == pytest.approx(thetas[3])  # and the raw weight came back for step 4
    assert load_file(tmp_path / "model.safetensors")["w"].item() == pytest.approx(hand[6], abs=1e-6)
    assert model.w.item() == pytest.approx(hand[6], abs=1e-6)


def test_ema_update_is_decay_times_shadow_plus_one_minus_decay_times_theta():
    model = Scalar()
    ema = EMA(model, 0.9)
    with torch.no_grad():
        model.w.fill_(2.0)
    ema.update(model)
    assert ema.shadow["w"].item() == pytest.approx(0.9 * 1.0 + 0.1 * 2.0)
    with ema.applied(model):
        assert model.w.item() == pytest.approx(1.1)
    assert model.w.item() == 2.0


# --------------------------------------------------------------------------- best checkpoint and history


@pytest.mark.parametrize(("greater_is_better", "best_index"), [(True, 1), (False, 3)])
def test_best_checkpoint_holds_the_weights_of_the_best_evaluated_step(
    tmp_path, greater_is_better, best_index
):
    scores, snapshots = [0.2, 0.9, 0.9, 0.1], []  # a tie keeps the earlier step

    def eval_fn(model):
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return {"score": scores[len(snapshots) - 1], "other": 1.0}

    result = run_fit(
        TinyNet(), tmp_path, steps=20, eval_fn=eval_fn, eval_every=5, metric="score",
        greater_is_better=greater_is_better,
    )  # fmt: skip
    assert len(snapshots) == 4
    assert result.best_step == 5 * (best_index + 1) and result.best_metric == scores[best_index]
    assert same_tensors(load_file(tmp_path / "checkpoints/best/model.safetensors"), snapshots[best_index])
    info = json.loads((tmp_path / "checkpoints/best/best.json").read_text())
    assert info == {"step": result.best_step, "metric": "score", "value": scores[best_index],
                    "greater_is_better": greater_is_better}  # fmt: skip


def test_history_csv_has_every_term_and_metric_and_no_duplicate_steps_after_resume(tmp_path):
    args = {"steps": 20, "save_every": 5, "log_every": 2, "eval_every": 3, "eval_fn": lambda m: {"acc": 0.5}}
    with pytest.raises(KeyboardInterrupt):
        run_fit(TinyNet(), tmp_path, obj=CrashAt(14), **args)
    before = pd.read_csv(tmp_path / "history.csv")
    assert before["step"].max() == 12  # written at the step-12 evaluation, past the step-10 checkpoint
    run_fit(TinyNet(), tmp_path, **args)
    h = pd.read_csv(tmp_path / "history.csv")
    expected = {"step", "epoch", "lr/others", "train/loss", "train/mse", "train/l1", "train/grad_norm"}
    assert expected | {"train/skipped", "eval/acc"} <= set(h.columns)
    assert h["step"].is_unique and h["step"].is_monotonic_increasing
    assert set(h["step"]) == set(range(2, 21, 2)) | set(range(3, 21, 3)) | {20}
    assert h.loc[h["step"] % 3 == 0, "eval/acc"].eq(0.5).all()
    row = h.set_index("step").loc[4]  # the mean of the two steps since the previous row
    assert row["train/loss"] == pytest.approx(row["train/mse"] + row["train/l1"], rel=1e-6)


# --------------------------------------------------------------------------- atomic writes


def test_a_checkpoint_write_failing_midway_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    real_save, calls = torch.save, {"n": 0}

    def failing_save(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 4:  # 3 torch.save calls per checkpoint: the 2nd checkpoint's optimizer.pt
            raise OSError("disk full")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", failing_save)
    obj = NonFiniteAt()  # records the weights each step sees; no NaNs
    with pytest.raises(OSError, match="disk full"):
        run_fit(TinyNet(), tmp_path, obj=obj, steps=20, save_every=5)
    last = tmp_path / "checkpoints/last"
    assert json.loads((last / "state.json").read_text())["step"] == 5
    assert same_tensors(load_file(last / "model.safetensors"), obj.seen[5])  # what step 6 started from
    assert sorted(p.name for p in last.parent.iterdir()) == ["last"]  # no temporary or .prev left


def test_an_interrupted_directory_swap_falls_back_to_the_previous_complete_copy(tmp_path, monkeypatch):
    def writer(text):
        def write(d):
            (d / "data.txt").write_text(text)
            (d / "done").write_text("")

        return write

    target = tmp_path / "last"
    checkpoint.write_dir_atomically(target, writer("v1"), marker="done")
    real_replace, calls = os.replace, {"n": 0}

    def replace_dying_on_second_call(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # last -> last.prev done, tmp -> last not yet
            raise KeyboardInterrupt("killed between the renames")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_dying_on_second_call)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.write_dir_atomically(target, writer("v2"), marker="done")
    monkeypatch.setattr(os, "replace", real_replace)
    found = checkpoint.find_checkpoint(target, marker="done")
    assert found == tmp_path / "last.prev" and (found / "data.txt").read_text() == "v1"

    def half_writer(d):
        (d / "data.txt").write_text("v3")
        raise OSError("crash before the marker")

    with pytest.raises(OSError):
        checkpoint.write_dir_atomically(target, half_writer, marker="done")
    assert checkpoint.find_checkpoint(target, marker="done") == tmp_path / "last.prev"
    checkpoint.write_dir_atomically(target, writer("v4"), marker="done")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    assert (target / "data.txt").read_text() == "v4"


def test_load_weights_is_strict(tmp_path):
    save_weights(TinyNet(), tmp_path / "w.safetensors")
    other = nn.Sequential(nn.Linear(8, 32))
    with pytest.raises(RuntimeError):
        load_weights(other, tmp_path / "w.safetensors")


# --------------------------------------------------------------------------- data order and precision


def test_epoch_shuffle_sampler_order_depends_only_on_seed_and_epoch():
    def order(seed, epoch):
        s = EpochShuffleSampler(50, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert order(0, 1) == order(0, 1) and sorted(order(0, 1)) == list(range(50))
    assert len({tuple(order(s, e)) for s, e in [(0, 0), (0, 1), (1, 0), (1, 1)]}) == 4


def test_bf16_autocasts_the_forward_and_keeps_the_losses_in_fp32(tmp_path):
    """Run in a subprocess: Accelerate's process-wide state fixes mixed precision once per process."""
    script = textwrap.dedent(
        f"""
        import torch, torch.nn.functional as F
        from torch import nn
        from torch.utils.data import TensorDataset
        from vmmlib.train.loop import fit, make_loader
        seen = []
        def obj(model, batch):
            x, y = batch
            pred = model(x)
            seen.append(pred.dtype)
            return {{"mse": F.mse_loss(pred, y)}}
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
        inner = []
        model[0].register_forward_hook(lambda m, i, o: inner.append(o.dtype))
        loader = make_loader(TensorDataset(torch.randn(16, 8), torch.randn(16, 1)), 4, shuffle=True)
        r = fit(model, loader, obj, steps=4, lr=1e-3, out_dir={str(tmp_path)!r}, mixed_precision="bf16",
                progress=False, log_every=1)
        assert set(inner) == {{torch.bfloat16}}, inner
        assert set(seen) == {{torch.float32}}, seen
        assert all(p.dtype == torch.float32 for p in model.parameters())
        assert r.history["train/loss"].notna().all()
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


DDP_SCRIPT = """
import sys
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
sys.path.insert(0, {tests_dir!r})
from test_train import RESUME_ARGS, TinyNet, make_loader, regression_data, run_fit

acc = Accelerator(cpu=True)  # two gloo processes on CPU
out = {out!r}
args = {{**RESUME_ARGS, "greater_is_better": False, "accelerator": acc}}
loader = lambda: make_loader(regression_data(), 8, shuffle=True, seed=3)
run_fit(TinyNet(), out + "/a", loader=loader(), **args)
run_fit(TinyNet(), out + "/b", loader=loader(), **{{**args, "steps": 6}})  # 4 batches per process-epoch
resumed = run_fit(TinyNet(seed=99), out + "/b", loader=loader(), **args)
if acc.is_main_process:
    assert resumed.resumed_from == 6
    for name in ("model.safetensors", "checkpoints/last/model.safetensors"):
        a, b = load_file(out + "/a/" + name), load_file(out + "/b/" + name)
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert len(torch.load(out + "/a/checkpoints/last/rng.pt", weights_only=True)) == 2
    print("ddp ok")
"""


@pytest.mark.slow
def test_two_process_ddp_on_cpu_trains_and_resumes_exactly(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(tests_dir=str(Path(__file__).parent), out=str(tmp_path)))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ddp ok" in out.stdout, out.stderr[-4000:]


def test_exponential_schedule_is_tf_staircase_decay_after_warmup():
    from vmmlib.train.loop import lr_multiplier

    values = [
        lr_multiplier(s, warmup_steps=2, total_steps=10, schedule="exponential", decay_rate=0.9)
        for s in (0, 1, 2, 11, 12, 22, 35)
    ]
    assert values == pytest.approx([0.0, 0.5, 1.0, 1.0, 0.9, 0.81, 0.729])


# --------------------------------------------------------------------------- bad data leaves no trace


class BatchNormNet(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.inp = nn.Linear(8, 16)
        self.norm = nn.BatchNorm1d(16)
        self.head = nn.Linear(16, 1)

    def forward(self, x):  # (B, 8) -> (B, 1)
        return self.head(torch.relu(self.norm(self.inp(x))))


class InfInputAt:
    """Puts +inf into one feature of the batch at the `step`-th call; records what each call sees."""

    def __init__(self, step: int):
        self.step, self.calls, self.seen = step, 0, []

    def __call__(self, model, batch):
        self.calls += 1
        self.seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        x, y = batch
        if self.calls == self.step:
            x = x.clone()
            x[0, 2] = float("inf")
        return objective(model, (x, y))


def test_a_batch_holding_inf_leaves_no_trace_in_the_weights_or_the_batchnorm_statistics(tmp_path):
    obj = InfInputAt(3)
    with pytest.warns(RuntimeWarning, match="step 3: non-finite loss.*optimiser step skipped"):
        result = run_fit(
            BatchNormNet(), tmp_path, obj=obj, steps=6, eval_every=2, metric="mse", greater_is_better=False,
            eval_fn=lambda m: {"mse": full_mse(m, regression_data())},
        )  # fmt: skip
    # Step 4 sees exactly the model step 3 saw: running mean/var and num_batches_tracked included.
    assert same_tensors(obj.seen[2], obj.seen[3])
    assert int(obj.seen[3]["norm.num_batches_tracked"]) == 2
    assert result.history["eval/mse"].dropna().map(math.isfinite).all()
    assert result.best_step is not None and (tmp_path / "model.safetensors").is_file()
    assert_all_checkpoints_finite(tmp_path)


def test_a_non_finite_evaluation_is_logged_as_such_with_a_warning_and_never_selected_as_best(tmp_path):
    values = iter([0.2, float("nan"), 0.5, float("inf")])
    with pytest.warns(RuntimeWarning) as caught:
        result = run_fit(
            TinyNet(),
            tmp_path,
            steps=8,
            eval_every=2,
            log_every=1,
            metric="score",
            eval_fn=lambda m: {"score": next(values)},
        )
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("step 4: evaluation gave non-finite {'score': nan}") for m in messages), messages
    assert (result.best_step, result.best_metric) == (6, 0.5)
    assert json.loads((tmp_path / "checkpoints/best/best.json").read_text())["step"] == 6
    csv = pd.read_csv(tmp_path / "history.csv", dtype=str, keep_default_na=False).set_index("step")
    assert csv.loc[["2", "4", "6", "8"], "eval/score"].tolist() == ["0.2", "nan", "0.5", "inf"]
    assert csv.loc["3", "eval/score"] == ""  # not evaluated there: blank, unlike a NaN evaluation


def test_the_final_save_falls_back_to_the_best_checkpoint_when_the_weights_end_non_finite(tmp_path):
    def corrupting(model, batch):  # finite loss and gradients, but the last step leaves a NaN weight
        terms = objective(model, batch)
        if len(calls) == 5:
            with torch.no_grad():
                model.head.bias.fill_(float("nan"))
        calls.append(1)
        return terms

    calls = []
    with pytest.warns(RuntimeWarning) as caught:
        result = run_fit(
            TinyNet(), tmp_path, obj=corrupting, steps=6, eval_every=3, metric="mse", greater_is_better=False,
            eval_fn=lambda m: {"mse": full_mse(m, regression_data())},
        )  # fmt: skip
    assert any("final weights hold NaN/inf" in str(w.message) for w in caught)
    assert result.best_step == 3
    assert same_tensors(
        load_file(tmp_path / "model.safetensors"), load_file(tmp_path / "checkpoints/best/model.safetensors")
    )
    assert_all_checkpoints_finite(tmp_path)


# --------------------------------------------------------------------------- arguments, fingerprints, periodic saves


def test_check_fit_args_names_each_invalid_argument_with_its_valid_choices(tmp_path):
    assert check_fit_args(steps=1, lr=1e-3) is None
    with pytest.raises(ValueError) as err:
        check_fit_args(steps=0, lr=-1.0, schedule="cosin", save_minutes=float("nan"), ema_decay=1.0)
    message = str(err.value)
    for part in (
        "steps=0 (an integer >= 1)", "lr=-1.0 (a number > 0)",
        "schedule='cosin' (one of linear, cosine, constant, exponential)",
        "save_minutes=nan (a number >= 0; 0: off)", "ema_decay=1.0 (a number in [0, 1); 0: off)",
    ):  # fmt: skip
        assert part in message, message
    with pytest.raises(ValueError, match="schedule='cosin'"):  # fit checks before it touches out_dir
        run_fit(TinyNet(), tmp_path / "run", schedule="cosin")
    assert not (tmp_path / "run").exists()


def test_zero_means_off_for_every_optional_number_exactly_as_none_does(tmp_path):
    off = ("schedule_steps", "ema_decay", "grad_clip", "backbone_lr", "max_nonfinite_steps", "save_minutes")
    common = {"steps": 12, "warmup_steps": 2, "eval_every": 0, "save_every": 0}
    zero = run_fit(TinyNet(), tmp_path / "zero", **common, **dict.fromkeys(off, 0))
    none = run_fit(TinyNet(), tmp_path / "none", **common, **dict.fromkeys(off, None))
    assert same_tensors(
        load_file(tmp_path / "zero/model.safetensors"), load_file(tmp_path / "none/model.safetensors")
    )
    assert not (tmp_path / "zero/checkpoints/last/ema.safetensors").exists()
    pd.testing.assert_frame_equal(zero.history, none.history)
    assert zero.history["lr/others"].iloc[-1] == pytest.approx(1e-2 * 1 / 10)  # linear decay over steps=12


def test_fit_refuses_to_resume_a_checkpoint_made_with_another_fingerprint_or_learning_rate(tmp_path):
    run_fit(TinyNet(), tmp_path, steps=4, fingerprint="aaa")
    with pytest.raises(ValueError, match="fingerprint: 'aaa' → 'bbb'.*resume=False"):
        run_fit(TinyNet(), tmp_path, steps=8, fingerprint="bbb")
    with pytest.raises(ValueError, match="lr: 0.01 → 0.02"):
        run_fit(TinyNet(), tmp_path, steps=8, lr=2e-2, fingerprint="aaa")
    assert run_fit(TinyNet(), tmp_path, steps=8, fingerprint="bbb", resume=False).resumed_from == 0
    assert run_fit(TinyNet(), tmp_path, steps=10, fingerprint="bbb", save_every=3).resumed_from == 8


def test_save_minutes_writes_a_checkpoint_by_wall_clock_that_a_rerun_resumes_from(tmp_path, monkeypatch):
    clock = [0.0]

    class FakeTime:  # 25 s per training step
        @staticmethod
        def monotonic():
            return clock[0]

    def slow(model, batch):
        clock[0] += 25.0
        return crash(model, batch)

    monkeypatch.setattr("vmmlib.train.loop.time", FakeTime)
    crash = CrashAt(8)
    with pytest.raises(KeyboardInterrupt):
        run_fit(TinyNet(), tmp_path, obj=slow, steps=10, save_minutes=1.0)
    assert json.loads((tmp_path / "checkpoints/last/state.json").read_text())["step"] == 6  # 75 s, 150 s
    assert run_fit(TinyNet(), tmp_path, steps=10, save_minutes=1.0).resumed_from == 6


def test_an_objective_that_runs_its_own_backward_trains_as_a_plain_one(tmp_path):
    """`backward_inside` objectives (contrastive accumulation over cached features) get `backward`
    from fit; two half-batch backward passes give the plain objective's weights."""

    def halves(model, batch, backward):
        x, y = batch
        terms = {"mse": 0.0, "l1": 0.0}
        for part in (slice(0, len(x) // 2), slice(len(x) // 2, None)):
            half = objective(model, (x[part], y[part]))
            share = len(x[part]) / len(x)  # both terms are means over the batch
            backward(share * (half["mse"] + half["l1"]))
            terms = {k: terms[k] + share * half[k].detach() for k in terms}
        return terms

    halves.backward_inside = True
    torch.manual_seed(0)
    run_fit(TinyNet(), tmp_path / "plain", steps=6)
    torch.manual_seed(0)
    run_fit(TinyNet(), tmp_path / "inside", obj=halves, steps=6)
    plain = load_file(tmp_path / "plain" / "model.safetensors")
    inside = load_file(tmp_path / "inside" / "model.safetensors")
    assert plain.keys() == inside.keys() and all(
        torch.allclose(plain[k], inside[k], atol=1e-6) for k in plain
    )
    history = pd.read_csv(tmp_path / "inside" / "history.csv")
    assert {"train/mse", "train/l1"} <= set(history.columns)


class ClampedNet(TinyNet):
    """TinyNet whose head bias is held in [-0.05, 0.05] by `after_optimizer_step` (as CLIP's scale)."""

    def __init__(self):
        super().__init__()
        self.after_steps = 0

    def after_optimizer_step(self):
        self.after_steps += 1
        with torch.no_grad():
            self.head.bias.clamp_(-0.05, 0.05)


def test_after_optimizer_step_runs_after_every_step_taken_and_before_the_ema(tmp_path):
    # A skipped step: its optimiser step and the hook's effect are undone on the device (the hook still
    # runs: skipping the call would need a host read), so step 4 sees what step 3 saw.
    obj = NonFiniteAt(nan_loss=(3,))
    model = ClampedNet()
    with pytest.warns(RuntimeWarning, match="non-finite"):
        run_fit(model, tmp_path, obj=obj, steps=10, lr=0.5, ema_decay=0.5, save_every=5)
    assert model.after_steps == 10 and same_tensors(obj.seen[2], obj.seen[3])
    seen = [w["head.bias"].abs().max().item() for w in obj.seen[1:]]
    assert max(seen) <= 0.05 + 1e-7 and max(seen) == pytest.approx(0.05)  # clamped, and the clamp bit
    for f in tmp_path.rglob("*.safetensors"):  # the EMA is a mean of clamped weights: inside too
        assert load_file(f)["head.bias"].abs().max().item() <= 0.05 + 1e-7, f
    free = TinyNet()
    run_fit(free, tmp_path / "free", obj=objective, steps=10, lr=0.5, ema_decay=0.5)
    assert free.head.bias.abs().max().item() > 0.05  # without the hook the same run leaves the band


class Recording:
    """The plain objective, recording the weights each call sees."""

    def __init__(self):
        self.seen = []

    def __call__(self, model, batch):
        self.seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return objective(model, batch)


def test_reset_optimizer_resumes_with_fresh_moments_on_the_new_schedule_at_the_checkpoint_step(tmp_path):
    args = {"steps": 20, "schedule_steps": 20, "warmup_steps": 0, "weight_decay": 0.0, "log_every": 1}
    run_fit(TinyNet(), tmp_path, **{**args, "steps": 10})
    with pytest.raises(ValueError, match=r"lr: 0.01 → 0.005"):
        run_fit(TinyNet(), tmp_path, **{**args, "lr": 5e-3})
    kept, reset = Recording(), Recording()
    run_fit(TinyNet(), tmp_path / "exact", **{**args, "steps": 10})  # the same first 10 steps
    run_fit(TinyNet(seed=7), tmp_path / "exact", obj=kept, **{**args, "steps": 12})  # resumed, moments kept
    result = run_fit(TinyNet(seed=3), tmp_path, obj=reset, reset_optimizer=True, **{**args, "lr": 5e-3})
    assert result.resumed_from == 10 and result.last_step == 20
    lr_11 = result.history.set_index("step").loc[11, "lr/others"]
    assert lr_11 == pytest.approx(5e-3 * (20 - 10) / 20)  # this run's linear decay, at step 10
    before, after = reset.seen[0], reset.seen[1]
    assert same_tensors(before, kept.seen[0])  # the checkpoint's weights, whatever the model began with
    step = (after["head.weight"] - before["head.weight"]).abs()
    # Adam's first step from fresh moments moves each weight by the learning rate (m̂/√v̂ = ±1)
    torch.testing.assert_close(step, torch.full_like(step, lr_11), rtol=1e-3, atol=0)
    kept_step = (kept.seen[1]["head.weight"] - kept.seen[0]["head.weight"]).abs()
    assert kept_step.max() > 1.5 * kept_step.min()  # the kept moments do not
