"""Token sampling on device: temperature, top-k, top-p (nucleus, Holtzman et al. 2020), min-p (Nguyen et al. 2024),
with per-request seeded generators; and the raw log-probabilities GRPO needs.

The processed distribution is built in the order transformers applies its warpers: temperature → top-k → top-p (on
the distribution renormalised after top-k) → min-p (relative to the most likely token). Greedy rows (temperature 0)
get a one-hot distribution at the argmax of the raw logits, so greedy and sampled rows share one code path and the
speculative acceptance rule (``speculative.py``) reduces to "accept iff equal" for them.

Sampling is by inverse CDF: one uniform u per row picks the first token whose cumulative probability exceeds
u · (row total). Noise comes from one ``torch.Generator`` per seeded row (so a seeded sample is reproducible whatever
batch it runs in) and from the engine's generator for the other rows, in a single call. One number per row, not one
per vocabulary entry: on a CPU the per-row exponential noise of the exponential race (argmax p / E) that this module
used until 2026-11-26 took 14 % of a whole generation, as much as the model's matmuls.

Candidates (``candidates``): top-p and min-p need the tokens in descending order. The reference orders the whole
vocabulary (``sort``); on a CPU, where sorting 64 × 2048 logits costs more than a decode step's attention, the
sampler first takes the ``SHORTLIST`` most likely tokens (``topk``) plus one "tail" entry holding the rest of the
mass, applies the same truncations to that, and keeps the result only when every row's tail entry is cut (by top-k or
top-p); then no token outside the shortlist could have survived, and the kept head is exactly the reference's
(tested against it). Rows where it is not — a flat distribution — are sorted in full. The check reads a value on
the host, so CUDA keeps the sync-free full sort (cheap there).

Legend: B rows, V vocabulary, K candidates per row.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

SHORTLIST = 64  # candidates taken by topk before the exact check (CPU); see the module docstring


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

    def _map(self, fn) -> RowParams:
        out = object.__new__(RowParams)
        for name in ("temperature_B", "top_k_B", "top_p_B", "min_p_B"):
            setattr(out, name, fn(getattr(self, name)))
        out.filters, out.any_greedy = self.filters, self.any_greedy
        return out

    def select(self, rows: torch.Tensor) -> RowParams:
        """The parameters of the given rows only."""
        return self._map(lambda t: t[rows])

    def repeat_interleave(self, k: int) -> RowParams:
        """Each row repeated k times (rows of a multi-position verification step)."""
        return self._map(lambda t: t.repeat_interleave(k))


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


def _scaled(logits_BV: torch.Tensor, rp: RowParams) -> torch.Tensor:
    """fp32 logits / temperature (greedy rows: unscaled)."""
    greedy_B = rp.temperature_B == 0
    return logits_BV.float() / torch.where(greedy_B, torch.ones_like(rp.temperature_B), rp.temperature_B)[:, None]


def candidates(logits_BV: torch.Tensor, rp: RowParams, shortlist: int | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(probs_BK, ids_BK): the processed distribution of the sampled rows over K candidate tokens; ids None means
    K = V in vocabulary order. When only some rows need the full sort, K = V and the other rows' shortlists are
    padded with zeros (probability 0, id 0). Greedy rows are not handled here (``sample`` takes their argmax).

    shortlist: candidates tried before the full sort (default ``SHORTLIST`` on a CPU, none on other devices)."""
    scaled_BV = _scaled(logits_BV, rp)
    if not rp.filters:
        return torch.softmax(scaled_BV, dim=-1), None
    v = scaled_BV.shape[-1]
    if shortlist is None:
        shortlist = SHORTLIST if scaled_BV.device.type == "cpu" else 0
    if 0 < shortlist < v:
        top_BK, ids_BK = torch.softmax(scaled_BV, dim=-1).topk(shortlist, dim=-1)
        tail_B1 = (1.0 - top_BK.sum(-1, keepdim=True)).clamp_min(0.0)
        kept_BK1 = _truncate_sorted(torch.cat([top_BK, tail_B1], dim=-1), rp)
        flat_R = ((kept_BK1[:, -1] > 0) & (rp.temperature_B != 0)).nonzero()[:, 0]  # rows whose tail survived
        if len(flat_R) == 0:  # exact for every row
            return kept_BK1[:, :-1], ids_BK
        if len(flat_R) < len(scaled_BV):  # the full sort for those rows only; the others padded with zeros
            sorted_RV, order_RV = scaled_BV[flat_R].sort(dim=-1, descending=True)
            probs_BV = torch.zeros_like(scaled_BV)
            ids_BV = torch.zeros(scaled_BV.shape, dtype=torch.long, device=scaled_BV.device)
            probs_BV[:, :shortlist], ids_BV[:, :shortlist] = kept_BK1[:, :-1], ids_BK
            probs_BV[flat_R] = _truncate_sorted(torch.softmax(sorted_RV, dim=-1), rp.select(flat_R))
            ids_BV[flat_R] = order_RV
            return probs_BV, ids_BV
    sorted_BV, order_BV = scaled_BV.sort(dim=-1, descending=True)
    return _truncate_sorted(torch.softmax(sorted_BV, dim=-1), rp), order_BV


