"""FP8 mixed-precision training with fine-grained scaling (DeepSeek-V3 report §3.3) and the FP8 checkpoint format.

Idea (report §3.3.2, Fig. 7): E4M3 everywhere, with scales per small tile instead of per tensor, so an outlier only
costs precision inside its own tile:
- activations (and activation gradients) in 1x128 tiles: one scale per token per 128 channels;
- weights in 128x128 blocks;
- scale = amax / 448 (E4M3 max) with an amax floor `AMAX_EPS`, so an all-zero tile gets a tiny finite scale and
  stays exactly zero. **We store the scale as a multiplier** (dequantised = fp8 * scale), the same convention as
  DeepSeek's checkpoint `weight_scale_inv` and as torch's `scaled_mm` scale arguments; quantised = x / scale.
- Every GEMM accumulates in FP32. Master weights, optimizer state, bias, embeddings, output head, norms and the MoE
  router stay in their own dtype; weights are re-quantised on the fly every forward.

The three GEMMs of `FP8Linear` (y = x·Wᵀ, M tokens, K in-features, N out-features):
- fprop  y  = x·Wᵀ : x in 1x128 tiles (along K), W in 128x128 blocks.
- dgrad  dx = dy·W : dy in 1x128 tiles (along N), W in the same 128x128 blocks (transposed; no re-quantisation
  needed because a 128x128 block grid is symmetric under transposition).
- wgrad  dW = dyᵀ·x: both dy and x quantised in 128x1 tiles along the token dim (the contraction dim), i.e. 1x128
  tiles of dyᵀ and xᵀ — as the report does for backward activations. x is quantised for wgrad during the forward
  and only its FP8 copy (+ scales) is saved for backward (the report caches activations in FP8 too).

Two interchangeable GEMM backends, chosen once when the module is built (and again if it moves device):
- `ReferenceGemm`: dequantise -> FP32 matmul. Same quantisation, so it tells the exact numerics; runs anywhere.
- `ScaledMMGemm`: r1lab.fp8_kernels, cuBLAS blockwise `torch.nn.functional.scaled_mm` (ScalingType.BlockWise1x128
  x BlockWise128x128) on SM90 + CUDA >= 12.9. Chosen over a Triton kernel because torch 2.13 ships it (verified in
  its source and tests), so there is no kernel of ours to maintain; see fp8_kernels for the layout contract. Its
  operands are quantised by `compiled_quantize` (torch.compile of the same function: fused kernels, same bytes).

DeepSeekMoE's routed experts are not nn.Linear modules (stacked [E, N, K] weights, grouped GEMM): their FP8 version
is ``r1lab.fp8_moe.FP8Experts`` with the same tilings per expert; ``convert_to_fp8`` swaps both kinds.

Deliberate differences from the report: no promotion-interval emulation (cuBLAS/CPU accumulate fully in FP32);
dims that are not multiples of 128 are zero-padded per GEMM (the report's shapes never need it); the bias add and
bias gradient stay in high precision; the report (§3.5.2) caches x in its forward 1x128 FP8 tiles and in backward
dequantises, transposes and re-quantises it into 128x1 tiles — we quantise the original x into 128x1 tiles once
during forward and cache that (same memory, one rounding instead of two).
Legend: M tokens, K in-features, N out-features, R/C rows/cols of a generic matrix, suffix b = number of blocks.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from r1lab import fp8_kernels

log = logging.getLogger(__name__)

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max
BLOCK = 128
AMAX_EPS = 1e-12  # amax floor: scale >= AMAX_EPS / 448, never 0 or inf
DEFAULT_EXCLUDE: tuple[str, ...] = (
    "*embed*", "*lm_head", "*shared_head.head", "*norm*", "gate", "*.gate", "*router*",
)
Patterns = Sequence[str] | Callable[[str, nn.Module], bool] | None


# ----------------------------------------------------------------------------------------------- quantisation --
def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def quantize_blockwise(
    x_RC: torch.Tensor, block: tuple[int, int], *, eps: float = AMAX_EPS, pad: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """E4M3-quantise a 2-D tensor with one FP32 scale (multiplier) per `block` tile.

    Dims that are not multiples of the tile are zero-padded, the scale grid is rounded up. Returns
    (q [R, C] float8_e4m3fn, scale [ceil(R/br), ceil(C/bc)] float32); with pad=True both dims of q and of the
    grid are padded up to multiples of 128 (and of the tile) instead, as the GEMM paths want them.

    >>> q, s = quantize_blockwise(torch.tensor([[1.0, -2.0, 0.0]]), (1, 128))
    >>> s.tolist(), q.float().tolist()
    ([[0.004464285913854837]], [[224.0, -448.0, 0.0]])
    """
    if x_RC.dim() != 2:
        raise ValueError(f"quantize_blockwise: expected a 2-D tensor, got shape {tuple(x_RC.shape)}")
    br, bc = block
    R, C = x_RC.shape
    mr, mc = (BLOCK * br // _gcd(BLOCK, br), BLOCK * bc // _gcd(BLOCK, bc)) if pad else (br, bc)
    Rp, Cp = _cdiv(R, mr) * mr, _cdiv(C, mc) * mc
    x = x_RC.float()
    if (Rp, Cp) != (R, C):
        x = F.pad(x, (0, Cp - C, 0, Rp - R))
    tiles = fp8_kernels.as_contiguous(x).view(Rp // br, br, Cp // bc, bc)
    amax = tiles.abs().amax(dim=(1, 3))
    scale = amax.clamp(min=eps) / E4M3_MAX
    q = (tiles / scale.view(Rp // br, 1, Cp // bc, 1)).clamp_(-E4M3_MAX, E4M3_MAX).to(E4M3).view(Rp, Cp)
    if pad:
        return q, scale
    return q[:R, :C].contiguous(), scale[: _cdiv(R, br), : _cdiv(C, bc)].contiguous()


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def dequantize_blockwise(
    q_RC: torch.Tensor, scale: torch.Tensor, block: tuple[int, int], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Inverse of `quantize_blockwise`: q * scale broadcast over its tile (grid may be rounded up).

    >>> q, s = quantize_blockwise(torch.tensor([[1.0, -2.0, 0.0]]), (1, 128))
    >>> dequantize_blockwise(q, s, (1, 128)).tolist()
    [[1.0, -2.0, 0.0]]
    """
    br, bc = block
    R, C = q_RC.shape
    want = (_cdiv(R, br), _cdiv(C, bc))
    if q_RC.dim() != 2 or tuple(scale.shape) != want:
        raise ValueError(
            f"dequantize_blockwise: data {tuple(q_RC.shape)} with {br}x{bc} tiles needs a scale grid {want}, "
            f"got {tuple(scale.shape)}"
        )
    Rb, Cb = want
    x = q_RC.float()
    if (Rb * br, Cb * bc) != (R, C):
        x = F.pad(x, (0, Cb * bc - C, 0, Rb * br - R))
    x = (x.view(Rb, br, Cb, bc) * scale.float().view(Rb, 1, Cb, 1)).view(Rb * br, Cb * bc)
    return _crop(x, R, C).to(dtype)


