"""Shared-prefix log-probs: the completions of one prompt packed into one row, the prompt computed once.

GRPO scores G completions of every prompt. The reference path (``logprobs.completion_logprobs``) runs G rows of
[left-padded prompt | right-padded completion], so the prompt is computed G times and every completion is padded to
the longest one. Here each group becomes one row

    [prompt | c_1 | c_2 | … | c_m | padding]

where a token of c_i attends to the prompt and to the earlier tokens of c_i only, and c_i's positions continue from
the prompt's (P, P+1, …), exactly the positions it has in the reference layout. Nothing is padded inside the row. The
last prompt token's logits predict the first token of every completion; each completion token predicts the next.
Equal to the reference path up to floating-point summation order (tests/test_shared_prefix.py: log-probs, entropies
and gradients), with fewer tokens: for the R1-Zero template (~100 prompt tokens) and G = 16 completions of ~50 tokens,
~900 tokens per group instead of 16 × (110 + 128) padded ones.

Attention runs with a dense [L, L] mask, so its cost grows with the square of the row: one row per group of 16
completions of ~75 tokens (L ≈ 1,300) was *slower* than padded rows on the CPU. A row therefore takes completions
only up to ``ROW_FACTOR`` × the padded width S (then a new row starts with its own copy of the prompt): forward +
backward 1.55× (completions of 25-128 tokens) and 1.9× (14-70) faster than padded rows on the 2-core CPU
(``benchmarks/shared_prefix.py``, docs/benchmarks.md). Logits are computed only where a real token is predicted.

What changes besides speed: the MoE's per-expert token counts (the aux-loss-free bias statistic) see each prompt once
per packed row instead of G times.

Runs our ``DeepSeekV3ForCausalLM`` (its forward takes ``attn_mask_B1TT`` and ``logits_at``) and the transformers
architectures of ``HF_MODEL_TYPES`` (their decoder takes a prepared 4D mask as given); other models keep the
reference path (``supports_shared_prefix`` chooses once per run).

Legend: N completions, S = P + T (prompt + completion columns of the rollout rows), T completion width, R packed rows,
L packed length, V vocabulary.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from r1lab.rl.logprobs import TokenLogprobs, gather_logprobs
from r1lab.rl.loss import entropy_from_logits

PROMPT_SEGMENT = 1  # segment id of the prompt; the completions of a row get PROMPT_SEGMENT + 1, + 2, …
ROW_FACTOR = 2  # a packed row holds at most this many padded rows' width of tokens (see the module docstring)


# transformers architectures whose decoder takes a prepared 4D additive mask as-is (tested: tests/test_shared_prefix.py)
HF_MODEL_TYPES = ("qwen2", "qwen3", "llama")


def _is_ours(model: nn.Module) -> bool:
    params = inspect.signature(model.forward).parameters
    return "attn_mask_B1TT" in params and "logits_at" in params


def supports_shared_prefix(model: nn.Module) -> bool:
    """True for our model (its forward takes an explicit mask and logit positions) and for the transformers
    architectures in ``HF_MODEL_TYPES`` running sdpa or eager attention (their decoder uses a 4D mask as given)."""
    if _is_ours(model):
        return True
    config = getattr(model, "config", None)
    # flash-attention kernels in transformers ignore a 4D mask (they would attend across completions): sdpa/eager only
    return getattr(config, "model_type", None) in HF_MODEL_TYPES and hasattr(model, "get_decoder") \
        and hasattr(model, "get_output_embeddings") \
        and getattr(config, "_attn_implementation", None) in ("sdpa", "eager")


def _hf_logits(model: nn.Module, ids_RL: torch.Tensor, pos_RL: torch.Tensor, allow_R1LL: torch.Tensor,
               flat_M: torch.Tensor) -> torch.Tensor:
    """A transformers model on packed rows: the decoder with an additive mask (0 / dtype min: a boolean one would be
    added as 0/1 by eager attention), then the head only at the ``flat_M`` positions of the flattened rows."""
    device = ids_RL.device
    dtype = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else \
        next(model.parameters()).dtype
    mask = torch.zeros(allow_R1LL.shape, dtype=dtype, device=device).masked_fill(~allow_R1LL, torch.finfo(dtype).min)
    hidden_RLD = model.get_decoder()(input_ids=ids_RL, attention_mask=mask, position_ids=pos_RL).last_hidden_state
    return model.get_output_embeddings()(hidden_RLD.reshape(-1, hidden_RLD.shape[-1])[flat_M])


@dataclass
class PackedGroups:
    """Token tensors of the packed rows and where each completion token's predicting logits are.

    ids_RL / seg_RL / pos_RL: tokens, segment ids (0 = padding) and RoPE positions; pred_NT: flat index into R·L of
    the position whose logits predict completion token (n, t) (0 where t ≥ length); tokens_NT: the completion tokens;
    valid_NT: t < length of completion n.
    """

    ids_RL: torch.Tensor
    seg_RL: torch.Tensor
    pos_RL: torch.Tensor
    pred_NT: torch.Tensor
    tokens_NT: torch.Tensor
    valid_NT: torch.Tensor

    def attention_mask(self) -> torch.Tensor:
        return shared_prefix_mask(self.seg_RL)


def shared_prefix_mask(seg_RL: torch.Tensor) -> torch.Tensor:
    """Bool [R, 1, L, L] (on seg_RL's device): causal; the prompt sees itself, a completion sees the prompt and
    itself; a padding position sees only itself (no empty softmax row)."""
    L = seg_RL.shape[1]
    q_RL1, k_R1L = seg_RL[:, :, None], seg_RL[:, None, :]
    causal_LL = torch.ones(L, L, dtype=torch.bool, device=seg_RL.device).tril()
    allow_RLL = causal_LL & ((k_R1L == q_RL1) | (k_R1L == PROMPT_SEGMENT)) & (k_R1L != 0) & (q_RL1 != 0)
    allow_RLL |= torch.eye(L, dtype=torch.bool, device=seg_RL.device)
    return allow_RLL[:, None]


def pack_groups(input_ids_NS: torch.Tensor, attention_mask_NS: torch.Tensor, completion_mask_NT: torch.Tensor,
                group_ids_N: torch.Tensor, pad_id: int = 0, max_row_len: int = 0, multiple: int = 1) -> PackedGroups:
    """Packed rows of consecutive rows with the same group id (they must share their prompt): one row per group, or
    several (each with its own copy of the prompt) where ``max_row_len`` > 0 would otherwise be exceeded — a row
    always takes at least one completion. The packed width is rounded up to a multiple of ``multiple`` (on a GPU
    repeated shapes let cuDNN attention reuse its plans; padding changes no result).

    >>> ids = torch.tensor([[0, 5, 6, 7, 0], [0, 5, 6, 8, 9]])
    >>> p = pack_groups(ids, (ids != 0).long(), torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([3, 3]))
    >>> p.ids_RL.tolist(), p.seg_RL.tolist(), p.pos_RL.tolist(), p.pred_NT.tolist()
    ([[5, 6, 7, 8, 9]], [[1, 1, 2, 3, 3]], [[0, 1, 2, 2, 3]], [[1, 0], [1, 3]])
    >>> pack_groups(ids, (ids != 0).long(), torch.tensor([[1.0, 0.0], [1.0, 1.0]]), torch.tensor([3, 3]),
    ...             max_row_len=4).ids_RL.tolist()
    [[5, 6, 7, 0], [5, 6, 8, 9]]
    """
    N, S = input_ids_NS.shape
    T = completion_mask_NT.shape[1]
    P = S - T
    ids_N, attn_N = input_ids_NS.tolist(), attention_mask_NS.tolist()
    lengths = [int(x) for x in completion_mask_NT.sum(dim=1).round().tolist()]
    groups = group_ids_N.tolist()
    rows: list[tuple[list[int], list[int], list[int]]] = []
    where_N3 = []  # per completion: (packed row, prompt length, where the completion starts in the row)
    prompt: list[int] = []
    for n in range(N):
        mine = [t for t, a in zip(ids_N[n][:P], attn_N[n][:P], strict=True) if a]
        if not mine:
            raise ValueError(f"row {n} has an empty prompt; the shared-prefix layout needs a prompt token")
        same_group = n > 0 and groups[n] == groups[n - 1]
        if same_group and mine != prompt:
            raise ValueError(f"rows of group {groups[n]} have different prompts (row {n}); "
                             "the shared-prefix layout needs one prompt per group")
        length = lengths[n]
        full = rows and max_row_len > 0 and len(rows[-1][0]) + length > max_row_len
        if not same_group or full:
            prompt = mine
            rows.append((list(prompt), [PROMPT_SEGMENT] * len(prompt), list(range(len(prompt)))))
        ids, seg, pos = rows[-1]
        where_N3.append((len(rows) - 1, len(prompt), len(ids)))
        ids += ids_N[n][P : P + length]
        seg += [seg[-1] + 1] * length
        pos += range(len(prompt), len(prompt) + length)
    L = -(-max(len(ids) for ids, _, _ in rows) // multiple) * multiple
    ids_RL = torch.full((len(rows), L), pad_id, dtype=torch.long)
    seg_RL = torch.zeros((len(rows), L), dtype=torch.long)
    pos_RL = torch.zeros((len(rows), L), dtype=torch.long)
    for r, (ids, seg, pos) in enumerate(rows):
        ids_RL[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        seg_RL[r, : len(seg)] = torch.tensor(seg, dtype=torch.long)
        pos_RL[r, : len(pos)] = torch.tensor(pos, dtype=torch.long)
    t_1T = torch.arange(T)[None, :]
    valid_NT = t_1T < torch.tensor(lengths)[:, None]
    # token 0 of a completion is predicted by the prompt's last position, token t > 0 by the completion's token t - 1
    r_N1, p_N1, start_N1 = torch.tensor(where_N3, dtype=torch.long).reshape(N, 3).split(1, dim=1)
    pred_NT = (r_N1 * L + torch.where(t_1T == 0, p_N1 - 1, start_N1 + t_1T - 1)) * valid_NT
    tokens_NT = input_ids_NS[:, P:] * valid_NT
    return PackedGroups(ids_RL, seg_RL, pos_RL, pred_NT, tokens_NT, valid_NT)


def shared_prefix_logprobs(model: nn.Module, input_ids_NS: torch.Tensor, attention_mask_NS: torch.Tensor,
                           completion_mask_NT: torch.Tensor, group_ids_N: torch.Tensor, *,
                           with_entropy: bool = False, max_row_len: int | None = None,
                           multiple: int | None = None) -> TokenLogprobs:
    """Log-probs (and optionally entropies, without grad) of every completion token, 0 past each completion's end.

    Same contract as ``completion_logprobs`` (runs under the caller's grad mode); the rows passed are one forward.
    ``max_row_len`` None = ``ROW_FACTOR`` × the padded row width S (0 = one row per group, however long);
    ``multiple`` (packed width rounding) None = 64 on CUDA, 1 elsewhere.
    """
    if max_row_len is None:
        max_row_len = ROW_FACTOR * input_ids_NS.shape[1]
    device = next(model.parameters()).device
    packed = pack_groups(input_ids_NS.cpu(), attention_mask_NS.cpu(), completion_mask_NT.cpu(), group_ids_N.cpu(),
                         max_row_len=max_row_len,
                         multiple=multiple or (64 if device.type == "cuda" else 1))
    valid_NT = packed.valid_NT.to(device)
    seg_RL = packed.seg_RL.to(device)
    ids_RL, pos_RL, allow_R1LL = packed.ids_RL.to(device), packed.pos_RL.to(device), shared_prefix_mask(seg_RL)
    flat_M = packed.pred_NT.to(device)[valid_NT]  # logits only where a real token is predicted
    if _is_ours(model):
        logits_MV = model(input_ids=ids_RL, doc_ids=seg_RL, position_ids=pos_RL, attn_mask_B1TT=allow_R1LL,
                          logits_at=flat_M).logits
    else:
        logits_MV = _hf_logits(model, ids_RL, pos_RL, allow_R1LL, flat_M)
    logits_1MV = logits_MV[None]
    logp_NT = torch.zeros(valid_NT.shape, dtype=torch.float32, device=device)
    logp_NT[valid_NT] = gather_logprobs(logits_1MV, packed.tokens_NT.to(device)[valid_NT][None])[0]
    entropy_NT = None
    if with_entropy:
        with torch.no_grad():
            entropy_NT = torch.zeros_like(logp_NT)
            entropy_NT[valid_NT] = entropy_from_logits(logits_1MV)[0].float()
    return TokenLogprobs(logp_NT, entropy_NT)