def processed_probs(logits_BV: torch.Tensor, rp: RowParams, shortlist: int | None = None) -> torch.Tensor:
    """The distribution the sampler draws from, fp32 [B, V]; one-hot at the argmax for greedy rows."""
    probs_BK, ids_BK = candidates(logits_BV, rp, shortlist)
    probs = probs_BK if ids_BK is None else torch.zeros_like(logits_BV, dtype=torch.float32).scatter_add_(
        -1, ids_BK, probs_BK)  # add: padding entries (probability 0) may repeat an id
    if rp.any_greedy:
        onehot = F.one_hot(logits_BV.float().argmax(-1), logits_BV.shape[-1]).to(probs.dtype)
        probs = torch.where((rp.temperature_B == 0)[:, None], onehot, probs)
    return probs


class RowNoise:
    """Random numbers for a batch of rows: seeded rows from their own generator, the rest from the engine's."""

    def __init__(self, generators: Sequence[torch.Generator | None], default: torch.Generator,
                 device: torch.device):
        self.generators = list(generators)
        self.default = default
        self.device = device
        self.seeded = [(i, g) for i, g in enumerate(self.generators) if g is not None]

    def uniform(self, *shape: int) -> torch.Tensor:
        """U[0, 1) numbers [B, *shape]."""
        out = torch.empty((len(self.generators), *shape), dtype=torch.float32, device=self.device)
        if len(self.seeded) < len(self.generators):
            out.uniform_(generator=self.default)
        for i, g in self.seeded:
            out[i].uniform_(generator=g)
        return out


def sample_from_probs(probs_BK: torch.Tensor, u_B: torch.Tensor) -> torch.Tensor:
    """Inverse CDF: the index of the first entry whose cumulative probability exceeds u · (row total), u in [0, 1);
    never an entry of probability 0 (rounding at the top end falls back to the last non-zero entry). Rows of all
    zeros give index 0 (callers never pass them).

    >>> sample_from_probs(torch.tensor([[0.5, 0.0, 0.5]] * 3), torch.tensor([0.2, 0.5, 0.99])).tolist()
    [0, 2, 2]
    """
    cdf_BK = probs_BK.cumsum(-1)
    idx_B = (cdf_BK <= u_B[:, None] * cdf_BK[:, -1:]).sum(-1)
    rank_K = torch.arange(probs_BK.shape[-1], device=probs_BK.device)
    last_B = torch.where(probs_BK > 0, rank_K, 0).amax(-1)
    return torch.minimum(idx_B, last_B)


def sample(logits_BV: torch.Tensor, rp: RowParams, noise: RowNoise,
           shortlist: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens_B, raw logprobs_B) for one position per row."""
    probs_BK, ids_BK = candidates(logits_BV, rp, shortlist)
    tokens_B = sample_from_probs(probs_BK, noise.uniform(1)[:, 0])
    if ids_BK is not None:
        tokens_B = ids_BK.gather(-1, tokens_B[:, None])[:, 0]
    if rp.any_greedy:
        tokens_B = torch.where(rp.temperature_B == 0, logits_BV.float().argmax(-1), tokens_B)
    return tokens_B, raw_logprobs(logits_BV, tokens_B)