def quantize_act_1x128(x_MK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token, per-128-channel E4M3 quantisation of x [..., K] -> (fp8 [..., K], scale [..., ceil(K/128)])."""
    q, s = quantize_blockwise(x_MK.reshape(-1, x_MK.shape[-1]), (1, BLOCK))
    return q.view(x_MK.shape), s.view(*x_MK.shape[:-1], s.shape[-1])


def dequantize_act_1x128(
    x_fp8_MK: torch.Tensor, scale_MKb: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Inverse of `quantize_act_1x128`."""
    K = x_fp8_MK.shape[-1]
    x = dequantize_blockwise(x_fp8_MK.reshape(-1, K), scale_MKb.reshape(-1, scale_MKb.shape[-1]), (1, BLOCK), dtype)
    return x.view(x_fp8_MK.shape)


def quantize_weight_128x128(w_NK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-128x128-block E4M3 quantisation of a weight [N, K] -> (fp8 [N, K], scale [ceil(N/128), ceil(K/128)])."""
    return quantize_blockwise(w_NK, (BLOCK, BLOCK))


def dequantize_weight_128x128(
    w_fp8_NK: torch.Tensor, scale_NbKb: torch.Tensor, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Inverse of `quantize_weight_128x128`."""
    return dequantize_blockwise(w_fp8_NK, scale_NbKb, (BLOCK, BLOCK), dtype)


# ------------------------------------------------------------------------------------------ checkpoint format --
def quantize_weight_for_checkpoint(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepSeek FP8 checkpoint encoding: (weight e4m3 [N, K], weight_scale_inv fp32 [ceil(N/128), ceil(K/128)]).

    `weight_scale_inv` is a multiplier: w ≈ w_e4m3.float() * scale_inv (block-broadcast).
    """
    if w.dim() != 2 or not w.is_floating_point():
        raise ValueError(f"quantize_weight_for_checkpoint: expected a 2-D float weight, got {tuple(w.shape)} {w.dtype}")
    return quantize_weight_128x128(w)


def dequantize_fp8_weight(
    w_e4m3: torch.Tensor, scale_inv: torch.Tensor, dtype: torch.dtype = torch.bfloat16
) -> torch.Tensor:
    """Decode a DeepSeek FP8 checkpoint weight: w_e4m3 * weight_scale_inv per 128x128 block, cast to `dtype`."""
    if w_e4m3.dtype != E4M3:
        raise ValueError(f"dequantize_fp8_weight: weight must be float8_e4m3fn, got {w_e4m3.dtype}")
    return dequantize_blockwise(w_e4m3, scale_inv, (BLOCK, BLOCK), dtype)


def dequantize_state_dict(
    sd: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.bfloat16
) -> dict[str, torch.Tensor]:
    """Replace every `X.weight` that has an `X.weight_scale_inv` partner by its dequantised value; drop the scales.

    Other entries pass through unchanged (same order). A scale without its weight, or a scaled weight that is not
    float8_e4m3fn, raises ValueError naming the key.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.endswith(".weight_scale_inv"):
            weight_key = key[: -len("_scale_inv")]
            if weight_key not in sd:
                raise ValueError(f"dequantize_state_dict: {key!r} has no matching {weight_key!r}")
            continue
        scale = sd.get(key + "_scale_inv") if key.endswith(".weight") else None
        if scale is None:
            out[key] = value
            continue
        try:
            out[key] = dequantize_fp8_weight(value, scale, dtype)
        except ValueError as exc:
            raise ValueError(f"dequantize_state_dict: key {key!r}: {exc}") from exc
    return out


def default_checkpoint_include(name: str, tensor: torch.Tensor) -> bool:
    """Which weights DeepSeek stores in FP8: 2-D float `.weight`s of linear layers, not embeddings/head/norms/gate."""
    if not name.endswith(".weight") or tensor.dim() != 2 or not tensor.is_floating_point() or tensor.dtype == E4M3:
        return False
    return not _matches(name[: -len(".weight")], DEFAULT_EXCLUDE)


def quantize_state_dict(
    sd: Mapping[str, torch.Tensor], include: Callable[[str, torch.Tensor], bool] = default_checkpoint_include
) -> dict[str, torch.Tensor]:
    """Inverse of `dequantize_state_dict`: chosen weights become e4m3 plus a `X.weight_scale_inv` fp32 entry."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if include(key, value):
            out[key], out[key + "_scale_inv"] = quantize_weight_for_checkpoint(value)
        else:
            out[key] = value
    return out


# ------------------------------------------------------------------------------------------------ GEMM paths --
class QTensor(NamedTuple):
    """A quantised operand, padded to multiples of 128 in both dims: data fp8 [Rp, Cp], scale fp32 (tile grid)."""

    data: torch.Tensor
    scale: torch.Tensor
    block: tuple[int, int]


def _crop(t: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """t[:rows, :cols] as a contiguous tensor (narrow, not indexing, so FakeTensorMode can trace it)."""
    return fp8_kernels.as_contiguous(t.narrow(0, 0, rows).narrow(1, 0, cols))


def _q(x_RC: torch.Tensor, block: tuple[int, int]) -> QTensor:
    return QTensor(*quantize_blockwise(x_RC, block, pad=True), block)


_COMPILED_QUANTIZE: Callable | None = None


def _exact_division_options() -> dict[str, bool]:
    """Inductor options under which Triton divides as eager does (IEEE ``div_rn``). Without them Triton lowers an
    fp32 ``/`` to the approximate ``div.full.f32`` (torch's own inductor config says so), and the compiled
    quantiser's scales (amax / 448) and FP8 bytes (x / scale) would differ from eager's on a GPU. Renamed across
    torch versions; CPU (C++) kernels divide exactly either way."""
    import torch._inductor.config as cfg

    if hasattr(getattr(cfg, "eager_numerics", None), "division_rounding"):
        return {"eager_numerics.division_rounding": True}
    if hasattr(cfg, "emulate_divison_rounding"):  # older torch (sic)
        return {"emulate_divison_rounding": True}
    return {}


def compiled_quantize(x_RC: torch.Tensor, block: tuple[int, int]) -> QTensor:
    """``_q`` through torch.compile (dynamic shapes): fused kernels per tile layout instead of eager's ~6 passes over
    an FP32 copy (cast, pad, abs, amax, divide, clamp/cast). On an H100 the eager FP8 linear ran at 0.16-0.29× of
    BF16 while its bare GEMM matched BF16, so the time went outside the GEMMs (docs/benchmarks.md). Bitwise equal to
    ``_q`` (tested on CPU's inductor backend). On any compile error it warns once and stays eager from then on."""
    global _COMPILED_QUANTIZE
    if torch.compiler.is_compiling():  # inside a compiled model: its own graph fuses the eager quantiser
        return _q(x_RC, block)
    if _COMPILED_QUANTIZE is None:
        _COMPILED_QUANTIZE = torch.compile(quantize_blockwise, dynamic=True, options=_exact_division_options())
    if _COMPILED_QUANTIZE is not quantize_blockwise:
        try:
            return QTensor(*_COMPILED_QUANTIZE(x_RC, block, pad=True), block)
        except Exception as err:  # noqa: BLE001 - any backend problem: eager quantisation, same numbers
            log.warning("fp8: compiled quantisation failed (%s); quantising eagerly", err)
            _COMPILED_QUANTIZE = quantize_blockwise
    return _q(x_RC, block)


class ReferenceGemm:
    """Dequantise -> FP32 matmul. Exactly the FP8 numerics up to FP32 summation order; runs on any device."""

    name = "reference"
    quantize = staticmethod(_q)

    @staticmethod
    def _deq(t: QTensor) -> torch.Tensor:
        return dequantize_blockwise(t.data, t.scale, t.block)

    def fprop(self, xq: QTensor, wq: QTensor, out_dtype: torch.dtype) -> torch.Tensor:
        return (self._deq(xq) @ self._deq(wq).t()).to(out_dtype)

    def dgrad(self, dyq: QTensor, wq: QTensor, out_dtype: torch.dtype) -> torch.Tensor:
        return (self._deq(dyq) @ self._deq(wq)).to(out_dtype)

    def wgrad(self, dyq_t: QTensor, xq_t: QTensor, out_dtype: torch.dtype) -> torch.Tensor:
        return (self._deq(dyq_t) @ self._deq(xq_t).t()).to(out_dtype)


class ScaledMMGemm:
    """cuBLAS blockwise FP8 GEMMs through torch.nn.functional.scaled_mm (see r1lab.fp8_kernels)."""

    name = "scaled_mm"
    quantize = staticmethod(compiled_quantize)

    def fprop(self, xq: QTensor, wq: QTensor, out_dtype: torch.dtype) -> torch.Tensor:
        return fp8_kernels.fprop(xq.data, xq.scale, wq.data, wq.scale, out_dtype)

    def dgrad(self, dyq: QTensor, wq: QTensor, out_dtype: torch.dtype) -> torch.Tensor:
        return fp8_kernels.dgrad(dyq.data, dyq.scale, wq.data, wq.scale, out_dtype)

    def wgrad(self, dyq_t: QTensor, xq_t: QTensor, out_dtype: torch.dtype) -> torch.Tensor:
        return fp8_kernels.wgrad(dyq_t.data, dyq_t.scale, xq_t.data, xq_t.scale, out_dtype)


Gemm = ReferenceGemm | ScaledMMGemm


def select_gemm(device: torch.device | str, backend: str = "auto") -> Gemm:
    """Pick the GEMM path once: "auto" (fast path when usable, else reference), "reference" or "scaled_mm"."""
    if backend == "reference":
        return ReferenceGemm()
    if backend not in ("auto", "scaled_mm"):
        raise ValueError(f"select_gemm: backend must be 'auto', 'reference' or 'scaled_mm', got {backend!r}")
    ok, reason = fp8_kernels.blockwise_fp8_status(device)
    if ok:
        return ScaledMMGemm()
    if backend == "scaled_mm":
        raise RuntimeError(f"select_gemm: scaled_mm FP8 path unavailable on {device}: {reason}")
    if torch.device(device).type == "cuda":
        log.warning("fp8: no blockwise FP8 GEMM on %s (%s); emulating with the FP32 reference path", device, reason)
    return ReferenceGemm()


def gemm_for_weights(device: torch.device, backend: str) -> Gemm:
    """The GEMM path for weights that live on ``device`` (modules call it when built and whenever they move): the
    reference path as a placeholder on "meta" or, for backend "scaled_mm", off CUDA; else ``select_gemm``."""
    if device.type == "meta" or (device.type != "cuda" and backend == "scaled_mm"):
        return ReferenceGemm()  # placeholder until the weights land on a CUDA device
    return select_gemm(device, backend)


def _output_dtype(x: torch.Tensor) -> torch.dtype:
    dev = x.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return x.dtype


class _FP8LinearFunction(torch.autograd.Function):
    """y = x·Wᵀ + b with all three GEMMs on E4M3 operands (see the module docstring for the tilings)."""

    @staticmethod
    def forward(ctx, x, weight, bias, gemm: Gemm):  # type: ignore[override]
        N, K = weight.shape
        if x.shape[-1] != K:
            raise ValueError(f"FP8Linear: input last dim {x.shape[-1]} != in_features {K}")
        out_dtype = _output_dtype(x)
        with torch.autocast(x.device.type, enabled=False):
            x_MK = x.reshape(-1, K)
            M = x_MK.shape[0]
            if M == 0:  # empty batch: no GEMM library call with a zero dim
                gemm = ReferenceGemm()
            wq = gemm.quantize(weight.detach(), (BLOCK, BLOCK))
            y_MN = _crop(gemm.fprop(gemm.quantize(x_MK.detach(), (1, BLOCK)), wq, out_dtype), M, N)
            if bias is not None:
                y_MN = y_MN + bias.to(out_dtype)
            need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
            empty = QTensor(x.new_empty(0), x.new_empty(0), (1, 1))
            xq_t = gemm.quantize(x_MK.detach().t(), (1, BLOCK)) if need_w else empty
            if not need_x:
                wq = empty
        ctx.save_for_backward(wq.data, wq.scale, xq_t.data, xq_t.scale)
        ctx.gemm, ctx.x_shape, ctx.x_dtype, ctx.w_dtype = gemm, x.shape, x.dtype, weight.dtype
        ctx.has_bias, ctx.b_dtype, ctx.MNK = bias is not None, getattr(bias, "dtype", None), (M, N, K)
        return y_MN.view(*x.shape[:-1], N)

    @staticmethod
    def backward(ctx, grad_y):  # type: ignore[override]
        wd, ws, xd, xs = ctx.saved_tensors
        M, N, K = ctx.MNK
        gemm: Gemm = ctx.gemm
        dx = dw = db = None
        with torch.autocast(grad_y.device.type, enabled=False):
            dy_MN = grad_y.reshape(M, N)
            if ctx.needs_input_grad[0]:
                wq = QTensor(wd, ws, (BLOCK, BLOCK))
                dx = _crop(gemm.dgrad(gemm.quantize(dy_MN, (1, BLOCK)), wq, ctx.x_dtype), M, K).view(ctx.x_shape)
            if ctx.needs_input_grad[1]:
                dyq_t = gemm.quantize(dy_MN.t(), (1, BLOCK))
                dw = _crop(gemm.wgrad(dyq_t, QTensor(xd, xs, (1, BLOCK)), ctx.w_dtype), N, K)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                db = dy_MN.float().sum(0).to(ctx.b_dtype)
        return dx, dw, db, None


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gemm: Gemm) -> torch.Tensor:
    """Functional FP8 linear: same contract as F.linear, GEMMs through `gemm`."""
    return _FP8LinearFunction.apply(x, weight, bias, gemm)


class FP8Linear(nn.Linear):
    """nn.Linear whose forward/backward GEMMs run in E4M3 with fine-grained scales; parameters are unchanged
    (same names, shapes, dtypes), so state_dict and optimizer state are exactly those of the nn.Linear.

    The GEMM path is picked when the module is built and again whenever it moves device (`.to`, `.cuda`).
    backend: "auto" (fast path if usable), "reference", or "scaled_mm" (raise if unusable once on CUDA)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None,
                 backend: str = "auto") -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.backend = backend
        self._select_gemm()

    @classmethod
    def from_linear(cls, linear: nn.Linear, backend: str = "auto") -> FP8Linear:
        """Wrap an existing nn.Linear, sharing its Parameter objects (no copy)."""
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta",
                  backend="reference")
        new.weight = linear.weight
        new.bias = linear.bias
        new.train(linear.training)
        new.backend = backend
        new._select_gemm()
        return new

    def _select_gemm(self) -> None:
        self.gemm: Gemm = gemm_for_weights(self.weight.device, self.backend)

    def _apply(self, fn, recurse=True):  # called by .to()/.cuda()/.half(): re-pick the path for the new device
        out = super()._apply(fn, recurse)
        self._select_gemm()
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FP8LinearFunction.apply(x, self.weight, self.bias, self.gemm)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, fp8_gemm={self.gemm.name}"


# ------------------------------------------------------------------------------------------- model conversion --
def _matches(name: str, patterns: Patterns, module: nn.Module | None = None) -> bool:
    if patterns is None:
        return False
    if callable(patterns):
        return bool(patterns(name, module))  # type: ignore[arg-type]
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def fp8_skip_reason(linear: nn.Linear, min_features: int = BLOCK) -> str | None:
    """Why a linear layer should stay in high precision (None if FP8 is worthwhile and supported)."""
    k, n = linear.in_features, linear.out_features
    if k < min_features or n < min_features:
        return f"in/out features {k}/{n} < {min_features}: FP8 GEMM not worth it"
    if k % 16 or n % 16:
        return f"in/out features {k}/{n} not multiples of 16 (FP8 tensor-core alignment)"
    return None


def convert_to_fp8(
    model: nn.Module,
    include: Patterns = None,
    exclude: Patterns = DEFAULT_EXCLUDE,
    backend: str = "auto",
    min_features: int = BLOCK,
) -> list[str]:
    """Swap chosen nn.Linear modules — and DeepSeekMoE's stacked routed experts (``r1lab.model.moe.Experts`` →
    ``r1lab.fp8_moe.FP8Experts``) — of any module tree for FP8 versions, in place; returns the converted names.

    include/exclude: fnmatch patterns on the qualified module name, or a callable (name, module) -> bool.
    include=None means every nn.Linear and every Experts module. Exact classes only (subclasses may carry their own
    forward). Each skipped module gets one INFO log line with the reason. The state_dict is unchanged.
    """
    from r1lab.fp8_moe import FP8Experts, experts_skip_reason
    from r1lab.model.moe import Experts

    converted: list[str] = []
    for name, module in list(model.named_modules()):
        is_experts = type(module) is Experts
        if type(module) is not nn.Linear and not is_experts:
            if isinstance(module, nn.Linear) and not isinstance(module, FP8Linear):
                log.info("fp8: skip %s: %s is an nn.Linear subclass", name, type(module).__name__)
            continue
        if include is not None and not _matches(name, include, module):
            continue
        kept = module.gate_up_proj.dtype if is_experts else module.weight.dtype
        if _matches(name, exclude, module):
            log.info("fp8: skip %s: excluded by pattern (kept in %s)", name, kept)
            continue
        reason = experts_skip_reason(module, min_features) if is_experts else fp8_skip_reason(module, min_features)
        if reason is not None:
            log.info("fp8: skip %s: %s (kept in %s)", name, reason, kept)
            continue
        if not name:
            log.info("fp8: skip the root module: convert_to_fp8 swaps children in place; wrap it in a container")
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        new = FP8Experts.from_experts(module, backend) if is_experts else FP8Linear.from_linear(module, backend)
        setattr(parent, child, new)
        converted.append(name)
    log.info("fp8: converted %d modules (linear layers and routed-expert stacks)", len(converted))
    return converted
