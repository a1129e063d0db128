"""Per-token log-probabilities of sampled completions under a model: π_θ (with grad) and π_ref (without).

Works for our ``DeepSeekV3ForCausalLM`` and any transformers causal LM: both take ``input_ids``,
``attention_mask``, ``position_ids`` and ``logits_to_keep`` and return ``.logits``. Rows are
[left-padded prompt | right-padded completion] (see ``rollout.RolloutBatch``); positions are counted from the first
real token so left padding does not shift RoPE. Only the last T+1 positions get logits (``logits_to_keep``), and rows
are processed ``chunk_size`` at a time, so memory is O(chunk × T × V), never the whole batch's logits.

Log-probs are of the raw softmax (temperature 1), as the engine reports π_old — TRL instead divides the logits by the
sampling temperature; with the default temperature 1.0 the two agree.

Legend: N rows, S = P + T (prompt + completion positions), T completion tokens, V vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from r1lab.rl.loss import entropy_from_logits


@dataclass
class TokenLogprobs:
    """logp_NT: log π(token) per completion token; entropy_NT: softmax entropy there (None unless asked)."""

    logp_NT: torch.Tensor
    entropy_NT: torch.Tensor | None = None


def positions_from_mask(attention_mask_NS: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, … from each row's first real token (padding gets 0).

    >>> positions_from_mask(torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])).tolist()
    [[0, 0, 0, 1, 2], [0, 1, 2, 3, 3]]
    """
    return (attention_mask_NS.long().cumsum(dim=1) - 1).clamp(min=0)


def gather_logprobs(logits_NTV: torch.Tensor, tokens_NT: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] in fp32, via logsumexp (no N×T×V log-softmax copy kept).

    >>> lg = torch.tensor([[[0.0, 0.0]]])
    >>> round(float(gather_logprobs(lg, torch.tensor([[1]]))[0, 0]), 4)
    -0.6931
    """
    logits_NTV = logits_NTV.float()
    picked_NT = logits_NTV.gather(-1, tokens_NT.unsqueeze(-1)).squeeze(-1)
    return picked_NT - torch.logsumexp(logits_NTV, dim=-1)


def completion_logprobs(
    model: nn.Module,
    input_ids_NS: torch.Tensor,
    attention_mask_NS: torch.Tensor,
    completion_len: int,
    *,
    chunk_size: int = 8,
    with_entropy: bool = False,
) -> TokenLogprobs:
    """Log-probs of the last ``completion_len`` tokens of every row (the completion), chunked over rows.

    Runs under the caller's grad mode: wrap in ``torch.no_grad()`` for π_old / π_ref. Entropy is always computed
    without grad (it is a statistic).
    """
    if completion_len < 1 or completion_len >= input_ids_NS.shape[1]:
        raise ValueError(f"completion_len must be in 1..{input_ids_NS.shape[1] - 1}, got {completion_len}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    T = completion_len
    logps, entropies = [], []
    for lo in range(0, input_ids_NS.shape[0], chunk_size):
        ids_CS = input_ids_NS[lo : lo + chunk_size]
        mask_CS = attention_mask_NS[lo : lo + chunk_size]
        out = model(
            input_ids=ids_CS,
            attention_mask=mask_CS,
            position_ids=positions_from_mask(mask_CS),
            logits_to_keep=T + 1,
        )
        logits_CTV = out.logits[:, -(T + 1) : -1]  # position s predicts token s + 1
        logps.append(gather_logprobs(logits_CTV, ids_CS[:, -T:]))
        if with_entropy:
            with torch.no_grad():
                entropies.append(entropy_from_logits(logits_CTV))
    return TokenLogprobs(torch.cat(logps), torch.cat(entropies) if with_entropy else None)
