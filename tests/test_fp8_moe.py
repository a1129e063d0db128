"""FP8 routed experts (r1lab.fp8_moe): per-expert FP8 GEMMs equal FP8Linear per expert, stay close to high precision,
convert_to_fp8 swaps DeepSeekMoE's expert stacks, and a small MoE model trains the same in FP8 as in FP32.

Legend: X rows sorted by expert, E experts, N out-features, K in-features.
"""

import copy
import logging

import pytest
import torch

from r1lab import fp8
from r1lab.fp8 import FP8Linear, convert_to_fp8
from r1lab.fp8_moe import FP8Experts, fp8_grouped_linear
from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM
from r1lab.model.moe import Experts


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def _case(counts=(130, 0, 7, 300), K=256, N=384, seed=0, device="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(sum(counts), K, generator=g).to(device=device, dtype=dtype)
    w = (torch.randn(len(counts), N, K, generator=g) / K**0.5).to(device)
    dy = torch.randn(sum(counts), N, generator=g).to(device=device, dtype=dtype)
    return x, w, dy


def test_grouped_equals_fp8_linear_per_expert_forward_and_backward():
    """Same tilings per expert segment as FP8Linear on that segment: outputs and both gradients agree to 1e-5;
    the expert that got no token has a zero weight gradient."""
    counts = (130, 0, 7, 300)
    x, w, dy = _case(counts)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = fp8_grouped_linear(xg, wg, counts, fp8.ReferenceGemm())
    y.backward(dy)
    ys, dxs, dws, start = [], [], [], 0
    for j, m in enumerate(counts):
        lin = FP8Linear(w.shape[2], w.shape[1], bias=False, backend="reference")
        with torch.no_grad():
            lin.weight.copy_(w[j])
        xs = x[start:start + m].clone().requires_grad_()
        if m:
            yj = lin(xs)
            yj.backward(dy[start:start + m])
            ys.append(yj), dxs.append(xs.grad), dws.append(lin.weight.grad)
        else:
            dws.append(torch.zeros_like(w[j]))
        start += m
    assert (y - torch.cat(ys)).abs().max() < 1e-5
    assert (xg.grad - torch.cat(dxs)).abs().max() < 1e-5
    assert (wg.grad - torch.stack(dws)).abs().max() < 1e-5
    assert wg.grad[1].abs().max() == 0


def test_grouped_close_to_high_precision_and_validates_shapes():
    counts = (64, 200, 1)
    x, w, dy = _case(counts, K=384, N=256)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = fp8_grouped_linear(xg, wg, counts, fp8.ReferenceGemm())
    y.backward(dy)
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    segs = torch.split(xr, list(counts))
    ref = torch.cat([s @ wr[j].t() for j, s in enumerate(segs)])
    ref.backward(dy)
    # E4M3 has 3 mantissa bits: ~3% Frobenius error per GEMM (as FP8Linear; see test_fp8_linear)
    assert _rel(y, ref) < 0.05 and _rel(xg.grad, xr.grad) < 0.05 and _rel(wg.grad, wr.grad) < 0.05
    with pytest.raises(ValueError, match="do not fit"):
        fp8_grouped_linear(x, w, (1, 2, 3), fp8.ReferenceGemm())
    empty = fp8_grouped_linear(x[:0], w, (0, 0, 0), fp8.ReferenceGemm())
    assert empty.shape == (0, 256)


def _moe_config(**kw) -> DeepSeekV3Config:
    base = {"hidden_size": 128, "moe_intermediate_size": 128, "intermediate_size": 256, "n_routed_experts": 8,
            "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "num_hidden_layers": 2,
            "first_k_dense_replace": 1}
    return DeepSeekV3Config.from_preset("tiny").replace(**{**base, **kw})


def test_fp8_experts_close_to_bf16_experts_and_share_parameters():
    torch.manual_seed(0)
    experts = Experts(_moe_config())
    torch.nn.init.normal_(experts.gate_up_proj, std=128**-0.5)
    torch.nn.init.normal_(experts.down_proj, std=128**-0.5)
    f8 = FP8Experts.from_experts(experts, backend="reference")
    assert f8.gate_up_proj is experts.gate_up_proj and f8.down_proj is experts.down_proj
    assert f8.state_dict().keys() == experts.state_dict().keys()
    x = torch.randn(90, 128)
    idx = torch.stack([torch.randperm(8)[:2] for _ in range(90)])
    idx[:, 0] = torch.where(idx[:, 0] == 5, 6, idx[:, 0])  # make expert 5 rarer, maybe empty
    wts = torch.rand(90, 2)
    outs = []
    for mod in (experts, f8):
        mod.zero_grad()
        xr = x.clone().requires_grad_()
        y = mod(xr, wts, idx)
        y.square().sum().backward()
        outs.append((y.detach(), xr.grad, mod.gate_up_proj.grad.clone(), mod.down_proj.grad.clone()))
    for got, want in zip(outs[1], outs[0]):  # two chained FP8 GEMMs (gate+up, down): ~3% each, measured 3.5-6.5%
        assert _rel(got, want) < 0.1
    assert "fp8_gemm=reference" in repr(f8)


def test_convert_swaps_expert_stacks_and_skips_small_ones(caplog):
    torch.manual_seed(0)
    model = DeepSeekV3ForCausalLM(_moe_config())
    keys = set(model.state_dict())
    names = convert_to_fp8(model, backend="reference")
    assert "model.layers.1.mlp.experts" in names
    assert isinstance(model.model.layers[1].mlp.experts, FP8Experts)
    assert set(model.state_dict()) == keys
    ids = torch.randint(0, 256, (2, 40))
    out = model(ids, labels=ids)
    out.loss.backward()
    assert model.model.layers[1].mlp.experts.gate_up_proj.grad.abs().sum() > 0
    small = DeepSeekV3ForCausalLM(DeepSeekV3Config.from_preset("tiny"))
    with caplog.at_level(logging.INFO, logger="r1lab.fp8"):
        names = convert_to_fp8(small, backend="reference")
    assert not any(n.endswith("experts") for n in names)
    assert "hidden/expert width 32/16 < 128" in caplog.text


def test_moe_model_trains_with_fp8_experts_and_tracks_fp32():
    """Only the expert stacks in FP8 (include pattern): losses fall and stay within 2% of the FP32 run (measured:
    ≤ 1.1% over these 8 steps)."""
    torch.manual_seed(0)
    ref = DeepSeekV3ForCausalLM(_moe_config())
    f8 = copy.deepcopy(ref)
    assert convert_to_fp8(f8, include=["*.experts"], backend="reference") == ["model.layers.1.mlp.experts",
                                                                           "model.mtp.0.mlp.experts"]
    g = torch.Generator().manual_seed(1)
    batch = torch.randint(0, 256, (4, 32), generator=g)
    curves = []
    for model in (f8, ref):
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        losses = []
        for _ in range(8):  # before memorising the batch, where small losses make relative gaps meaningless
            loss = model(batch, labels=batch).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        curves.append(losses)
    assert curves[0][-1] < 0.8 * curves[0][0]
    assert max(abs(a - b) / b for a, b in zip(*curves)) < 0.02, curves


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_fp8_experts_fast_path_matches_reference():
    ok, reason = fp8.fp8_kernels.blockwise_fp8_status("cuda")
    if not ok:
        pytest.skip(reason)
    counts = (300, 0, 17, 1000)
    x, w, dy = _case(counts, K=512, N=768, device="cuda", dtype=torch.bfloat16)
    outs = []
    for gemm in (fp8.ScaledMMGemm(), fp8.ReferenceGemm()):
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        y = fp8_grouped_linear(xg, wg, counts, gemm)
        y.backward(dy)
        outs.append((y, xg.grad, wg.grad))
    for got, want in zip(*outs):
        assert _rel(got, want) < 1e-2
    experts = Experts(_moe_config()).cuda()
    assert FP8Experts.from_experts(experts).gemm.name == "scaled_mm"


def test_pretrain_with_fp8_converts_experts_and_saves_plain_weights(tmp_path, capsys):
    """`r1lab pretrain --fp8` on a model whose dims allow FP8: linears and expert stacks converted, losses finite,
    and the saved checkpoint has exactly the BF16 model's tensor names (it loads without FP8)."""
    from train_helpers import make_env, tiny_config

    from r1lab.train.pretrain import run_pretrain

    env = make_env(tmp_path / "env")
    overrides = {"hidden_size": 128, "moe_intermediate_size": 128, "intermediate_size": 256, "q_lora_rank": 128,
                 "kv_lora_rank": 128}
    art = run_pretrain(tiny_config(env, tmp_path / "run", steps=3, fp8=True, model_overrides=overrides))
    assert torch.isfinite(torch.tensor(art["final_loss"]))
    model = DeepSeekV3ForCausalLM.from_pretrained(art["model_dir"])
    names = convert_to_fp8(DeepSeekV3ForCausalLM(model.config), backend="reference")
    assert "model.layers.1.mlp.experts" in names
    assert f"fp8: converted {len(names)} modules" in capsys.readouterr().out
    assert type(model.model.layers[1].mlp.experts) is Experts
    assert set(model.state_dict()) == set(DeepSeekV3ForCausalLM(model.config).state_dict())


def test_fp8_experts_inside_a_compiled_model_run_eagerly_and_agree():
    """torch.compile (eager backend, CPU) of FP8Experts, whose per-expert loop is excluded from tracing: routings
    with different token counts run, and outputs equal the uncompiled module."""
    torch.manual_seed(0)
    experts = Experts(_moe_config())
    torch.nn.init.normal_(experts.gate_up_proj, std=128**-0.5)
    torch.nn.init.normal_(experts.down_proj, std=128**-0.5)
    f8 = FP8Experts.from_experts(experts, backend="reference")
    compiled = torch.compile(f8, backend="eager")
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(50, 128, generator=g)
        idx = torch.randint(0, 8, (50, 2), generator=g)
        w = torch.rand(50, 2, generator=g)
        assert (compiled(x, w, idx) - f8(x, w, idx)).abs().max() < 1e-6
