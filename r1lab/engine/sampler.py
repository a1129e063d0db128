"""Token sampling on device: temperature, top-k, top-p (nucleus, Holtzman et al. 2020), min-p (Nguyen et al. 2024),
with per-request seeded generators; and the raw log-probabilities GRPO needs.

The processed distribution is built in the order transformers applies its warpers: temperature → top-k → top-p (on
the distribution renormalised after top-k) → min-p (relative to the most likely token). Greedy rows (temperature 0)
get a one-hot distribution at the argmax of the raw logits, so greedy and sampled rows share one code path and the
speculative acceptance rule (``speculative.py``) reduces to "accept iff equal" for them.

Sampling uses the exponential race: argmax_i p_i / E_i with E_i ~ Exp(1) picks i with probability p_i (the Gumbel-max
trick in another form); it needs no cumulative sum and works on any row-wise distribution. Noise comes from one
``torch.Generator`` per seeded row (so a seeded sample is reproducible whatever batch it runs in) and from the
engine's generator for the other rows, in a single call.

Legend: B rows, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


class RowParams:
    """The per-row sampling parameters of a batch as device tensors (built once per batch composition)."""

    def __init__(self, temperature: Sequence[float], top_k: Sequence[int], top_p: Sequence[float],
                 min_p: Sequence[float], device: torch.device):
        self.temperature_B = torch.tensor(temperature, dtype=torch.float32, device=device)
        self.top_k_B = torch.tensor(top_k, dtype=torch.long, device=device)
        self.top_p_B = torch.tensor(top_p, dtype=torch.float32, device=device)
        self.min_p_B = torch.tensor(min_p, dtype=torch.float32, device=device)
        self.filters = any(k > 0 for k in top_k) or any(p < 1.0 for p in top_p) or any(m > 0.0 for m in min_p)
        self.any_greedy = any(t == 0.0 for t in temperature)

    def repeat_interleave(self, k: int) -> RowParams:
        """Each row repeated k times (rows of a multi-position verification step)."""
        out = object.__new__(RowParams)
        for name in ("temperature_B", "top_k_B", "top_p_B", "min_p_B"):
            setattr(out, name, getattr(self, name).repeat_interleave(k))
        out.filters, out.any_greedy = self.filters, self.any_greedy
        return out


def raw_logprobs(logits_BV: torch.Tensor, tokens_B: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] in fp32: the model's own distribution (temperature 1, no truncation)."""
    return torch.log_softmax(logits_BV.float(), dim=-1).gather(-1, tokens_B[:, None]).squeeze(-1)


def _truncate_sorted(probs_sorted_BV: torch.Tensor, rp: RowParams) -> torch.Tensor:
    """Apply top-k, then top-p on the renormalised rest, then min-p, to probabilities sorted descending."""
    v = probs_sorted_BV.shape[-1]
    rank_V = torch.arange(v, device=probs_sorted_BV.device)
    k_B = torch.where(rp.top_k_B > 0, rp.top_k_B, torch.full_like(rp.top_k_B, v))
    p = probs_sorted_BV * (rank_V[None] < k_B[:, None])
    p = p / p.sum(-1, keepdim=True)
    before_BV = p.cumsum(-1) - p  # probability mass strictly before each token
    p = p * (before_BV < rp.top_p_B[:, None])
    p = p / p.sum(-1, keepdim=True)
    p = p * (p >= rp.min_p_B[:, None] * p[:, :1])
    return p / p.sum(-1, keepdim=True)


def processed_probs(logits_BV: torch.Tensor, rp: RowParams) -> torch.Tensor:
    """The distribution the sampler draws from, fp32 [B, V]; one-hot at the argmax for greedy rows."""
    logits = logits_BV.float()
    greedy_B = rp.temperature_B == 0
    scaled = logits / torch.where(greedy_B, torch.ones_like(rp.temperature_B), rp.temperature_B)[:, None]
    if rp.filters:
        sorted_BV, order_BV = scaled.sort(dim=-1, descending=True)
        kept_BV = _truncate_sorted(torch.softmax(sorted_BV, dim=-1), rp)
        probs = torch.zeros_like(kept_BV).scatter_(-1, order_BV, kept_BV)
    else:
        probs = torch.softmax(scaled, dim=-1)
    if rp.any_greedy:
        onehot = F.one_hot(logits.argmax(-1), logits.shape[-1]).to(probs.dtype)
        probs = torch.where(greedy_B[:, None], onehot, probs)
    return probs


class RowNoise:
    """Random numbers for a batch of rows: seeded rows from their own generator, the rest from the engine's."""

    def __init__(self, generators: Sequence[torch.Generator | None], default: torch.Generator,
                 device: torch.device):
        self.generators = list(generators)
        self.default = default
        self.device = device
        self.seeded = [(i, g) for i, g in enumerate(self.generators) if g is not None]

    def _fill(self, shape: tuple[int, ...], kind: str) -> torch.Tensor:
        out = torch.empty((len(self.generators), *shape), dtype=torch.float32, device=self.device)
        draw = (lambda t, g: t.exponential_(generator=g)) if kind == "exp" else (lambda t, g: t.uniform_(generator=g))
        if len(self.seeded) < len(self.generators):
            draw(out, self.default)
        for i, g in self.seeded:
            draw(out[i], g)
        return out

    def exponential(self, *shape: int) -> torch.Tensor:
        return self._fill(tuple(shape), "exp")

    def uniform(self, *shape: int) -> torch.Tensor:
        return self._fill(tuple(shape), "uniform")


def sample_from_probs(probs_BV: torch.Tensor, exp_noise_BV: torch.Tensor) -> torch.Tensor:
    """Exponential race: argmax p / E. Rows of all zeros fall back to index 0 (callers never pass them)."""
    return (probs_BV / exp_noise_BV.clamp_min(1e-20)).argmax(-1)


def sample(logits_BV: torch.Tensor, rp: RowParams, noise: RowNoise) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens_B, raw logprobs_B) for one position per row."""
    probs = processed_probs(logits_BV, rp)
    tokens = sample_from_probs(probs, noise.exponential(probs.shape[-1]))
    return tokens, raw_logprobs(logits_BV, tokens)
