"""The GRPO objective: clipped surrogate minus a k3 KL penalty, with the aggregation chosen once.

Source: DeepSeekMath (arXiv 2402.03300) eq. 3 — per token t of output i

    J_it = min(ρ_it Â_i, clip(ρ_it, 1 − ε, 1 + ε_high) Â_i) − β · KL_it,     ρ_it = π_θ / π_old,
    KL_it = π_ref/π_θ − log(π_ref/π_θ) − 1     (the unbiased, non-negative "k3" estimator; its gradient flows
                                                  through π_θ only),

and the loss is −Σ_it w_it J_it. The aggregation is a choice of token weights w (``AGGREGATIONS``), all linear, so
micro-batches and ranks can be summed exactly once the counts in ``Normalizer`` are global:

- "paper": w_it = 1 / (|o_i| · n_outputs) — mean over each output's tokens, then over outputs (DeepSeekMath);
- "token_mean": w_it = 1 / n_tokens — every token weighs the same (DAPO, arXiv 2503.14476);
- "dr_grpo": w_it = 1 / (n_all_outputs · max_completion_len) — a constant, no length normalisation (Dr. GRPO,
  arXiv 2503.20783; pair it with ``scale_by_std=False`` in the advantages).

``ε_high`` > ε is DAPO's "clip-higher"; ε_high = ε is the paper.

Legend: N outputs, T completion tokens (padded), V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Normalizer:
    """Batch-wide counts the token weights divide by (sum them over micro-batches and ranks before use).

    n_outputs: outputs with at least one token in the loss; n_all_outputs: all outputs of the batch (B·G, dropped
    ones included); n_tokens: tokens in the loss; max_len: the completion-length cap (max_new_tokens).
    """

    n_outputs: float
    n_all_outputs: float
    n_tokens: float
    max_len: int

    @staticmethod
    def of(mask_NT: torch.Tensor, max_len: int) -> Normalizer:
        """Counts of one (local) batch; ``mask_NT`` already excludes dropped outputs."""
        lengths_N = mask_NT.float().sum(dim=1)
        return Normalizer(float((lengths_N > 0).sum()), float(mask_NT.shape[0]), float(lengths_N.sum()), max_len)

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.n_outputs, self.n_all_outputs, self.n_tokens], dtype=torch.float64)

    @staticmethod
    def from_tensor(t: torch.Tensor, max_len: int) -> Normalizer:
        n_out, n_all, n_tok = (float(x) for x in t.tolist())
        return Normalizer(n_out, n_all, n_tok, max_len)


def _paper_weights(mask_NT: torch.Tensor, norm: Normalizer) -> torch.Tensor:
    lengths_N1 = mask_NT.sum(dim=1, keepdim=True).clamp(min=1.0)
    return mask_NT / (lengths_N1 * max(norm.n_outputs, 1.0))


def _token_mean_weights(mask_NT: torch.Tensor, norm: Normalizer) -> torch.Tensor:
    return mask_NT / max(norm.n_tokens, 1.0)


def _dr_grpo_weights(mask_NT: torch.Tensor, norm: Normalizer) -> torch.Tensor:
    return mask_NT / (max(norm.n_all_outputs, 1.0) * norm.max_len)


AGGREGATIONS: dict[str, Callable[[torch.Tensor, Normalizer], torch.Tensor]] = {
    "paper": _paper_weights,
    "token_mean": _token_mean_weights,
    "dr_grpo": _dr_grpo_weights,
}


def token_weights(mask_NT: torch.Tensor, norm: Normalizer, aggregation: str) -> torch.Tensor:
    """w_NT of one aggregation (see the module docstring); unknown name → ValueError listing the choices.

    >>> m = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    >>> n = Normalizer.of(m, max_len=4)
    >>> token_weights(m, n, "paper").tolist(), token_weights(m, n, "token_mean").tolist()
    ([[0.25, 0.25], [0.5, 0.0]], [[0.3333333432674408, 0.3333333432674408], [0.3333333432674408, 0.0]])
    >>> token_weights(m, n, "dr_grpo").tolist()
    [[0.125, 0.125], [0.125, 0.0]]
    """
    try:
        fn = AGGREGATIONS[aggregation]
    except KeyError:
        raise ValueError(f"unknown aggregation {aggregation!r}; choose one of {sorted(AGGREGATIONS)}") from None
    return fn(mask_NT.float(), norm)


def entropy_from_logits(logits_NTV: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of the softmax at every position.

    >>> round(float(entropy_from_logits(torch.zeros(1, 1, 4))[0, 0]), 4)  # uniform over 4 = log 4
    1.3863
    """
    logp_NTV = torch.log_softmax(logits_NTV.float(), dim=-1)
    return -(logp_NTV.exp() * logp_NTV).sum(dim=-1)


