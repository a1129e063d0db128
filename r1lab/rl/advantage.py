"""Group-relative advantages: GRPO's outcome supervision (DeepSeekMath arXiv 2402.03300 §4.1.2).

For each prompt, G sampled outputs get rewards r_1..r_G; every token of output i gets the same advantage
Â_i = (r_i − mean(r)) / (std(r) + eps). Options (chosen once in the config):
- ``scale_by_std=False``: Dr. GRPO (arXiv 2503.20783) — Â_i = r_i − mean(r), no division by the std;
- ``drop_zero_variance``: outputs of groups whose rewards are all equal are excluded from the loss (they have Â = 0
  anyway; dropping them changes the normalisers of the "paper" / "token_mean" aggregations — DAPO's dynamic
  sampling without the re-sampling);
- ``mask_truncated``: outputs cut by the max_new_tokens limit are excluded from the loss (DAPO "overlong
  filtering"); they still count in their group's mean and std.

The std is the population std (divide by G), as in DeepSeekMath's formula; TRL uses the sample std (G − 1) — a
deliberate difference that only rescales Â by sqrt(G/(G−1)).

Legend: N = B·G outputs (groups contiguous: rows g·G … g·G+G−1 belong to prompt g), B prompts, G group size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Advantages:
    """advantages_N: Â per output; keep_N: bool, output enters the loss; zero_var_B: bool per group."""

    advantages_N: torch.Tensor
    keep_N: torch.Tensor
    zero_var_B: torch.Tensor

    @property
    def zero_variance_fraction(self) -> float:
        return float(self.zero_var_B.float().mean()) if self.zero_var_B.numel() else 0.0


def group_view(values_N: torch.Tensor, group_size: int) -> torch.Tensor:
    """values_N as B×G (groups contiguous); G < 2 or N not divisible by G → ValueError.

    >>> group_view(torch.arange(6.0), 3).tolist()
    [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """
    if group_size < 2:
        raise ValueError(f"group_size (G) must be >= 2 for group-relative advantages, got {group_size}")
    if values_N.ndim != 1 or values_N.numel() % group_size:
        raise ValueError(f"expected a 1-D tensor whose length is a multiple of G={group_size}, "
                         f"got shape {tuple(values_N.shape)}")
    return values_N.view(-1, group_size)


def group_advantages(
    rewards_N: torch.Tensor,
    group_size: int,
    *,
    scale_by_std: bool = True,
    eps: float = 1e-4,
    drop_zero_variance: bool = False,
    truncated_N: torch.Tensor | None = None,
    mask_truncated: bool = False,
) -> Advantages:
    """Â_i = (r_i − mean_g) / (std_g + eps) (or without the std when ``scale_by_std`` is False).

    >>> a = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0]), 3, eps=0.0)
    >>> [round(x, 4) for x in a.advantages_N.tolist()], a.zero_var_B.tolist()
    ([1.4142, -0.7071, -0.7071, 0.0, 0.0, 0.0], [False, True])
    >>> group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0]), 3, drop_zero_variance=True).keep_N.tolist()
    [True, True, True, False, False, False]
    """
    r_BG = group_view(rewards_N.float(), group_size)
    mean_B1 = r_BG.mean(dim=1, keepdim=True)
    centred_BG = r_BG - mean_B1
    zero_var_B = (r_BG == r_BG[:, :1]).all(dim=1)
    if scale_by_std:
        std_B1 = r_BG.std(dim=1, unbiased=False, keepdim=True)
        adv_BG = centred_BG / (std_B1 + eps)
    else:
        adv_BG = centred_BG
    adv_BG = torch.where(zero_var_B[:, None], torch.zeros_like(adv_BG), adv_BG)  # exact 0, no rounding residue
    keep_BG = torch.ones_like(adv_BG, dtype=torch.bool)
    if drop_zero_variance:
        keep_BG &= ~zero_var_B[:, None]
    keep_N = keep_BG.reshape(-1)
    if mask_truncated and truncated_N is not None:
        keep_N = keep_N & ~truncated_N.bool().reshape(-1)
    return Advantages(adv_BG.reshape(-1), keep_N, zero_var_B)
