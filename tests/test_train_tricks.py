"""Fine-tuning tricks of `fit`: FGM / PGD on the word embeddings (`vmmlib.train.adversarial`), layer-wise
learning-rate decay and SWA (`vmmlib.train.optim`), their argument checks, and exact resume with each on.

A tiny token model with BERT-like parameter names (`embeddings.word_embeddings`, `encoder.layer.<i>`)
and dropout (so RNG state matters) on a synthetic regression set; CPU only.
"""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

from vmmlib.train.adversarial import FGM, PGD, embedding_params
from vmmlib.train.config import check_fit_args
from vmmlib.train.loop import fit, make_loader
from vmmlib.train.optim import SWA, layer_depth, param_groups

VOCAB, LENGTH, N, BATCH = 20, 6, 64, 8


class TokenNet(nn.Module):
    def __init__(self, seed: int = 0, layers: int = 2):
        super().__init__()
        torch.manual_seed(seed)
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(VOCAB, 16)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([nn.Linear(16, 16) for _ in range(layers)])
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(16, 1)

    def forward(self, ids):  # (B, L) -> (B, 1)
        x = self.embeddings.word_embeddings(ids).mean(1)
        for layer in self.encoder.layer:
            x = torch.tanh(layer(self.drop(x)))
        return self.head(x)


def token_data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (N, LENGTH), generator=g)
    y = (torch.sin(ids.float()).mean(1, keepdim=True) * 3).float()
    return TensorDataset(ids, y)


def objective(model, batch):
    ids, y = batch
    return {"mse": F.mse_loss(model(ids), y)}


def run_fit(model, out_dir, *, obj=objective, **kw):
    args = {"steps": 20, "lr": 1e-2, "log_every": 2, "progress": False, "seed": 0, **kw}
    loader = make_loader(token_data(), BATCH, shuffle=True, seed=1)
    return fit(model, loader, obj, out_dir=out_dir, **args)


def grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def backward_at(model, ids, weight=None) -> dict[str, torch.Tensor]:
    """Gradients of the loss with the embedding table set to `weight` (a fresh backward pass)."""
    model.zero_grad(set_to_none=True)
    table = model.embeddings.word_embeddings.weight
    saved = table.detach().clone()
    if weight is not None:
        with torch.no_grad():
            table.copy_(weight)
    model(ids).pow(2).mean().backward()
    with torch.no_grad():
        table.copy_(saved)
    return grads(model)


# --------------------------------------------------------------------------- FGM / PGD


def test_fgm_restores_the_embeddings_and_adds_the_gradient_at_eps_along_the_normalised_gradient():
    model = TokenNet().eval()
    ids = token_data().tensors[0][:8]
    table = model.embeddings.word_embeddings.weight
    clean_weight = table.detach().clone()
    clean = backward_at(model, ids)
    g = clean["embeddings.word_embeddings.weight"]
    expected_adv = backward_at(model, ids, clean_weight + 1.0 * g / g.norm())
    backward_at(model, ids)  # back to the clean gradients

    seen = []

    def again():
        seen.append(table.detach().clone())
        loss = model(ids).pow(2).mean()
        loss.backward()
        return loss.detach()

    FGM(embedding_params(model, "word_embeddings"), epsilon=1.0).attack(again)
    assert torch.equal(table, clean_weight)  # weights restored
    assert (seen[0] - clean_weight).norm().item() == pytest.approx(1.0, rel=1e-5)  # a step of ε
    after = grads(model)
    for n in clean:  # clean + adversarial gradient, for every parameter
        assert torch.allclose(after[n], clean[n] + expected_adv[n], atol=1e-6), n
    assert not torch.allclose(after["head.weight"], clean["head.weight"])  # the attack changed them