def k3_kl(logp_NT: torch.Tensor, ref_logp_NT: torch.Tensor) -> torch.Tensor:
    """π_ref/π − log(π_ref/π) − 1 per token (≥ 0, = 0 where π = π_ref).

    >>> k3_kl(torch.tensor([-1.0, -2.0]), torch.tensor([-1.0, -1.0])).tolist()  # e^1 − 1 − 1
    [0.0, 0.7182817459106445]
    """
    d_NT = (ref_logp_NT - logp_NT).clamp(-20.0, 20.0)
    return torch.exp(d_NT) - d_NT - 1.0


@dataclass
class LossOutput:
    """loss: scalar to backpropagate; sums of per-token statistics over the tokens in the loss (divide by
    ``tokens`` after summing over micro-batches / ranks)."""

    loss: torch.Tensor
    kl_sum: float
    clipped: float
    entropy_sum: float
    ratio_sum: float
    tokens: float


def grpo_loss(
    logp_NT: torch.Tensor,
    old_logp_NT: torch.Tensor,
    advantages_N: torch.Tensor,
    weights_NT: torch.Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    beta: float = 0.0,
    ref_logp_NT: torch.Tensor | None = None,
    entropy_NT: torch.Tensor | None = None,
    logits_NTV: torch.Tensor | None = None,
) -> LossOutput:
    """−Σ w · [min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A) − β·k3]; ``ref_logp_NT`` is required when β > 0.

    Entropy statistics come from ``entropy_NT`` or, if only ``logits_NTV`` (the logits that predict the
    completion tokens) is given, are computed from it.
    """
    if entropy_NT is None and logits_NTV is not None:
        with torch.no_grad():
            entropy_NT = entropy_from_logits(logits_NTV)
    if beta > 0 and ref_logp_NT is None:
        raise ValueError("beta > 0 needs ref_logp_NT (the reference model's log-probs)")
    adv_N1 = advantages_N.to(logp_NT.dtype)[:, None]
    ratio_NT = torch.exp(logp_NT - old_logp_NT)
    clipped_ratio_NT = ratio_NT.clamp(1.0 - eps_low, 1.0 + eps_high)
    surrogate_NT = torch.minimum(ratio_NT * adv_N1, clipped_ratio_NT * adv_N1)
    objective_NT = surrogate_NT
    kl_NT = None
    if beta > 0:
        kl_NT = k3_kl(logp_NT, ref_logp_NT)
        objective_NT = objective_NT - beta * kl_NT
    loss = -(weights_NT * objective_NT).sum()
    with torch.no_grad():
        in_loss_NT = weights_NT > 0
        r = ratio_NT.detach()
        clipped_NT = ((r > 1.0 + eps_high) & (adv_N1 > 0)) | ((r < 1.0 - eps_low) & (adv_N1 < 0))
        stats = dict(
            kl_sum=float(kl_NT.detach()[in_loss_NT].sum()) if kl_NT is not None else 0.0,
            clipped=float(clipped_NT[in_loss_NT].sum()),
            entropy_sum=float(entropy_NT.detach()[in_loss_NT].sum()) if entropy_NT is not None else 0.0,
            ratio_sum=float(r[in_loss_NT].sum()),
            tokens=float(in_loss_NT.sum()),
        )
    return LossOutput(loss=loss, **stats)
