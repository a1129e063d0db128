"""GPU fast path for the fine-grained FP8 GEMMs of r1lab.fp8 (DeepSeek-V3 report §3.3, "fine-grained quantization").

Idea: the three GEMMs of a linear layer (fprop, dgrad, wgrad) run on Hopper FP8 tensor cores with per-tile scales
applied inside the main loop, FP32 accumulation. We use PyTorch's own cuBLAS-backed blockwise `scaled_mm`:
`torch.nn.functional.scaled_mm(a, b, scale_a, ScalingType.BlockWise1x128, scale_b, ScalingType.BlockWise128x128)`.

Why this and not a Triton kernel: the installed torch (2.13) ships blockwise 1x128 / 128x128 scaling in
`torch.nn.functional.scaled_mm` (checked in torch/_meta_registrations.py `_check_scaled_mm_sizes_v2`, torch's
`sample_inputs_scaled_mm_v2` and pytorch test/test_scaled_matmul_cuda.py `test_scaled_mm_block_wise_numerics`).
It needs SM90 exactly (SM100 raises "DeepSeek scaling only supported in CUDA for SM90") and CUDA >= 12.9 (cuBLASLt
blockwise scaling). Elsewhere r1lab.fp8 uses its reference path (dequantise -> FP32 matmul), never a wrong result.

Layout contract (verified against the meta registration; tests/test_fp8_quant.py checks it with FakeTensorMode):
- mat_a [M, K] row-major, mat_b [K, N] column-major, both float8_e4m3fn; scales are FP32 *multipliers*
  (dequantised = fp8 * scale), the convention r1lab.fp8 stores.
- BlockWise1x128 scale for an operand with R rows: shape [R, K/128], stride [1, R] ("outer-dim-major").
- BlockWise128x128 scale for mat_b: shape [L4, N/128], stride [1, L4], L4 = round_up(K/128, 4) (cuBLAS pads the
  K-block count to a multiple of 4; padding entries are never read as data, we fill them with 1.0).
- All operands reaching this module are already zero-padded to multiples of 128 in every dimension by r1lab.fp8.

The three GEMMs of y = x·Wᵀ (M tokens, K in-features, N out-features):
- fprop  y[M,N]  = xq[M,K] (1x128) · Wq[N,K]ᵀ (128x128)
- dgrad  dx[M,K] = dyq[M,N] (1x128 along N) · Wq[N,K] (128x128; same fp8 blocks, transposed copy)
- wgrad  dW[N,K] = dyᵀ[N,M] (1x128 along M) · x[M,K] (x given as xᵀ[K,M] in 1x128 tiles along M: 128x1 token tiles)
Legend: M tokens, K in-features, N out-features, b suffix = number of 128-blocks along that axis, L4 = Kb rounded to 4.
"""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger(__name__)

BLOCK = 128
_STATUS_CACHE: dict[str, tuple[bool, str]] = {}


def _round_up(n: int, m: int) -> int:
    return (n + m - 1) // m * m


def _api_available() -> bool:
    F = torch.nn.functional
    st = getattr(F, "ScalingType", None)
    return hasattr(F, "scaled_mm") and st is not None and hasattr(st, "BlockWise1x128") and hasattr(
        st, "BlockWise128x128"
    )


def as_contiguous(t: torch.Tensor) -> torch.Tensor:
    """t.contiguous(), spelled as a clone so that it also runs under FakeTensorMode with fake CUDA tensors."""
    return t if t.is_contiguous() else t.clone(memory_format=torch.contiguous_format)


def _outer_major(scale_RKb: torch.Tensor) -> torch.Tensor:
    """1x128 scale [R, Kb] as cuBLAS wants it: same shape, stride [1, R]."""
    return as_contiguous(scale_RKb.float().t()).t()


def _block_scale_for_b(scale_OutbKb: torch.Tensor) -> torch.Tensor:
    """128x128 scale indexed [out-block, contraction-block] -> [L4, out-blocks] with stride [1, L4]."""
    kb = scale_OutbKb.shape[1]
    padded = torch.nn.functional.pad(as_contiguous(scale_OutbKb.float()), (0, _round_up(kb, 4) - kb), value=1.0)
    return as_contiguous(padded).t()


def _check_padded(name: str, t: torch.Tensor) -> None:
    if t.dim() != 2 or t.shape[0] % BLOCK or t.shape[1] % BLOCK or t.dtype != torch.float8_e4m3fn:
        raise ValueError(
            f"fp8_kernels: {name} must be a 2-D float8_e4m3fn tensor padded to multiples of {BLOCK}, "
            f"got shape {tuple(t.shape)} dtype {t.dtype}"
        )


def _mm(a, sa, rec_a, b, sb, rec_b, out_dtype: torch.dtype) -> torch.Tensor:
    F = torch.nn.functional
    return F.scaled_mm(
        a, b, sa, rec_a, sb, rec_b, output_dtype=out_dtype, use_fast_accum=False
    )