def test_pgd_takes_k_steps_inside_the_eps_ball_and_ends_with_clean_plus_the_last_adversarial_gradient():
    model = TokenNet().eval()
    ids = token_data().tensors[0][:8]
    table = model.embeddings.word_embeddings.weight
    clean_weight = table.detach().clone()
    clean = backward_at(model, ids)
    seen = []

    def again():
        seen.append((table.detach().clone(), {n: p.grad for n, p in model.named_parameters()}))
        loss = model(ids).pow(2).mean()
        loss.backward()
        return loss.detach()

    eps, alpha, k = 0.5, 0.3, 3
    params = list(model.parameters())
    PGD(embedding_params(model, "word_embeddings"), params, epsilon=eps, alpha=alpha, steps=k).attack(again)
    assert len(seen) == k
    radii = [(w - clean_weight).norm().item() for w, _ in seen]
    assert radii[0] == pytest.approx(alpha, rel=1e-5)
    assert all(r <= eps + 1e-5 for r in radii) and radii[-1] == pytest.approx(eps, rel=1e-5)  # projected
    assert all(g is None for g in seen[0][1].values())  # the first K-1 passes start from zero grads
    assert torch.equal(table, clean_weight)
    last_adv = backward_at(model, ids, seen[-1][0])
    expected = {n: clean[n] + last_adv[n] for n in clean}
    backward_at(model, ids)
    PGD(embedding_params(model, "word_embeddings"), params, epsilon=eps, alpha=alpha, steps=k).attack(again)
    for n, g in grads(model).items():
        assert torch.allclose(g, expected[n], atol=1e-6), n


def test_an_adversarial_pattern_matching_nothing_names_the_models_embedding_parameters(tmp_path):
    with pytest.raises(
        ValueError, match=r"matches no trainable parameter.*embeddings\.word_embeddings\.weight"
    ):
        run_fit(TokenNet(), tmp_path, adversarial="fgm", adv_param_pattern="token_table")


def test_the_default_pattern_picks_the_text_word_embeddings_of_the_wbdc_models():
    from vmmlib.models import create_model

    for name in ("wbdc_single_stream_tiny", "wbdc_dual_stream_tiny"):
        model = create_model(name)
        picked = [
            n
            for n, p in model.named_parameters()
            if any(p is q for q in embedding_params(model, "word_embeddings"))
        ]
        assert picked == ["bert.embeddings.word_embeddings.weight"], (name, picked)


@pytest.mark.parametrize("kind", ["fgm", "pgd"])
def test_fit_with_adversarial_training_learns_and_logs_the_adversarial_loss(tmp_path, kind):
    result = run_fit(TokenNet(), tmp_path, adversarial=kind, steps=30, lr=2e-2)
    h = result.history
    assert h["train/adv_loss"].notna().all()
    assert h["train/mse"].iloc[-3:].mean() < 0.7 * h["train/mse"].iloc[:3].mean()


# --------------------------------------------------------------------------- layer-wise learning-rate decay


def test_layer_depth_counts_each_stack_from_its_top_and_puts_embeddings_at_the_bottom():
    names = [
        "bert.embeddings.word_embeddings.weight", "bert.embeddings.LayerNorm.weight",
        "bert.encoder.layer.0.attention.self.query.weight", "bert.encoder.layer.2.output.dense.bias",
        "video_embeddings.position.weight", "video_encoder.layer.0.intermediate.dense.weight",
        "video_encoder.layer.1.intermediate.dense.weight", "vision.model.encoder.layers.11.mlp.fc1.weight",
        "cross.0.visual_attention.att.query.weight", "classifier.weight", "video_cls",
    ]  # fmt: skip
    assert layer_depth(names) == {
        "bert.embeddings.word_embeddings.weight": 13, "bert.embeddings.LayerNorm.weight": 13,
        "bert.encoder.layer.0.attention.self.query.weight": 3, "bert.encoder.layer.2.output.dense.bias": 1,
        "video_embeddings.position.weight": 13, "video_encoder.layer.0.intermediate.dense.weight": 2,
        "video_encoder.layer.1.intermediate.dense.weight": 1, "vision.model.encoder.layers.11.mlp.fc1.weight": 1,
        "cross.0.visual_attention.att.query.weight": 0, "classifier.weight": 0, "video_cls": 0,
    }  # fmt: skip


