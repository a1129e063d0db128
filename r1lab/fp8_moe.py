"""FP8 routed experts: the grouped expert GEMMs of DeepSeekMoE with the fine-grained E4M3 scaling of ``r1lab.fp8``.

V3 runs the expert GEMMs (most of its FLOPs) in FP8 (report §3.3). ``FP8Experts`` swaps one step of
``r1lab.model.moe.Experts``: after the tokens are sorted by expert, each projection (gate+up, then down) is one
``fp8_grouped_linear`` over the sorted rows, with the same tilings as ``FP8Linear``, applied per expert segment:
- fprop  y_j  = x_j·W_jᵀ : x_j in 1x128 tiles (per token), W_j in 128x128 blocks (one grid per expert);
- dgrad  dx_j = dy_j·W_j : dy_j in 1x128 tiles, the same weight blocks;
- wgrad  dW_j = dy_jᵀ·x_j: 128x1 tiles along the expert's own tokens (a tile never mixes two experts' tokens).
Each expert's segment is padded to a multiple of 128 rows for its GEMM, and the GEMM backend (reference or cuBLAS
blockwise ``scaled_mm``) is the one ``r1lab.fp8.select_gemm`` picks, so the CPU reference path gives the numerics
and CI tests them. Experts that receive no token run no GEMM and get a zero weight gradient (as the grouped GEMM).

Deliberate difference from a fused kernel: one GEMM per expert and projection (a host sync reads the token counts),
not a grouped FP8 kernel — torch has no blockwise-scaled grouped GEMM yet; with 64+ experts this launches many small
GEMMs, so it is about numerics and memory first, speed second. Parameters and ``state_dict`` are those of
``Experts`` (shared Parameter objects), so checkpoints and optimizer state do not change.

Legend: X rows sorted by expert (N tokens · K experts per token), E experts, N out-features, K in-features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from r1lab.fp8 import (
    BLOCK,
    Gemm,
    QTensor,
    ReferenceGemm,  # noqa: F401 - used by the doctest of fp8_grouped_linear
    _crop,
    _output_dtype,
    gemm_for_weights,
)
from r1lab.model.moe import Experts


class _FP8GroupedLinearFunction(torch.autograd.Function):
    """y = x_j·W_jᵀ for each expert j over its contiguous rows of x; all GEMMs on E4M3 operands."""

    @staticmethod
    def forward(ctx, x_XK, w_ENK, counts: tuple[int, ...], gemm: Gemm):  # type: ignore[override]
        E, N, K = w_ENK.shape
        if len(counts) != E or sum(counts) != x_XK.shape[0] or x_XK.shape[-1] != K:
            raise ValueError(f"fp8_grouped_linear: x {tuple(x_XK.shape)}, weights {tuple(w_ENK.shape)} and "
                             f"{len(counts)} counts summing to {sum(counts)} do not fit")
        out_dtype = _output_dtype(x_XK)
        need_w = ctx.needs_input_grad[1]
        saved: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        with torch.autocast(x_XK.device.type, enabled=False):
            start = 0
            for j, m in enumerate(counts):
                if m == 0:
                    continue
                x_MK = x_XK.detach().narrow(0, start, m)
                start += m
                wq = gemm.quantize(w_ENK[j].detach(), (BLOCK, BLOCK))
                ys.append(_crop(gemm.fprop(gemm.quantize(x_MK, (1, BLOCK)), wq, out_dtype), m, N))
                xq_t = gemm.quantize(x_MK.t(), (1, BLOCK)) if need_w else QTensor(x_XK.new_empty(0),
                                                                                   x_XK.new_empty(0), (1, 1))
                saved += [wq.data, wq.scale, xq_t.data, xq_t.scale]
        ctx.save_for_backward(*saved)
        ctx.counts, ctx.gemm, ctx.x_dtype, ctx.w_meta = counts, gemm, x_XK.dtype, (w_ENK.shape, w_ENK.dtype)
        if not ys:
            return x_XK.new_zeros(0, N, dtype=out_dtype)
        return torch.cat(ys, dim=0)

    @staticmethod
    def backward(ctx, dy_XN):  # type: ignore[override]
        (E, N, K), w_dtype = ctx.w_meta
        gemm: Gemm = ctx.gemm
        saved = iter(ctx.saved_tensors)
        need_x, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        dxs: list[torch.Tensor] = []
        dw_ENK = dy_XN.new_zeros(E, N, K, dtype=w_dtype) if need_w else None
        with torch.autocast(dy_XN.device.type, enabled=False):
            start = 0
            for j, m in enumerate(ctx.counts):
                if m == 0:
                    continue
                wd, ws, xd, xs = next(saved), next(saved), next(saved), next(saved)
                dy_MN = dy_XN.narrow(0, start, m)
                start += m
                if need_x:
                    dyq = gemm.quantize(dy_MN, (1, BLOCK))
                    dxs.append(_crop(gemm.dgrad(dyq, QTensor(wd, ws, (BLOCK, BLOCK)), ctx.x_dtype), m, K))
                if need_w:
                    dyq_t = gemm.quantize(dy_MN.t(), (1, BLOCK))
                    dw_ENK[j] = _crop(gemm.wgrad(dyq_t, QTensor(xd, xs, (1, BLOCK)), w_dtype), N, K)
        dx = None
        if need_x:
            dx = torch.cat(dxs, dim=0) if dxs else dy_XN.new_zeros(0, K, dtype=ctx.x_dtype)
        return dx, dw_ENK, None, None


def fp8_grouped_linear(x_XK: torch.Tensor, w_ENK: torch.Tensor, counts: tuple[int, ...], gemm: Gemm) -> torch.Tensor:
    """Rows of ``x_XK`` sorted by expert (``counts[j]`` rows for expert j) times their expert's ``w_ENK[j]``ᵀ, in FP8.

    >>> x, w = torch.randn(5, 128), torch.randn(2, 128, 128) / 11
    >>> y = fp8_grouped_linear(x, w, (2, 3), ReferenceGemm())
    >>> ref = torch.cat([x[:2] @ w[0].t(), x[2:] @ w[1].t()])
    >>> bool((y - ref).norm() / ref.norm() < 0.05)
    True
    """
    return _FP8GroupedLinearFunction.apply(x_XK, w_ENK, tuple(int(c) for c in counts), gemm)


def experts_skip_reason(experts: Experts, min_features: int = BLOCK) -> str | None:
    """Why a routed-expert module should stay in high precision (None if its GEMMs can run in FP8)."""
    d, i = experts.down_proj.shape[1], experts.inner
    if d < min_features or i < min_features:
        return f"hidden/expert width {d}/{i} < {min_features}: FP8 GEMM not worth it"
    if d % 16 or i % 16:
        return f"hidden/expert width {d}/{i} not multiples of 16 (FP8 tensor-core alignment)"
    return None


class FP8Experts(Experts):
    """``Experts`` whose gate+up and down GEMMs run in FP8 (always the sorted path; the loop path stays the BF16
    reference). Built by ``from_experts`` sharing the original Parameters; the GEMM backend is re-picked whenever the
    module moves device, as ``FP8Linear`` does."""

    @classmethod
    def from_experts(cls, experts: Experts, backend: str = "auto") -> FP8Experts:
        new = cls.__new__(cls)
        torch.nn.Module.__init__(new)
        new.n_experts, new.inner, new.impl = experts.n_experts, experts.inner, experts.impl
        new.gate_up_proj, new.down_proj = experts.gate_up_proj, experts.down_proj
        new.backend = backend
        new.train(experts.training)
        new._select_gemm()
        return new

    def _select_gemm(self) -> None:
        self.gemm: Gemm = gemm_for_weights(self.gate_up_proj.device, self.backend)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self._select_gemm()
        return out

    def forward(self, x_ND: torch.Tensor, weights_NK: torch.Tensor, indices_NK: torch.Tensor) -> torch.Tensor:
        return self.forward_grouped(x_ND, weights_NK, indices_NK)

    @torch.compiler.disable
    def ffn_sorted(self, x_sorted: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        """One FP8 GEMM per expert with tokens. A Python loop over data-dependent counts: inside a compiled model it
        runs eagerly (a graph break) rather than being recompiled for every new set of counts."""
        counts = tuple(counts_E.tolist())  # host sync
        gate, up = fp8_grouped_linear(x_sorted, self.gate_up_proj, counts, self.gemm).chunk(2, dim=-1)
        return fp8_grouped_linear(F.silu(gate) * up, self.down_proj, counts, self.gemm)

    def extra_repr(self) -> str:
        return f"experts={self.n_experts}, fp8_gemm={self.gemm.name}"
