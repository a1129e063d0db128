"""Language-model losses: the shifted next-token / MTP cross-entropy of packed rows, as a reference on logits and as
a fused head + cross-entropy that never materialises the [B·T, V] logits.

``shifted_cross_entropy`` (the reference): F.cross_entropy over logits the caller computed with the output head.
``shifted_linear_cross_entropy`` (the fast path, CPU training): the same loss from the head's *input* (hidden states)
and its weight, through ``LinearCrossEntropy``: rows are processed in chunks of ~4 MiB of logits; each chunk's
logits are computed, reduced to log-sum-exp and the picked logit, then turned in place into the gradient
(softmax − one-hot) / n, which is multiplied into the gradients of the hidden states and of the head weight right
away, while the chunk is still in the cache. The backward only scales those stored gradients by the incoming one.
On the 2-core CPU the head + loss of a cpu-demo step (4,096 tokens, vocab 2,048) runs 1.3-1.7× faster and the
whole training step ~1.15× (``benchmarks/cpu_cross_entropy.py``, docs/benchmarks.md): the unfused path writes the
logits, their log-softmax, a zero-filled gradient and the log-softmax backward, each 32 MiB — more than this CPU's
L3 — and reads them back. The model uses it on the CPU when a
caller asks for losses without logits (``DeepSeekV3ForCausalLM.forward(return_logits=False)``, pretraining and SFT);
on CUDA, under CPU autocast and under torch.compile the reference path stays (the fused one is not measured on a GPU,
autocast would need its own casts, and its Python chunk loop would break a compiled graph).

The gradients are computed in the forward only when grad mode is on and an input requires them, so held-out
evaluations pay for the forward alone.

Legend: B batch, T tokens, D hidden, V vocabulary, N = B·T rows, C rows of one chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
CHUNK_BYTES = 4 << 20  # logits per chunk: 4 MiB fits this CPU's L3 share with room for the operands


def shifted_targets(labels_BT: torch.Tensor, segments_BT: torch.Tensor | None, shift: int) -> torch.Tensor:
    """Targets aligned with positions: labels[t + shift] at t when both ends lie in the same non-padding segment,
    else -100 (also past the end of the row).

    >>> shifted_targets(torch.tensor([[5, 6, 7, 8]]), torch.tensor([[1, 1, 2, 2]]), 1).tolist()
    [[6, -100, 8, -100]]
    """
    t = labels_BT.shape[1]
    target_BT = torch.full_like(labels_BT, IGNORE_INDEX)
    if shift >= t:
        return target_BT
    target_BT[:, : t - shift] = labels_BT[:, shift:]
    if segments_BT is not None:
        same = (segments_BT[:, shift:] == segments_BT[:, : t - shift]) & (segments_BT[:, shift:] != 0)
        target_BT[:, : t - shift][~same] = IGNORE_INDEX
    return target_BT


def shifted_cross_entropy(logits_BTV: torch.Tensor, labels_BT: torch.Tensor, segments_BT: torch.Tensor | None,
                          shift: int) -> torch.Tensor:
    """Mean CE of predicting labels[t + shift] from position t (shift 1 = next token, k + 1 for MTP depth k); a pair
    counts only if both ends lie in the same non-padding segment and the label is not -100. The reference path."""
    target_BT = shifted_targets(labels_BT, segments_BT, shift)
    if (target_BT != IGNORE_INDEX).sum() == 0:
        return logits_BTV.sum() * 0.0
    # targets aligned with every position: the logits are used whole, so neither the forward nor the backward copies
    # a [B, T - shift, V] slice of them
    return F.cross_entropy(logits_BTV.reshape(-1, logits_BTV.shape[-1]).float(), target_BT.reshape(-1),
                           ignore_index=IGNORE_INDEX)


def shifted_linear_cross_entropy(hidden_BTD: torch.Tensor, weight_VD: torch.Tensor, labels_BT: torch.Tensor,
                                 segments_BT: torch.Tensor | None, shift: int) -> torch.Tensor:
    """``shifted_cross_entropy(hidden @ weightᵀ, ...)`` without the logits (``LinearCrossEntropy``)."""
    target_BT = shifted_targets(labels_BT, segments_BT, shift)
    return linear_cross_entropy(hidden_BTD.reshape(-1, hidden_BTD.shape[-1]), weight_VD, target_BT.reshape(-1))


def linear_cross_entropy(hidden_ND: torch.Tensor, weight_VD: torch.Tensor, target_N: torch.Tensor,
                         reduction: str = "mean") -> torch.Tensor:
    """F.cross_entropy(hidden @ weightᵀ, target, ignore_index=-100, reduction=...) in chunks, fp32 (see the module
    docstring). ``reduction`` "mean" (over counted targets; 0 with a zero gradient when there are none) or "sum"."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    want_grad = torch.is_grad_enabled() and (hidden_ND.requires_grad or weight_VD.requires_grad)
    return LinearCrossEntropy.apply(hidden_ND, weight_VD, target_N, reduction == "mean", want_grad)