def test_llrd_gives_each_layer_its_rate_and_fit_uses_and_logs_them(tmp_path):
    model = TokenNet(layers=3)
    groups = param_groups(model, lr=1.0, weight_decay=0.01, layer_lr_decay=0.5)
    rate = {n: g["lr"] for g in groups for n in g["param_names"]}
    assert rate == {
        "head.weight": 1.0, "head.bias": 1.0,
        "encoder.layer.2.weight": 0.5, "encoder.layer.2.bias": 0.5,
        "encoder.layer.1.weight": 0.25, "encoder.layer.1.bias": 0.25,
        "encoder.layer.0.weight": 0.125, "encoder.layer.0.bias": 0.125,
        "embeddings.word_embeddings.weight": 0.0625,
    }  # fmt: skip
    assert {g["name"] for g in groups} == {f"others/depth{d}" for d in range(5)}
    assert all(g["weight_decay"] == (0.0 if g["params"][0].ndim < 2 else 0.01) for g in groups)
    h = run_fit(TokenNet(layers=3), tmp_path, steps=4, warmup_steps=2, layer_lr_decay=0.5).history
    assert h.loc[1, "lr/others/depth0"] == pytest.approx(1e-2 * 1 / 2)  # step 4: warmup done, linear decay
    assert h.loc[1, "lr/others/depth4"] == pytest.approx(1e-2 * 1 / 2 * 0.5**4)


# --------------------------------------------------------------------------- EMA and SWA


def test_ema_shadow_weights_are_what_is_evaluated_and_saved_as_best_and_final(tmp_path):
    seen = {}

    def eval_fn(model):
        seen[len(seen) + 1] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"mse": token_eval(model)["mse"]}

    result = run_fit(
        TokenNet(), tmp_path, steps=9, eval_every=3, eval_fn=eval_fn, metric="mse", greater_is_better=False,
        ema_decay=0.9,
    )  # fmt: skip
    raw = load_file(tmp_path / "checkpoints/last/model.safetensors")
    ema = load_file(tmp_path / "checkpoints/last/ema.safetensors")
    final, best = (
        load_file(tmp_path / "model.safetensors"),
        load_file(tmp_path / "checkpoints/best/model.safetensors"),
    )
    for k in ema:
        assert torch.equal(final[k], ema[k]) and torch.equal(seen[3][k], ema[k]), k
        assert torch.equal(best[k], seen[result.best_step // 3][k]), k
    assert not torch.equal(raw["head.weight"], ema["head.weight"])


@pytest.mark.parametrize("ema_decay", [0.0, 0.8])
def test_swa_is_the_mean_of_the_last_n_evaluated_weights_and_is_evaluated(tmp_path, ema_decay):
    evaluated = []

    def eval_fn(model):
        evaluated.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"mse": float(sum(p.abs().sum() for p in model.parameters()))}

    model = TokenNet()
    result = run_fit(
        model, tmp_path, steps=10, eval_every=2, eval_fn=eval_fn, metric="mse", greater_is_better=False,
        swa_last=3, ema_decay=ema_decay,
    )  # fmt: skip
    assert result.swa_steps == [6, 8, 10]
    swa_evaluated = evaluated.pop()  # the last eval_fn call sees the SWA mean
    assert len(evaluated) == 5  # steps 2, 4, 6, 8, 10: the weights eval_fn saw (EMA's when on)
    final = load_file(tmp_path / "model.safetensors")
    for k, v in final.items():
        mean = torch.stack([e[k] for e in evaluated[-3:]]).mean(0)
        assert torch.allclose(v, mean, atol=1e-6), k
        assert torch.equal(swa_evaluated[k], v)
        assert torch.equal(model.state_dict()[k], v)
    assert not torch.allclose(final["head.weight"], evaluated[-1]["head.weight"])
    assert "swa/mse" in result.history.columns and result.history["swa/mse"].notna().sum() == 1


def test_swa_keeps_only_the_last_n_snapshots_and_skips_non_finite_ones():
    swa = SWA(2)
    for step, value in [(1, 1.0), (2, 2.0), (3, float("nan")), (4, 4.0)]:
        with pytest.warns(RuntimeWarning, match="non-finite") if step == 3 else _no_warning():
            swa.add(step, {"w": torch.tensor([value]), "n": torch.tensor([step])})
    assert sorted(swa.snapshots) == [2, 4]
    averaged, steps = swa.average(5, {"w": torch.tensor([6.0]), "n": torch.tensor([5])})
    assert steps == [4, 5] and averaged["w"].item() == 5.0 and averaged["n"].item() == 5
    restored = SWA(2)
    restored.load_state_dict(swa.state_dict())
    assert {s: t["w"].item() for s, t in restored.snapshots.items()} == {2: 2.0, 4: 4.0}


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------- exact resume with every trick


class CrashAt:
    def __init__(self, step: int):
        self.step, self.calls = step, 0

    def __call__(self, model, batch):
        self.calls += 1
        if self.calls == self.step:
            raise KeyboardInterrupt(f"simulated kill at call {self.step}")
        return objective(model, batch)


def token_eval(model):
    torch.randn(10)  # draws from the global RNG: fit must restore it
    ids, y = token_data().tensors
    return {"mse": F.mse_loss(model(ids), y).item()}


TRICKS = {
    "fgm": {"adversarial": "fgm"},
    "pgd": {"adversarial": "pgd", "adv_steps": 2, "adv_epsilon": 0.5},
    "swa": {"swa_last": 3, "ema_decay": 0.9},
    "llrd": {"layer_lr_decay": 0.7},
}
CALLS_PER_STEP = {"fgm": 2, "pgd": 3, "swa": 1, "llrd": 1}


@pytest.mark.parametrize("trick", list(TRICKS))
def test_a_run_killed_and_resumed_with_a_trick_on_equals_an_uninterrupted_one_bit_for_bit(tmp_path, trick):
    args = {
        "steps": 16, "schedule_steps": 16, "warmup_steps": 2, "eval_fn": token_eval, "eval_every": 4,
        "metric": "mse", "greater_is_better": False, "save_every": 5, **TRICKS[trick],
    }  # fmt: skip
    a = run_fit(TokenNet(), tmp_path / "a", **args)
    crash_call = 13 * CALLS_PER_STEP[trick]  # inside step 13; resumes from the step-10 checkpoint
    with pytest.raises(KeyboardInterrupt):
        run_fit(TokenNet(), tmp_path / "b", obj=CrashAt(crash_call), **args)
    b = run_fit(TokenNet(seed=7), tmp_path / "b", **args)
    assert b.resumed_from == 10
    files = ["model.safetensors", "checkpoints/last/model.safetensors", "checkpoints/best/model.safetensors"]
    files += (
        ["checkpoints/last/swa.safetensors", "checkpoints/last/ema.safetensors"] if trick == "swa" else []
    )
    for name in files:
        ta, tb = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta), name
    assert a.history.equals(b.history)
    assert a.swa_steps == b.swa_steps == ([8, 12, 16] if trick == "swa" else [])


