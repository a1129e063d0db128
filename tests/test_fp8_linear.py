"""Tests for FP8Linear / convert_to_fp8 (CPU reference path) and, on a GPU, fast path == reference.

Legend: M tokens, K in-features, N out-features.
"""

import logging

import pytest
import torch
from conftest import needs_cxx
from torch import nn

from r1lab import fp8
from r1lab.fp8 import FP8Linear, convert_to_fp8


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """DeepGEMM's similarity metric: 1 - 2<a,b>/(|a|^2+|b|^2) (about half the squared relative error)."""
    a, b = a.double(), b.double()
    return (1 - 2 * (a * b).sum() / (a * a + b * b).sum()).item()


def _loop_quant(x: torch.Tensor, br: int, bc: int) -> torch.Tensor:
    """Independent fake-quantiser: per-tile loop, amax/448 scale, E4M3 round trip."""
    out = torch.empty_like(x, dtype=torch.float32)
    for i in range(0, x.shape[0], br):
        for j in range(0, x.shape[1], bc):
            t = x[i:i + br, j:j + bc].float()
            s = max(t.abs().max().item(), 1e-12) / 448.0
            out[i:i + br, j:j + bc] = (t / s).to(torch.float8_e4m3fn).float() * s
    return out


def _make(M=40, K=300, N=200, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g).to(dtype)
    w = (torch.randn(N, K, generator=g) / K**0.5).to(dtype)
    b = torch.randn(N, generator=g).to(dtype)
    dy = torch.randn(M, N, generator=g).to(dtype)
    return x, w, b, dy


def _run_fp8(x, w, b, dy):
    lin = FP8Linear(w.shape[1], w.shape[0], dtype=w.dtype)
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(b)
    xr = x.clone().requires_grad_()
    y = lin(xr)
    y.backward(dy)
    return y, xr.grad, lin.weight.grad, lin.bias.grad


