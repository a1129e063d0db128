"""AdamW with decoupled weight decay, learning-rate schedules (warmup + cosine, or warmup-stable-decay) and the
bias-update-speed (γ) schedule of auxiliary-loss-free load balancing.

Sources: DeepSeek-V3 report (arXiv 2412.19437) §4.2 — AdamW (β1 0.9, β2 0.95, weight decay 0.1), linear warmup, a
constant stage then cosine decay to 10% of the peak; γ = 0.001 for most of training and 0 for the last 500B of 14.8T
tokens (§4.2 "bias update speed"). WSD (warmup-stable-decay, Hu et al. 2024 "MiniCPM") is offered because it is the
schedule V3 effectively uses (long constant stage, then decay) and makes "continue training" cheap.

Deliberate differences: V3's exact piecewise schedule (constant, cosine over 4.3T tokens, then two constant tails) is
collapsed to two shapes: ``cosine`` (warmup then cosine from peak to ``min_lr_ratio``·peak) and ``wsd`` (warmup,
constant, then a linear decay over the last ``decay_frac`` of steps to ``min_lr_ratio``·peak). 1-D parameters (norms,
biases) get no weight decay, as is common practice; the expert-bias (a buffer) is never touched by the optimizer.

Everything here is generic: ``make_optimizer`` / ``make_schedule`` read attributes from any config object (see
their docstrings), so the SFT and RL trainers reuse them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

SCHEDULES = ("cosine", "wsd", "constant")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: matrices/embeddings with ``weight_decay``, 1-D tensors (norms, biases) without.

    Only parameters with ``requires_grad`` are included (frozen ones, e.g. a reference model's, are skipped).
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def make_optimizer(model: nn.Module, cfg: Any) -> torch.optim.AdamW:
    """AdamW over ``model``'s trainable parameters.

    Reads from ``cfg``: ``lr`` (peak), ``weight_decay``, ``betas`` (pair), and optionally ``adam_eps`` (default 1e-8)
    and ``fused`` (default: True on CUDA). Any object with these attributes works (dataclass, namespace). Not ``eps``:
    GRPO's config has ``eps`` = 0.2, its ratio-clipping ε, which this function once took for Adam's ε — every update
    was then ~g/0.2 (plain SGD scaled by lr/0.2) instead of Adam's ~lr per weight, and 30 GRPO steps moved the median
    weight tensor by ~3e-5 of its norm (eleventh session).
    """
    betas = tuple(float(b) for b in getattr(cfg, "betas", (0.9, 0.95)))
    if len(betas) != 2:
        raise ValueError(f"betas: expected two values, got {betas}")
    groups = param_groups(model, float(getattr(cfg, "weight_decay", 0.0)))
    on_cuda = any(p.is_cuda for g in groups for p in g["params"])
    fused = getattr(cfg, "fused", None)
    kw: dict[str, Any] = {"fused": True} if (fused if fused is not None else on_cuda) else {"foreach": True}
    return torch.optim.AdamW(groups, lr=float(cfg.lr), betas=betas, eps=float(getattr(cfg, "adam_eps", 1e-8)), **kw)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, keeping this optimizer's Adam ε: GRPO checkpoints written before the
    ``adam_eps`` fix hold ε = 0.2 in their param groups, and a resumed run would silently keep the bug."""
    eps = [group.get("eps") for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, value in zip(optimizer.param_groups, eps):
        if value is not None:
            group["eps"] = value


def lr_multiplier(step: int, total_steps: int, schedule: str = "cosine", warmup_steps: int = 0,
                  min_lr_ratio: float = 0.1, decay_frac: float = 0.2) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (0-based), pure function.

    - warmup: linear from 1/(warmup+1) up to 1 over ``warmup_steps`` steps (never exactly 0, so step 0 learns);
    - ``cosine``: then cosine from 1 to ``min_lr_ratio`` at the last step;
    - ``wsd``: then constant 1, then linear to ``min_lr_ratio`` over the last ``decay_frac``·total steps;
    - ``constant``: 1 after warmup.

    >>> [round(lr_multiplier(s, 10, "cosine", 2, 0.1), 3) for s in (0, 1, 2, 9)]
    [0.333, 0.667, 1.0, 0.1]
    >>> [round(lr_multiplier(s, 10, "wsd", 0, 0.0, 0.5), 2) for s in (0, 4, 5, 7, 9)]
    [1.0, 1.0, 0.8, 0.4, 0.0]
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    last = total_steps - 1
    if schedule == "cosine":
        span = max(last - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    n_decay = max(round(decay_frac * total_steps), 1)
    decay_start = total_steps - n_decay
    if step < decay_start:
        return 1.0
    progress = min((step - decay_start + 1) / n_decay, 1.0)
    return 1.0 - (1.0 - min_lr_ratio) * progress


def make_schedule(optimizer: torch.optim.Optimizer, cfg: Any, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying ``lr_multiplier``; call ``.step()`` after every optimizer step.

    Reads from ``cfg``: ``schedule`` ("cosine" | "wsd" | "constant"), ``warmup_steps``, ``min_lr_ratio`` and, for
    WSD, ``decay_frac`` (defaults: cosine, 0, 0.1, 0.2). Its ``state_dict`` holds the step, so resuming is exact.
    """
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _multiplier_fn(cfg, total_steps))


def _multiplier_fn(cfg: Any, total_steps: int) -> Callable[[int], float]:
    """``step -> lr_multiplier(step, total_steps, …)`` with ``cfg``'s schedule fields, validated now (not at step 0)."""
    schedule = getattr(cfg, "schedule", "cosine")
    warmup = int(getattr(cfg, "warmup_steps", 0))
    min_ratio = float(getattr(cfg, "min_lr_ratio", 0.1))
    decay_frac = float(getattr(cfg, "decay_frac", 0.2))
    lr_multiplier(0, total_steps, schedule, warmup, min_ratio, decay_frac)
    return lambda s: lr_multiplier(s, total_steps, schedule, warmup, min_ratio, decay_frac)


def refit_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, cfg: Any, total_steps: int) -> None:
    """Points a ``make_schedule`` scheduler at a new total step count (a wall-clock budget fitted it), and sets the
    learning rate of the coming step from it; the step counter is kept."""
    scheduler.lr_lambdas = [_multiplier_fn(cfg, total_steps) for _ in scheduler.optimizer.param_groups]
    for group, base, fn in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]  # what get_last_lr() reports


def gamma_at(step: int, total_steps: int, gamma: float, zero_frac: float) -> float:
    """Bias update speed at optimizer step ``step``: ``gamma``, then 0 for the last ``zero_frac`` of the steps
    (V3 §4.2: γ = 0.001 for the first 14.3T tokens, 0 for the remaining 500B).

    >>> [gamma_at(s, 10, 0.001, 0.2) for s in (0, 7, 8, 9)]
    [0.001, 0.001, 0.0, 0.0]
    """
    if not 0.0 <= zero_frac <= 1.0:
        raise ValueError(f"gamma_zero_frac must be in [0, 1], got {zero_frac}")
    return gamma if step < total_steps - round(zero_frac * total_steps) else 0.0


def clip_grad_norm(model: nn.Module, max_norm: float) -> float:
    """Clips the global gradient norm in place (no clipping when ``max_norm`` <= 0); returns the norm before
    clipping. Works for DDP and for FSDP2 (DTensor) parameters alike."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):  # DTensor under FSDP2
        norm = norm.full_tensor()
    return float(norm)