def test_resuming_with_a_trick_switched_on_or_off_is_refused(tmp_path):
    run_fit(TokenNet(), tmp_path, steps=4)
    with pytest.raises(ValueError, match="adversarial: None → 'fgm'"):
        run_fit(TokenNet(), tmp_path, steps=8, adversarial="fgm")
    run_fit(TokenNet(), tmp_path / "llrd", steps=4, layer_lr_decay=0.8)
    with pytest.raises(ValueError, match="layer_lr_decay: 0.8 → None"):
        run_fit(TokenNet(), tmp_path / "llrd", steps=8)
    assert run_fit(TokenNet(), tmp_path, steps=6, adversarial="none").resumed_from == 4


def test_check_fit_args_names_the_valid_ranges_of_the_trick_arguments():
    with pytest.raises(ValueError) as err:
        check_fit_args(
            steps=10, lr=1e-3, adversarial="awp", adv_epsilon=0.0, adv_alpha=-1.0, adv_steps=0,
            adv_param_pattern="(", layer_lr_decay=1.5, swa_last=-1,
        )  # fmt: skip
    message = str(err.value)
    for part in (
        "adversarial='awp' (one of none, fgm, pgd)", "adv_epsilon=0.0 (a number > 0)",
        "adv_alpha=-1.0 (a number > 0)", "adv_steps=0 (an integer >= 1)",
        "adv_param_pattern='(' (a non-empty regular expression)",
        "layer_lr_decay=1.5 (a number in (0, 1]; 0: off)", "swa_last=-1 (an integer >= 0; 0: off)",
    ):  # fmt: skip
        assert part in message, message
    with pytest.raises(ValueError, match="swa_last=3 needs eval_every >= 1"):
        check_fit_args(steps=10, lr=1e-3, swa_last=3, eval_every=0)
    check_fit_args(steps=10, lr=1e-3, adversarial="pgd", layer_lr_decay=0.9, swa_last=2, eval_every=5)