def fprop(x_MK: torch.Tensor, sx_MKb: torch.Tensor, w_NK: torch.Tensor, sw_NbKb: torch.Tensor,
          out_dtype: torch.dtype) -> torch.Tensor:
    """y[M,N] = x·Wᵀ with x in 1x128 tiles and W in 128x128 blocks (all padded to 128)."""
    _check_padded("x", x_MK)
    _check_padded("w", w_NK)
    st = torch.nn.functional.ScalingType
    return _mm(x_MK, _outer_major(sx_MKb), st.BlockWise1x128,
               w_NK.t(), _block_scale_for_b(sw_NbKb), st.BlockWise128x128, out_dtype)


def dgrad(dy_MN: torch.Tensor, sdy_MNb: torch.Tensor, w_NK: torch.Tensor, sw_NbKb: torch.Tensor,
          out_dtype: torch.dtype) -> torch.Tensor:
    """dx[M,K] = dy·W: contraction over N. W's fp8 blocks are reused transposed (128x128 blocks are symmetric)."""
    _check_padded("dy", dy_MN)
    _check_padded("w", w_NK)
    st = torch.nn.functional.ScalingType
    w_t_KN = as_contiguous(w_NK.t())  # row-major [K, N]; .t() is the column-major [N, K] mat_b
    return _mm(dy_MN, _outer_major(sdy_MNb), st.BlockWise1x128,
               w_t_KN.t(), _block_scale_for_b(sw_NbKb.t()), st.BlockWise128x128, out_dtype)


def wgrad(dy_t_NM: torch.Tensor, sdy_t_NMb: torch.Tensor, x_t_KM: torch.Tensor, sx_t_KMb: torch.Tensor,
          out_dtype: torch.dtype) -> torch.Tensor:
    """dW[N,K] = dyᵀ·x: contraction over tokens M; both operands in 1x128 tiles along M (128x1 token tiles)."""
    _check_padded("dy_t", dy_t_NM)
    _check_padded("x_t", x_t_KM)
    st = torch.nn.functional.ScalingType
    return _mm(dy_t_NM, _outer_major(sdy_t_NMb), st.BlockWise1x128,
               x_t_KM.t(), _outer_major(sx_t_KMb), st.BlockWise1x128, out_dtype)


def _probe(device: torch.device) -> tuple[bool, str]:
    """Run one small blockwise GEMM and compare it with dequantise -> FP32 matmul."""
    from r1lab.fp8 import dequantize_blockwise, quantize_blockwise  # late import: r1lab.fp8 imports us

    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(256, 384, generator=g).to(device)
    w = torch.randn(256, 384, generator=g).to(device)
    xq, sx = quantize_blockwise(x, (1, BLOCK))
    wq, sw = quantize_blockwise(w, (BLOCK, BLOCK))
    y = fprop(xq, sx, wq, sw, torch.float32)
    ref = dequantize_blockwise(xq, sx, (1, BLOCK)) @ dequantize_blockwise(wq, sw, (BLOCK, BLOCK)).t()
    err = ((y - ref).norm() / ref.norm()).item()
    if not math.isfinite(err) or err > 1e-2:  # a layout bug gives O(1) errors
        return False, f"probe GEMM disagrees with the reference (relative error {err:.2e})"
    return True, "ok"


def blockwise_fp8_status(device: torch.device | str) -> tuple[bool, str]:
    """(usable, reason) for the blockwise scaled_mm fast path on `device`; probed once per device and cached."""
    device = torch.device(device)
    if device.type != "cuda":
        return False, f"device {device} is not CUDA"
    if not torch.cuda.is_available():
        return False, "CUDA is not available"
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = str(device)
    if key in _STATUS_CACHE:
        return _STATUS_CACHE[key]
    status: tuple[bool, str]
    cap = torch.cuda.get_device_capability(device)
    cuda_ver = tuple(int(p) for p in (torch.version.cuda or "0.0").split(".")[:2])
    if torch.version.hip is not None:
        status = (False, "ROCm build: blockwise 1x128/128x128 scaled_mm is CUDA-only")
    elif cap[0] != 9:
        status = (False, f"capability {cap}: torch's blockwise scaled_mm needs SM90 (Hopper)")
    elif cuda_ver < (12, 9):
        status = (False, f"CUDA {torch.version.cuda}: cuBLASLt blockwise scaling needs >= 12.9")
    elif not _api_available():
        status = (False, f"torch {torch.__version__} lacks F.scaled_mm with ScalingType.BlockWise1x128")
    else:
        try:
            with torch.no_grad(), torch.autocast("cuda", enabled=False):
                status = _probe(device)
        except Exception as exc:  # noqa: BLE001 - any failure means: do not use the fast path
            status = (False, f"probe failed: {type(exc).__name__}: {str(exc)[:200]}")
    _STATUS_CACHE[key] = status
    log.info("fp8 fast path on %s: %s (%s)", key, "enabled" if status[0] else "disabled", status[1])
    return status
