"""Tests for r1lab.fp8 quantisation, the FP8 checkpoint format and the fast-path layouts (CPU only).

Legend: M tokens, K in-features, N out-features, b suffix = number of 128-blocks.
"""

import math

import pytest
import torch

from r1lab import fp8, fp8_kernels
from r1lab.fp8 import (
    E4M3_MAX,
    dequantize_act_1x128,
    dequantize_fp8_weight,
    dequantize_state_dict,
    dequantize_weight_128x128,
    quantize_act_1x128,
    quantize_state_dict,
    quantize_weight_128x128,
    quantize_weight_for_checkpoint,
)


def _loop_scales(x: torch.Tensor, br: int, bc: int) -> torch.Tensor:
    """Direct per-tile loop: amax / 448 of every (br x bc) tile, grid rounded up."""
    R, C = x.shape
    out = torch.empty(math.ceil(R / br), math.ceil(C / bc))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            tile = x[i * br:(i + 1) * br, j * bc:(j + 1) * bc].float()
            out[i, j] = max(tile.abs().max().item(), fp8.AMAX_EPS) / E4M3_MAX
    return out


def _heavy_tailed(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * torch.exp(2 * torch.randn(*shape, generator=g))


@pytest.mark.parametrize("shape", [(4, 256), (3, 200), (1, 7), (5, 2, 384)])
def test_act_scales_match_loop_and_round_trip_is_tight(shape):
    x = _heavy_tailed(*shape)
    q, s = quantize_act_1x128(x)
    assert q.dtype == torch.float8_e4m3fn and q.shape == x.shape
    assert s.dtype == torch.float32 and s.shape == (*shape[:-1], math.ceil(shape[-1] / 128))
    torch.testing.assert_close(s.reshape(-1, s.shape[-1]), _loop_scales(x.reshape(-1, shape[-1]), 1, 128),
                               rtol=0, atol=0)
    back = dequantize_act_1x128(q, s)
    # E4M3 has 3 mantissa bits: relative error <= 2^-4 for normals; subnormal step is 2^-9 in scaled units.
    s_full = s.repeat_interleave(128, dim=-1)[..., : shape[-1]]
    bound = 2.0**-4 * x.abs() + 2.0**-10 * s_full + 1e-30
    assert ((back - x).abs() <= bound * (1 + 1e-6)).all()
    # and relative to the tile amax, never worse than 2^-4
    assert ((back - x).abs() <= 2.0**-4 * s_full * E4M3_MAX).all()
    # the tile max is represented exactly (maps to +-448)
    assert q.float().abs().amax() == E4M3_MAX


def test_zeros_stay_zero_and_scales_stay_finite():
    x = torch.zeros(2, 300)
    x[1, 5] = 3.0
    q, s = quantize_act_1x128(x)
    back = dequantize_act_1x128(q, s)
    assert torch.isfinite(s).all() and (s > 0).all()
    assert (back[0] == 0).all() and back[1, 5] == 3.0 and (back[1, :5] == 0).all()


@pytest.mark.parametrize("shape", [(256, 384), (200, 130), (64, 1000), (129, 129)])
def test_weight_blocks_match_loop_padding_and_round_trip(shape):
    w = _heavy_tailed(*shape, seed=1)
    q, s = quantize_weight_128x128(w)
    assert q.shape == w.shape and s.shape == (math.ceil(shape[0] / 128), math.ceil(shape[1] / 128))
    torch.testing.assert_close(s, _loop_scales(w, 128, 128), rtol=0, atol=0)
    back = dequantize_weight_128x128(q, s)
    s_full = s.repeat_interleave(128, 0).repeat_interleave(128, 1)[: shape[0], : shape[1]]
    assert ((back - w).abs() <= (2.0**-4 * w.abs() + 2.0**-10 * s_full) * (1 + 1e-6)).all()


def test_padding_equals_explicit_zero_pad():
    """Quantising a ragged tensor == quantising its zero-padded version and slicing back."""
    w = torch.randn(200, 300)
    padded = torch.zeros(256, 384)
    padded[:200, :300] = w
    q, s = quantize_weight_128x128(w)
    qp, sp = quantize_weight_128x128(padded)
    assert torch.equal(s, sp)
    assert torch.equal(q.float(), qp[:200, :300].float())
    qpad, spad = fp8.quantize_blockwise(w, (1, 128), pad=True)  # internal GEMM layout: both dims to 128
    assert qpad.shape == (256, 384) and spad.shape == (256, 3)
    assert (qpad[200:].float() == 0).all() and (qpad[:, 300:].float() == 0).all()


def test_bad_scale_grid_is_rejected():
    q, s = quantize_weight_128x128(torch.randn(256, 256))
    with pytest.raises(ValueError, match="scale grid"):
        dequantize_weight_128x128(q, s[:1])


def test_checkpoint_round_trip_and_state_dict_helpers():
    g = torch.Generator().manual_seed(3)
    sd = {
        "model.embed_tokens.weight": torch.randn(300, 200, generator=g, dtype=torch.bfloat16),
        "model.layers.0.self_attn.q_proj.weight": torch.randn(576, 300, generator=g, dtype=torch.bfloat16),
        "model.layers.0.mlp.gate.weight": torch.randn(8, 300, generator=g),
        "model.layers.0.input_layernorm.weight": torch.ones(300, dtype=torch.bfloat16),
        "lm_head.weight": torch.randn(300, 200, generator=g, dtype=torch.bfloat16),
    }
    qsd = quantize_state_dict(sd)
    key = "model.layers.0.self_attn.q_proj.weight"
    assert set(qsd) == set(sd) | {key + "_scale_inv"}
    assert qsd[key].dtype == torch.float8_e4m3fn and qsd[key + "_scale_inv"].shape == (5, 3)
    assert qsd[key + "_scale_inv"].dtype == torch.float32
    for other in sd.keys() - {key}:
        assert qsd[other] is sd[other]  # embeddings, router, norms, head untouched
    back = dequantize_state_dict(qsd)
    assert list(back) == list(sd) and back[key].dtype == torch.bfloat16
    rel = (back[key].float() - sd[key].float()).norm() / sd[key].float().norm()
    assert rel < 0.05
    # scale_inv is a multiplier: w ~= w_e4m3 * scale_inv, per 128x128 block
    w8, sinv = quantize_weight_for_checkpoint(sd[key])
    assert torch.equal(dequantize_fp8_weight(w8, sinv, torch.float32)[:128, :128], w8[:128, :128].float() * sinv[0, 0])
    assert torch.equal(dequantize_fp8_weight(w8, sinv), back[key])


def test_dequantize_state_dict_errors_name_the_key():
    _, s = quantize_weight_for_checkpoint(torch.randn(128, 128))
    with pytest.raises(ValueError, match="'a.weight_scale_inv' has no matching 'a.weight'"):
        dequantize_state_dict({"a.weight_scale_inv": s})
    with pytest.raises(ValueError, match="key 'a.weight'.*float8_e4m3fn"):
        dequantize_state_dict({"a.weight": torch.randn(128, 128), "a.weight_scale_inv": s})


def test_cpu_has_no_fast_path():
    ok, reason = fp8_kernels.blockwise_fp8_status("cpu")
    assert not ok and "not CUDA" in reason
    assert isinstance(fp8.select_gemm("cpu"), fp8.ReferenceGemm)
    with pytest.raises(RuntimeError, match="scaled_mm FP8 path unavailable"):
        fp8.select_gemm("cpu", "scaled_mm")


# --- fast path layouts, checked against torch's own scaled_mm shape/stride rules with fake CUDA tensors ---------
def _fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    if not fp8_kernels._api_available():
        pytest.skip("torch without blockwise scaled_mm")
    return FakeTensorMode()


class _Ctx:
    needs_input_grad = (True, True, True, False)

    def save_for_backward(self, *tensors):
        self.saved_tensors = tensors


@pytest.mark.parametrize("M,K,N", [(256, 640, 384), (210, 300, 576), (128, 7168 // 4, 128)])
def test_fast_path_layouts_pass_scaled_mm_checks(M, K, N):
    """fprop/dgrad/wgrad operands and scales satisfy torch's BlockWise1x128/128x128 contract (incl. L4 padding)."""
    with _fake_mode():
        x = torch.randn(3, M, K, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(N, K, device="cuda")
        b = torch.randn(N, device="cuda")
        ctx = _Ctx()
        y = fp8._FP8LinearFunction.forward(ctx, x, w, b, fp8.ScaledMMGemm())
        assert y.shape == (3, M, N) and y.dtype == torch.bfloat16 and y.device.type == "cuda"
        dx, dw, db, _ = fp8._FP8LinearFunction.backward(ctx, torch.randn_like(y))
        assert dx.shape == x.shape and dx.dtype == x.dtype
        assert dw.shape == w.shape and dw.dtype == torch.float32 and db.shape == b.shape


def test_fast_path_rejects_wrong_scale_padding():
    """The checks used above are real: a 128x128 scale without the L4 padding is refused."""
    from torch.nn.functional import ScalingType, scaled_mm

    with _fake_mode():
        a = torch.empty(256, 640, device="cuda", dtype=torch.float8_e4m3fn)
        b = torch.empty(384, 640, device="cuda", dtype=torch.float8_e4m3fn).t()
        sa = torch.empty(5, 256, device="cuda").t()
        bad_sb = torch.empty(3, 5, device="cuda").t()  # needs [8, 3] with stride [1, 8]
        with pytest.raises(RuntimeError, match="128x128"):
            scaled_mm(a, b, sa, ScalingType.BlockWise1x128, bad_sb, ScalingType.BlockWise128x128)