def test_tilings_match_an_independent_loop_reference():
    """fprop 1x128(x)·128x128(W); dgrad 1x128(dy along N)·128x128(W); wgrad 128x1 tiles along tokens for dy and x."""
    x, w, b, dy = _make(M=150, K=300, N=200)
    y, dx, dw, db = _run_fp8(x, w, b, dy)
    wq = _loop_quant(w, 128, 128)
    torch.testing.assert_close(y, _loop_quant(x, 1, 128) @ wq.t() + b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dx, _loop_quant(dy, 1, 128) @ wq, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dw, _loop_quant(dy, 128, 1).t() @ _loop_quant(x, 128, 1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(db, dy.sum(0))


@pytest.mark.parametrize("M,K,N", [(64, 256, 384), (37, 200, 136)])
def test_fp8_linear_close_to_high_precision(M, K, N):
    """E4M3 keeps 3 mantissa bits: expect ~2-4% relative (Frobenius) error, DeepGEMM-style diff well below 1e-2."""
    x, w, b, dy = _make(M, K, N)
    y, dx, dw, db = _run_fp8(x, w, b, dy)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    y32 = nn.functional.linear(xr, wr, b)
    y32.backward(dy)
    for got, want in [(y, y32), (dx, xr.grad), (dw, wr.grad)]:
        assert _diff(got, want) < 1e-3
        assert _rel(got, want) < 0.05
    torch.testing.assert_close(db, dy.sum(0))


def test_bf16_params_and_autocast():
    x, w, b, dy = _make(dtype=torch.bfloat16)
    y, dx, dw, db = _run_fp8(x, w, b, dy)
    assert y.dtype == dx.dtype == dw.dtype == db.dtype == torch.bfloat16
    ref = nn.functional.linear(x.float(), w.float(), b.float())
    assert _diff(y, ref) < 1e-3
    lin = FP8Linear(300, 200)  # fp32 master weights under bf16 autocast: bf16 out, fp32 grads
    x32 = x.float().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lin(x32)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x32.grad.dtype == torch.float32 and lin.weight.grad.dtype == torch.float32


def test_3d_input_and_no_bias_and_frozen_weight():
    lin = FP8Linear(256, 128, bias=False)
    lin.weight.requires_grad_(False)
    x = torch.randn(2, 5, 256, requires_grad=True)
    y = lin(x)
    assert y.shape == (2, 5, 128)
    y.sum().backward()
    assert x.grad.shape == x.shape and lin.weight.grad is None
    assert "fp8_gemm=reference" in repr(lin)


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=97, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def test_convert_llama_keeps_state_dict_and_excludes(caplog):
    model = _tiny_llama()
    before = {k: (v.shape, v.dtype, v.data_ptr()) for k, v in model.state_dict().items()}
    params_before = [id(p) for p in model.parameters()]
    with caplog.at_level(logging.INFO, logger="r1lab.fp8"):
        names = convert_to_fp8(model)
    assert sorted(names) == sorted(f"model.layers.{i}.{m}" for i in range(2) for m in (
        "self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"))
    assert all(isinstance(model.get_submodule(n), FP8Linear) for n in names)
    assert type(model.lm_head) is nn.Linear and type(model.model.layers[0].self_attn.k_proj) is nn.Linear
    assert "skip lm_head: excluded" in caplog.text
    assert "skip model.layers.0.self_attn.k_proj: in/out features 128/64 < 128" in caplog.text
    after = {k: (v.shape, v.dtype, v.data_ptr()) for k, v in model.state_dict().items()}
    assert after == before  # same keys, shapes, dtypes and the very same storage (master weights)
    assert [id(p) for p in model.parameters()] == params_before
    model.load_state_dict(model.state_dict())  # checkpoints load unchanged


def test_convert_plain_mlp_include_exclude_and_alignment():
    mlp = nn.Sequential(nn.Linear(256, 512), nn.GELU(), nn.Linear(512, 256), nn.Linear(256, 10),
                        nn.Linear(256, 200))
    assert convert_to_fp8(mlp) == ["0", "2"]  # "3": 10 < 128; "4": 200 not a multiple of 16
    mlp2 = nn.Sequential(nn.Linear(256, 512), nn.Linear(512, 256))
    assert convert_to_fp8(mlp2, include=["1"]) == ["1"]
    mlp3 = nn.Sequential(nn.Linear(256, 512), nn.Linear(512, 256))
    assert convert_to_fp8(mlp3, exclude=lambda name, m: m.out_features == 512) == ["1"]
    x = torch.randn(8, 256)
    torch.testing.assert_close(mlp3[1](mlp3[0](x)), nn.functional.linear(mlp3[0](x), mlp3[1].weight, mlp3[1].bias),
                               rtol=0.1, atol=0.1)


def _train(model, fp8_on: bool, steps: int) -> list[float]:
    if fp8_on:
        assert convert_to_fp8(model)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 97, (4, 32), generator=g)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_tiny_llama_trains_with_fp8_and_tracks_fp32():
    """Loss goes down with FP8 layers, and tracks the FP32 run from the same init (before memorisation, where
    tiny losses make relative gaps meaningless)."""
    fp8_losses = _train(_tiny_llama(), True, 15)
    ref_losses = _train(_tiny_llama(), False, 15)
    assert fp8_losses[-1] < 0.3 * fp8_losses[0]
    rel = max(abs(a - b) / b for a, b in zip(fp8_losses, ref_losses))
    assert rel < 0.02, (fp8_losses, ref_losses)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("M,K,N", [(256, 512, 384), (300, 576, 200), (4096, 7168, 576)])
def test_gpu_fast_path_matches_reference(M, K, N):
    ok, reason = fp8.fp8_kernels.blockwise_fp8_status("cuda")
    if not ok:
        pytest.skip(reason)
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(M, K, device="cuda", generator=g, dtype=torch.bfloat16)
    w = torch.randn(N, K, device="cuda", generator=g) / K**0.5
    dy = torch.randn(M, N, device="cuda", generator=g, dtype=torch.bfloat16)
    fast, ref = fp8.ScaledMMGemm(), fp8.ReferenceGemm()
    xq, wq = fp8._q(x, (1, 128)), fp8._q(w, (128, 128))
    dyq, dyq_t, xq_t = fp8._q(dy, (1, 128)), fp8._q(dy.t(), (1, 128)), fp8._q(x.t(), (1, 128))
    for name, args in [("fprop", (xq, wq)), ("dgrad", (dyq, wq)), ("wgrad", (dyq_t, xq_t))]:
        got = getattr(fast, name)(*args, torch.float32)
        want = getattr(ref, name)(*args, torch.float32)
        assert _rel(got, want) < 5e-3, name
    outs = []
    for backend in ("scaled_mm", "reference"):
        lin = FP8Linear(K, N, device="cuda", backend=backend)
        assert lin.gemm.name == backend
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.zero_()
        xr = x.clone().requires_grad_()
        y = lin(xr)
        y.backward(dy)
        outs.append((y, xr.grad, lin.weight.grad))
    for got, want in zip(*outs):
        assert _rel(got, want) < 1e-2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_compiled_quantisation_is_bitwise_equal():
    """The fast path's quantiser (torch.compile → Triton on a GPU) writes the same FP8 bytes and scales as eager."""
    g = torch.Generator(device="cuda").manual_seed(0)
    for shape, block in [((4096, 7168), (1, 128)), ((300, 576), (1, 128)), ((576, 7168), (128, 128))]:
        x = torch.randn(*shape, device="cuda", generator=g, dtype=torch.bfloat16) * 3
        for t in (x, x.t()):
            fast, ref = fp8.compiled_quantize(t, block), fp8._q(t, block)
            assert torch.equal(fast.data.view(torch.uint8), ref.data.view(torch.uint8)), (t.shape, block)
            assert torch.equal(fast.scale, ref.scale)


def _load_benchmark():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fp8.py"
    spec = importlib.util.spec_from_file_location("bench_fp8", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_benchmark_skips_cleanly_without_cuda_and_smoke_runs(capsys, monkeypatch):
    import json

    bench = _load_benchmark()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main([]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["skipped"] is True and line["bench"] == "fp8"
    assert bench.main(["--smoke", "--skip-train-step", "--loss-curve", "2"]) == 0
    rows = [json.loads(r) for r in capsys.readouterr().out.strip().splitlines()]
    assert [r["kind"] for r in rows] == ["linear_fwd_bwd", "experts_fwd_bwd", "loss_curve"]
    assert rows[1]["speedup"] > 0 and rows[1]["experts"] == 4
    assert rows[2]["finite"] and rows[2]["max_rel_loss_diff"] < 0.05


def test_empty_batch_and_backend_selection_on_cpu():
    lin = FP8Linear(256, 128, backend="scaled_mm")  # strict request applies only once on CUDA
    assert lin.gemm.name == "reference" and lin.to(torch.float64).gemm.name == "reference"
    x = torch.randn(0, 256, dtype=torch.float64, requires_grad=True)
    y = lin(x)
    y.sum().backward()
    assert y.shape == (0, 128) and x.grad.shape == (0, 256) and (lin.weight.grad == 0).all()
    with pytest.raises(ValueError, match="backend must be"):
        FP8Linear(256, 128, backend="fast")


def test_compiled_quantiser_asks_inductor_for_eager_division(monkeypatch):
    """Triton lowers an fp32 ``/`` to the approximate div.full.f32, so on a GPU the compiled quantiser matches eager's
    scales and bytes only with inductor's eager division rounding; the option must exist under this torch's name
    (it was renamed once) and be accepted by inductor's config."""
    import torch._inductor.config as cfg

    opts = fp8._exact_division_options()
    assert opts and all(opts.values())
    with cfg.patch(opts):
        pass
    seen = {}

    def fake_compile(fn, **kw):  # what compiled_quantize hands to torch.compile
        seen.update(kw)
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(fp8, "_COMPILED_QUANTIZE", None)
    fp8.compiled_quantize(torch.randn(4, 128), (1, 128))
    assert seen.get("options") == opts and seen.get("dynamic") is True


@needs_cxx
def test_compiled_quantisation_is_bitwise_equal_and_falls_back(monkeypatch, caplog):
    """The fast path quantises through torch.compile (inductor; here its CPU backend): same FP8 bytes and scales as
    the eager quantiser, for both tile layouts, padded and unpadded shapes, bf16 and transposed (non-contiguous)
    inputs; a failing compile warns and quantises eagerly."""
    monkeypatch.setattr(fp8, "_COMPILED_QUANTIZE", None)
    torch.manual_seed(0)
    cases = [(torch.randn(300, 520) * 3, (1, 128)), (torch.randn(256, 384), (128, 128)),
             (torch.randn(77, 1000, dtype=torch.bfloat16), (1, 128)), (torch.randn(640, 200).t(), (1, 128))]
    for x, block in cases:
        fast, ref = fp8.compiled_quantize(x, block), fp8._q(x, block)
        assert torch.equal(fast.data.view(torch.uint8), ref.data.view(torch.uint8)), (x.shape, block)
        assert torch.equal(fast.scale, ref.scale) and fast.block == ref.block
    assert fp8._COMPILED_QUANTIZE is not fp8.quantize_blockwise  # stayed compiled

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler")

    monkeypatch.setattr(fp8, "_COMPILED_QUANTIZE", broken)
    x = torch.randn(4, 256)
    with caplog.at_level(logging.WARNING, logger="r1lab.fp8"):
        out = fp8.compiled_quantize(x, (1, 128))
    assert torch.equal(out.data.view(torch.uint8), fp8._q(x, (1, 128)).data.view(torch.uint8))
    assert fp8._COMPILED_QUANTIZE is fp8.quantize_blockwise and "quantising eagerly" in caplog.text
