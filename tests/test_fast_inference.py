"""`vmmlib.predict.backends`: every fast backend predicts what eager predicts, on the tiny single-stream
WBDC model, with batch size, frame count and text length all varying after the export."""

import importlib.util
from pathlib import Path

import pytest
import torch

from vmmlib.models import create_model
from vmmlib.predict.backends import BACKENDS, argmax_agreement, cpu_summary, prepare, prepare_models
from vmmlib.predict.loop import predict_all


def make_batch(g: torch.Generator, batch: int, frames: int, length: int) -> dict[str, torch.Tensor]:
    out = {
        "frames": torch.randn(batch, frames, 768, generator=g),
        "frame_mask": torch.ones(batch, frames),
        "text_ids": torch.randint(1, 1000, (batch, length), generator=g),
        "text_mask": torch.ones(batch, length, dtype=torch.long),
    }
    out["frame_mask"][0, frames // 2 :] = 0  # padded frames and text, as collate makes them
    out["text_mask"][-1, length // 2 :] = 0
    return out


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = create_model("wbdc_single_stream_tiny", vocab_size=1000, pretrain_heads=False).eval()
    g = torch.Generator().manual_seed(1)
    batches = [make_batch(g, 4, 8, 40), make_batch(g, 7, 32, 64), make_batch(g, 1, 5, 9)]
    return model, batches


@pytest.fixture(scope="module")
def onnx_tiny(tiny):
    """The tiny model through ONNX Runtime: exported once (~10 s) for the tests below."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    return prepare(tiny[0], "onnx")


@pytest.mark.parametrize("backend", ["onnx", pytest.param("onnx_int8", marks=pytest.mark.slow), "int8"])
def test_a_fast_backend_agrees_with_eager_on_the_tiny_single_stream_model(tiny, backend, request):
    model, batches = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    if backend == "onnx":
        fast = request.getfixturevalue("onnx_tiny")
    else:
        if backend == "onnx_int8":
            pytest.importorskip("onnxruntime")
            pytest.importorskip("onnxscript")
        fast = prepare(model, backend)
    with torch.no_grad():
        for batch in batches:  # shapes differ from the first call's: every dimension stays dynamic
            eager, out = model(**batch), fast(**batch)
            assert out.keys() >= {"logits", "embedding"}
            assert out["logits"].shape == eager["logits"].shape and out["logits"].dtype == torch.float32
            tolerance = 1e-4 if backend == "onnx" else 0.1 * eager["logits"].abs().max().item()
            assert (out["logits"] - eager["logits"]).abs().max().item() < tolerance
    assert argmax_agreement(model, fast, batches) >= (1.0 if backend == "onnx" else 0.75)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is untouched
    assert not model.training


def test_an_onnx_module_runs_in_the_shared_prediction_loop(tiny, onnx_tiny):
    model, batches = tiny
    items = [{k: v[i] for k, v in batches[1].items()} | {"id": f"v{i}"} for i in range(7)]

    def collate(rows):
        out = {k: torch.stack([r[k] for r in rows]) for k in rows[0] if k != "id"}
        return out | {"id": [r["id"] for r in rows]}

    def step(m, b):
        return m(**{k: v for k, v in b.items() if torch.is_tensor(v)})["logits"]

    ids, fast = predict_all(
        prepare(model, "onnx"), items, step, batch_size=3, collate_fn=collate, device="cpu"
    )
    _, eager = predict_all(model, items, step, batch_size=3, collate_fn=collate, device="cpu")
    assert ids == [f"v{i}" for i in range(7)]
    assert abs(fast - eager).max() < 1e-4


def test_prepare_models_maps_every_fold_model_and_names_the_device_to_predict_on(tiny):
    model = tiny[0]
    assert prepare_models([model, model], "eager") == ([model, model], None, {"infer_backend": "eager"})
    quantised, device, report = prepare_models(model, "int8")
    assert len(quantised) == 1 and quantised[0] is not model and device == torch.device("cpu")
    assert report == {"infer_backend": "int8"}


def test_auto_times_eager_and_int8_on_the_sample_and_never_picks_a_slower_backend(tiny, capsys):
    model, batches = tiny
    (fast,), device, report = prepare_models(
        model, "auto", sample=[batches[0], batches[2]], candidates=["int8"], rounds=1
    )
    rates = {b: report[f"infer_rate_{b}"] for b in ("eager", "int8")}
    assert all(r > 0 for r in rates.values()) and report["infer_agreement_eager"] == 1.0
    assert (
        0 <= report["infer_agreement_int8"] <= 1
        and report["infer_engine"] in torch.backends.quantized.supported_engines
    )
    pick = report["infer_backend"]
    assert pick in rates and rates[pick] >= rates["eager"]
    assert (fast is model) == (pick == "eager")
    assert device == (None if pick == "eager" else torch.device("cpu"))
    assert f"infer_backend auto: picked {pick}; measured eager " in capsys.readouterr().out


@pytest.mark.parametrize(
    ("int8_rate", "agrees", "pick"),
    [(30.0, True, "int8"), (30.0, False, "eager"), (9.0, True, "eager")],
    ids=["faster-and-agreeing", "faster-but-disagreeing", "slower"],
)
def test_auto_picks_the_fastest_agreeing_backend_or_eager(tiny, monkeypatch, int8_rate, agrees, pick):
    import vmmlib.predict.backends as FI

    model, batches = tiny
    monkeypatch.setattr(FI, "race", lambda modules, *a, **k: {"eager": 10.0, "int8": int8_rate})
    monkeypatch.setattr(FI, "argmax_agreement", lambda *a, **k: 1.0 if agrees else 0.99)
    fast, report = FI.choose_backend(model, batches[:1], candidates=["int8"], log=None)
    assert report["infer_backend"] == pick and (fast is model) == (pick == "eager")


def test_auto_needs_sample_batches(tiny):
    with pytest.raises(ValueError, match="sample batches"):
        prepare_models(tiny[0], "auto")


def test_an_unknown_backend_names_the_valid_ones(tiny):
    with pytest.raises(
        ValueError, match="unknown infer_backend 'tensorrt'; valid choices: " + ", ".join(BACKENDS)
    ):
        prepare(tiny[0], "tensorrt")


def test_the_wbdc_inference_benchmark_runs_at_tiny_size_and_ties_every_ratio_to_the_cpu(capsys):
    """Correctness only (the timings of a tiny model on a shared machine mean nothing): the fast path
    agrees with eager, and each ratio line names the CPU it was measured on."""
    path = Path(__file__).parents[1] / "benchmarks" / "bench_wbdc_inference.py"
    spec = importlib.util.spec_from_file_location("bench_wbdc_inference", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--size", "tiny", "--test", "8", "--labeled", "8", "--steps", "0", "--batch-size", "4"]
    assert (
        bench.main(
            [*args, "--repeats", "1", "--backends", "int8", "--min-ratio", "0", "--min-agreement", "0.75"]
        )
        == 0
    )
    out = capsys.readouterr().out
    ratios = [line for line in out.splitlines() if "videos/s" in line]
    cpu = cpu_summary().split(";")[0]
    assert len(ratios) == 3 and all(cpu in line for line in ratios), out
    assert "fastest: int8" in out and "meets --min-ratio 0.0" in out
