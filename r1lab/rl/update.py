"""One GRPO policy update (DeepSeekMath Alg. 1, the inner loop "for GRPO iteration = 1..μ"): micro-batched
log-probs, the clipped k3-penalised loss with globally normalised token weights, gradient all-reduce, a finiteness
guard and the optimizer step.

Distributed: every rank holds its own rollouts. The token weights divide by batch-wide counts (``Normalizer``)
all-reduced over ranks, so each rank's loss is its share of one global sum and the gradients are *summed* with
``all_reduce`` (not averaged): the result equals a single process on the whole batch, exactly (tested with gloo).

Non-finite guard: if any micro-batch loss or the gradient norm is NaN/inf on any rank, the gradients are dropped and
the optimizer (and LR schedule) is not stepped, so weights and optimizer state stay untouched; the step is reported as
skipped.

π_old: with ``old_logprobs="trainer"`` the first inner update's log-probs (taken before any weight change) serve as
π_old for all μ updates, so ρ = 1 exactly at the first update and engine/trainer kernel differences cannot bias the
ratio (peers' issue "log-prob mismatch"); their mean absolute gap to the engine's log-probs is reported as
``logprob_mismatch``. ``old_logprobs="engine"`` uses the sampler's log-probs as DeepSeekMath does.

Legend: N completions, S positions, T completion width.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from r1lab.rl.advantage import Advantages
from r1lab.rl.logprobs import TokenLogprobs, completion_logprobs
from r1lab.rl.loss import Normalizer, grpo_loss, token_weights
from r1lab.rl.rollout import RolloutBatch
from r1lab.rl.shared_prefix import shared_prefix_logprobs

OLD_LOGPROB_SOURCES = ("trainer", "engine")


@dataclass(frozen=True)
class UpdateSettings:
    """The loss/update knobs (copied from GRPOConfig): see its field docs."""

    eps: float = 0.2
    eps_high: float = 0.2
    beta: float = 0.0
    aggregation: str = "paper"
    max_new_tokens: int = 128
    micro_batch: int = 16
    max_grad_norm: float = 1.0
    old_logprobs: str = "trainer"
    shared_prefix: bool = False  # True only where the model supports it (``shared_prefix.supports_shared_prefix``)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (no-op single-process)."""
    if _distributed():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_grads(model: nn.Module) -> None:
    """Sum every parameter's gradient over ranks (a missing gradient counts as zeros)."""
    if not _distributed():
        return
    for p in model.parameters():
        if p.requires_grad:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def rows_logprobs(model: nn.Module, batch: RolloutBatch, lo: int, hi: int, shared_prefix: bool,
                  with_entropy: bool = False) -> TokenLogprobs:
    """Log-probs of the completions of rows lo..hi-1 in one forward: the prompt computed once per group
    (``shared_prefix.py``) or the reference layout of padded [prompt | completion] rows (``logprobs.py``)."""
    device = next(model.parameters()).device
    if shared_prefix:
        return shared_prefix_logprobs(model, batch.input_ids_NS[lo:hi], batch.attention_mask_NS[lo:hi],
                                      batch.completion_mask_NT[lo:hi], batch.group_ids_N[lo:hi],
                                      with_entropy=with_entropy)
    return completion_logprobs(model, batch.input_ids_NS[lo:hi].to(device), batch.attention_mask_NS[lo:hi].to(device),
                               batch.completion_len, chunk_size=hi - lo, with_entropy=with_entropy)


@torch.no_grad()
def reference_logprobs(ref_model: nn.Module, batch: RolloutBatch, micro_batch: int,
                       shared_prefix: bool = False) -> torch.Tensor:
    """π_ref per completion token (no grad)."""
    n = batch.input_ids_NS.shape[0]
    return torch.cat([rows_logprobs(ref_model, batch, lo, min(lo + micro_batch, n), shared_prefix).logp_NT
                      for lo in range(0, n, micro_batch)])