class LinearCrossEntropy(torch.autograd.Function):
    """Head matmul + cross-entropy with the gradients formed chunk by chunk in the forward (see the module docstring).
    Tested against ``F.cross_entropy(hidden @ weightᵀ)`` for values and both gradients (tests/test_model_loss.py)."""

    @staticmethod
    def forward(ctx, hidden_ND: torch.Tensor, weight_VD: torch.Tensor, target_N: torch.Tensor, mean: bool,
                want_grad: bool):
        h_ND, w_VD = hidden_ND.float(), weight_VD.float()
        n_rows, vocab = h_ND.shape[0], w_VD.shape[0]
        valid_N = target_N != IGNORE_INDEX
        count = int(valid_N.sum())
        scale = 1.0 / max(count, 1) if mean else 1.0
        grad_h_ND = torch.empty_like(h_ND) if want_grad else None
        grad_w_VD = torch.zeros_like(w_VD) if want_grad else None
        total = torch.zeros((), dtype=torch.float64, device=h_ND.device)
        chunk = max(64, CHUNK_BYTES // (4 * vocab))
        for start in range(0, n_rows, chunk):
            h_CD = h_ND[start:start + chunk]
            t_C = target_N[start:start + chunk]
            keep_C = valid_N[start:start + chunk]
            idx_C1 = t_C.clamp(min=0)[:, None]
            logits_CV = h_CD @ w_VD.t()
            picked_C = logits_CV.gather(1, idx_C1)[:, 0]
            # log-sum-exp in place (torch.logsumexp allocates x − max): e = exp(logits − max), lse = max + log Σe
            max_C = logits_CV.amax(dim=-1)
            e_CV = logits_CV.sub_(max_C[:, None]).exp_()
            sum_C = e_CV.sum(dim=-1)
            total += torch.where(keep_C, max_C + sum_C.log() - picked_C, 0.0).sum(dtype=torch.float64)
            if not want_grad:
                continue
            # d loss / d logits = (softmax − one-hot) × scale on counted rows, 0 elsewhere — built in place
            row_scale_C1 = (keep_C.to(h_CD.dtype) * scale)[:, None]
            g_CV = e_CV.mul_(row_scale_C1 / sum_C[:, None])
            g_CV.scatter_add_(1, idx_C1, -row_scale_C1)
            torch.mm(g_CV, w_VD, out=grad_h_ND[start:start + chunk])
            grad_w_VD.addmm_(g_CV.t(), h_CD)
        if want_grad:
            ctx.save_for_backward(grad_h_ND, grad_w_VD)
        ctx.dtypes = (hidden_ND.dtype, weight_VD.dtype)
        return (total * scale).to(torch.float32)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if not ctx.saved_tensors:
            raise RuntimeError("LinearCrossEntropy: backward through a forward that ran without gradients")
        grad_h_ND, grad_w_VD = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        grad_h = (grad_h_ND * grad_out).to(h_dtype) if ctx.needs_input_grad[0] else None
        grad_w = (grad_w_VD * grad_out).to(w_dtype) if ctx.needs_input_grad[1] else None
        return grad_h, grad_w, None, None, None