def policy_update(model: nn.Module, optimizer: torch.optim.Optimizer, batch: RolloutBatch, adv: Advantages,
                  s: UpdateSettings, *, ref_logp_NT: torch.Tensor | None = None,
                  old_logp_NT: torch.Tensor | None = None, scheduler=None, with_entropy: bool = True,
                  amp: contextlib.AbstractContextManager = contextlib.nullcontext()
                  ) -> tuple[dict[str, float], torch.Tensor]:
    """One optimizer step on ``batch``; returns (stats, π_old used — pass it back for the next inner update).

    ``old_logp_NT`` None means "first inner update": π_old is taken from the trainer's own log-probs now
    (``old_logprobs="trainer"``) or from the sampler (``"engine"``). ``amp``: the context the forwards run in
    (the run's autocast; backward runs outside it).
    """
    if s.old_logprobs not in OLD_LOGPROB_SOURCES:
        raise ValueError(f"old_logprobs must be one of {OLD_LOGPROB_SOURCES}, got {s.old_logprobs!r}")
    device = next(model.parameters()).device
    mask_NT = batch.completion_mask_NT * adv.keep_N[:, None].float()
    norm = Normalizer.from_tensor(all_reduce_sum(Normalizer.of(mask_NT, s.max_new_tokens).as_tensor()),
                                  s.max_new_tokens)
    weights_NT = token_weights(mask_NT, norm, s.aggregation)
    first = old_logp_NT is None
    if first and s.old_logprobs == "engine":
        old_logp_NT = batch.old_logp_NT
    collected_old = []
    sums = torch.zeros(6, dtype=torch.float64)  # loss, kl, clipped, entropy, ratio, tokens
    mismatch = torch.zeros(2, dtype=torch.float64)  # Σ|engine − trainer|, tokens
    bad = torch.zeros(1)
    optimizer.zero_grad(set_to_none=True)
    model.train()
    for lo in range(0, mask_NT.shape[0], s.micro_batch):
        hi = lo + s.micro_batch
        with amp:
            lp = rows_logprobs(model, batch, lo, min(hi, mask_NT.shape[0]), s.shared_prefix, with_entropy)
        logp_MT = lp.logp_NT
        if first:
            m = batch.completion_mask_NT[lo:hi].to(device)
            gap = (logp_MT.detach() - batch.old_logp_NT[lo:hi].to(device)).abs() * m
            mismatch += torch.tensor([float(gap.sum()), float(m.sum())], dtype=torch.float64)
            if s.old_logprobs == "trainer":
                collected_old.append(logp_MT.detach().cpu())
        old_MT = collected_old[-1].to(device) if (first and s.old_logprobs == "trainer") else \
            old_logp_NT[lo:hi].to(device)
        out = grpo_loss(logp_MT, old_MT, adv.advantages_N[lo:hi].to(device), weights_NT[lo:hi].to(device),
                        eps_low=s.eps, eps_high=s.eps_high, beta=s.beta,
                        ref_logp_NT=None if ref_logp_NT is None else ref_logp_NT[lo:hi].to(device),
                        entropy_NT=lp.entropy_NT)
        if not torch.isfinite(out.loss):
            bad += 1
            break
        out.loss.backward()
        sums += torch.tensor([out.loss.item(), out.kl_sum, out.clipped, out.entropy_sum, out.ratio_sum, out.tokens],
                             dtype=torch.float64)
    if first and s.old_logprobs == "trainer":
        old_logp_NT = torch.cat(collected_old) if not bad.item() else batch.old_logp_NT
    all_reduce_grads(model)
    all_reduce_sum(sums)
    all_reduce_sum(mismatch)
    all_reduce_sum(bad)
    grad_norm = float("nan")
    if not bad.item():
        grad_norm = _clip(model, s.max_grad_norm)
    skipped = bool(bad.item()) or not math.isfinite(grad_norm)
    if skipped:
        optimizer.zero_grad(set_to_none=True)
    else:
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    tokens = max(float(sums[5]), 1.0)
    stats = {
        "loss": float(sums[0]),
        "kl": float(sums[1]) / tokens,
        "clip_fraction": float(sums[2]) / tokens,
        "entropy": float(sums[3]) / tokens if with_entropy else float("nan"),
        "ratio_mean": float(sums[4]) / tokens,
        "grad_norm": grad_norm,
        "loss_tokens": float(sums[5]),
        "skipped": float(skipped),
    }
    if first:
        stats["logprob_mismatch"] = float(mismatch[0] / max(float(mismatch[1]), 1.0))
    return stats, old_logp_NT


def _clip(model: nn.Module, max_norm: float) -> float:
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf")))
