"""DeepSeekMoE with auxiliary-loss-free load balancing (V3 report §2.1.2, eq. 12-20).

Per token: scores s = sigmoid(router logits) (fp32; softmax optional, as V2), selection scores s + b where the bias b
(``e_score_correction_bias``, fp32 buffer) only decides *which* experts run; group-limited routing keeps the
``topk_group`` groups with the largest sum of their top-2 selection scores (other groups masked with -inf, as the
official code and torchtitan — older transformers used 0.0); the top-k experts' *unbiased* scores are normalised to sum
1 and scaled by ``routed_scaling_factor``. Shared experts always run. No token dropping.

Balancing: every training forward adds the tokens routed to each expert to ``tokens_per_expert``; after the optimizer
step the trainer calls ``update_bias(gamma)``: b_i += γ·sign(mean_count − count_i) — exactly the report's sign rule;
torchtitan additionally subtracts the mean of the updates, we do not. The complementary sequence-wise balance loss
(eq. 17-20) is returned by ``forward`` per call: L = Σ_i f_i P_i with f_i = N_r/(K_r·T) Σ_t 1[i ∈ TopK(t)] and
P_i = (1/T) Σ_t s_{i,t}/Σ_j s_{j,t}, computed per sequence (each batch row; padding excluded) and averaged over rows.
The trainer multiplies it by α.

Two expert paths with equal results (tested): ``loop`` (readable: one matmul per expert over its tokens) and
``grouped`` (tokens sorted by expert, one ``torch._grouped_mm`` per projection; bf16 on CUDA, fp32 on CPU; falls back to
per-segment matmuls where the grouped kernel cannot run, e.g. unaligned dims).

Legend: N tokens (B·T flattened), D hidden, E routed experts, K experts per token, I expert width, G groups.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import DeepSeekV3Config
from .fp32_buffers import KeepsFP32Buffers


CPU_INDEX_ADD = True  # the grouped path's combine on a CPU (``Experts.forward_grouped``); off = the GPU's way


class MLP(nn.Module):
    """SwiGLU FFN: down(silu(gate(x)) · up(x)). Used for dense layers and the (fused) shared experts."""

    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Router(KeepsFP32Buffers):
    """The gate: fp32 scores, selection-only bias, group-limited top-k."""

    fp32_buffers = ("e_score_correction_bias",)

    def __init__(self, config: DeepSeekV3Config):
        super().__init__()
        self.n_experts, self.top_k = config.n_routed_experts, config.num_experts_per_tok
        self.n_group, self.topk_group = config.n_group, config.topk_group
        self.scale, self.normalise = config.routed_scaling_factor, config.norm_topk_prob
        self.scoring = config.scoring_func
        self.weight = nn.Parameter(torch.empty(self.n_experts, config.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(self.n_experts, dtype=torch.float32))

    def forward(self, x_ND: torch.Tensor):
        """Returns (weights_NK fp32, indices_NK, scores_NE fp32 unbiased)."""
        # Autocast would run this linear in bf16 even on fp32 inputs (linear is on its low-precision list), and
        # routing on 8-bit-mantissa scores picks other experts on near-ties than the engine's fp32 router does.
        with torch.autocast(x_ND.device.type, enabled=False):
            return self._route(x_ND)

    def _route(self, x_ND: torch.Tensor):
        logits_NE = F.linear(x_ND.float(), self.weight.float())
        scores_NE = logits_NE.sigmoid() if self.scoring == "sigmoid" else logits_NE.softmax(dim=-1)
        choice_NE = scores_NE.detach() + self.e_score_correction_bias.float()
        if self.n_group > 1:
            n = choice_NE.shape[0]
            grouped_NGX = choice_NE.view(n, self.n_group, self.n_experts // self.n_group)  # n may be 0
            if self.scoring == "sigmoid":
                group_NG = grouped_NGX.topk(2, dim=-1).values.sum(-1)
            else:
                group_NG = grouped_NGX.amax(dim=-1)
            keep_NG = torch.zeros_like(group_NG, dtype=torch.bool)
            keep_NG.scatter_(1, group_NG.topk(self.topk_group, dim=-1).indices, True)
            choice_NE = choice_NE.masked_fill(~keep_NG[:, :, None].expand_as(grouped_NGX).reshape(n, self.n_experts),
                                              float("-inf"))
        indices_NK = choice_NE.topk(self.top_k, dim=-1).indices
        weights_NK = scores_NE.gather(1, indices_NK)
        if self.normalise:
            weights_NK = weights_NK / (weights_NK.sum(-1, keepdim=True) + 1e-20)
        return weights_NK * self.scale, indices_NK, scores_NE


class Experts(nn.Module):
    """Routed experts stored stacked: ``gate_up_proj`` [E, 2I, D] (gate rows first) and ``down_proj`` [E, D, I].

    Checkpoints use the hub's per-expert names (``experts.{j}.gate_proj.weight`` …); see ``checkpoint.py``.
    """

    def __init__(self, config: DeepSeekV3Config):
        super().__init__()
        e, d, i = config.n_routed_experts, config.hidden_size, config.moe_intermediate_size
        self.n_experts, self.inner = e, i
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * i, d))
        self.down_proj = nn.Parameter(torch.empty(e, d, i))
        self.impl = config.moe_impl

    def forward(self, x_ND: torch.Tensor, weights_NK: torch.Tensor, indices_NK: torch.Tensor) -> torch.Tensor:
        if self.impl == "loop":
            return self.forward_loop(x_ND, weights_NK, indices_NK)
        return self.forward_grouped(x_ND, weights_NK, indices_NK)

    def _expert(self, j: int, x: torch.Tensor) -> torch.Tensor:
        gate, up = F.linear(x, self.gate_up_proj[j].to(x.dtype)).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.down_proj[j].to(x.dtype))

    def forward_loop(self, x_ND, weights_NK, indices_NK) -> torch.Tensor:
        """Reference path: for each expert, gather its tokens, run it, scatter-add the weighted output."""
        out_ND = torch.zeros_like(x_ND)
        for j in range(self.n_experts):
            token_idx, slot = torch.where(indices_NK == j)
            if token_idx.numel() == 0:
                continue
            y = self._expert(j, x_ND[token_idx]) * weights_NK[token_idx, slot, None].to(x_ND.dtype)
            out_ND.index_add_(0, token_idx, y)
        return out_ND

    def forward_grouped(self, x_ND, weights_NK, indices_NK) -> torch.Tensor:
        """Fast path: sort the N·K (token, expert) pairs by expert, one grouped GEMM per projection, then sum each
        token's K weighted outputs. Two ways to combine, chosen by device:
        - a GPU (and a CPU with ``CPU_INDEX_ADD`` off): unsort by one permutation scatter, then weight and sum over K.
          Every scatter writes a permutation (no two writes to one row), so forward and backward are deterministic on
          a GPU too, unlike an atomic ``index_add_`` of the K outputs per token;
        - a CPU: weight the sorted rows and ``index_add_`` them into their tokens (deterministic on a CPU); fewer
          passes over the N·K rows: a cpu-demo pretraining step 1.01-1.06×, bitwise equal to the other way at K = 2
          (``benchmarks/cpu_step_fusions.py``, tested)."""
        n, k = indices_NK.shape
        if x_ND.is_cuda and torch.is_autocast_enabled("cuda"):  # fp32 master weights under autocast: compute in
            x_ND = x_ND.to(torch.get_autocast_dtype("cuda"))     # the autocast dtype, as F.linear would
        flat_expert = indices_NK.reshape(-1)
        order = torch.argsort(flat_expert, stable=True)
        counts_E = expert_counts(flat_expert, self.n_experts)
        if x_ND.device.type == "cpu" and CPU_INDEX_ADD:
            token = order // k
            y_sorted = self.ffn_sorted(x_ND.index_select(0, token), counts_E)
            y_sorted = y_sorted * weights_NK.reshape(-1)[order, None].to(y_sorted.dtype)
            return y_sorted.new_zeros(n, y_sorted.shape[-1]).index_add_(0, token, y_sorted)
        x_sorted = x_ND[:, None].expand(n, k, x_ND.shape[-1]).reshape(n * k, -1)[order]
        y_sorted = self.ffn_sorted(x_sorted, counts_E)
        y_XD = torch.empty_like(y_sorted).index_copy_(0, order, y_sorted)  # X = N·K pairs back in token order
        return (y_XD.view(n, k, -1) * weights_NK[..., None].to(y_XD.dtype)).sum(dim=1)

    def ffn_sorted(self, x_sorted: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        """Every expert's SwiGLU over its contiguous run of rows (``counts_E[j]`` rows for expert j, in order).
        ``r1lab.fp8_moe.FP8Experts`` overrides this one step to run the same GEMMs in FP8."""
        w_gate_up, w_down = self.gate_up_proj.to(x_sorted.dtype), self.down_proj.to(x_sorted.dtype)
        if grouped_mm_ok(x_sorted, w_gate_up, w_down):
            offs = torch.cumsum(counts_E, 0).to(torch.int32)
            gate, up = torch._grouped_mm(x_sorted, w_gate_up.transpose(-2, -1), offs=offs).chunk(2, dim=-1)
            return torch._grouped_mm(F.silu(gate) * up, w_down.transpose(-2, -1), offs=offs)
        parts = torch.split(x_sorted, counts_E.tolist())
        return torch.cat([self._expert(j, part) for j, part in enumerate(parts)], dim=0)


def expert_counts(expert_ids: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Tokens per expert without a host sync (``torch.bincount`` syncs on CUDA to size its output)."""
    counts = torch.zeros(n_experts, dtype=torch.int64, device=expert_ids.device)
    return counts.scatter_add_(0, expert_ids, torch.ones_like(expert_ids))


def grouped_mm_ok(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> bool:
    """torch._grouped_mm needs 16-byte aligned rows; on CUDA it is the bf16 Hopper kernel, on CPU any float dtype."""
    if not hasattr(torch, "_grouped_mm"):
        return False
    if x.is_cuda and (x.dtype != torch.bfloat16 or torch.cuda.get_device_capability(x.device)[0] < 9):
        return False
    if not x.is_cuda and x.dtype != torch.bfloat16 and torch.compiler.is_compiling():
        return False  # the op's shape check used while tracing accepts bf16 only, though CPU eager runs any float
    size = x.element_size()
    return all((dim * size) % 16 == 0 for dim in (x.shape[-1], w1.shape[1], w2.shape[1], w2.shape[2]))


class MoE(KeepsFP32Buffers):
    """Shared experts + routed experts; records token counts for bias updates and returns the balance loss."""

    fp32_buffers = ("tokens_per_expert",)

    def __init__(self, config: DeepSeekV3Config):
        super().__init__()
        self.gate = Router(config)
        self.experts = Experts(config)
        self.shared_experts = (MLP(config.hidden_size, config.moe_intermediate_size * config.n_shared_experts)
                               if config.n_shared_experts > 0 else None)
        self.register_buffer("tokens_per_expert", torch.zeros(config.n_routed_experts), persistent=False)

    def forward(self, x_BTD: torch.Tensor, valid_BT: torch.Tensor | None = None):
        """Returns (y_BTD, balance_loss scalar fp32 — None in eval mode). ``valid_BT`` marks real (non-padding)
        tokens; in training mode the routed-token counts accumulate for ``update_bias``."""
        b, t, d = x_BTD.shape
        x_ND = x_BTD.reshape(-1, d)
        weights_NK, indices_NK, scores_NE = self.gate(x_ND)
        y_ND = self.experts(x_ND, weights_NK, indices_NK)
        if self.shared_experts is not None:
            y_ND = y_ND + self.shared_experts(x_ND)
        valid_N = None if valid_BT is None else valid_BT.reshape(-1)
        if not self.training:  # counts and the balance loss are training signals only
            return y_ND.view(b, t, d), None
        with torch.no_grad():
            routed_NK = indices_NK if valid_N is None else indices_NK[valid_N]
            self.tokens_per_expert += expert_counts(routed_NK.reshape(-1), self.gate.n_experts).float()
        balance = sequence_balance_loss(scores_NE.view(b, t, -1), indices_NK.view(b, t, -1), valid_BT)
        return y_ND.view(b, t, d), balance

    @torch.no_grad()
    def update_bias(self, gamma: float) -> dict[str, float]:
        """Sign-rule bias update from the counts since the last call; resets the counts; returns load max/mean."""
        counts = self.tokens_per_expert
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
        mean = counts.mean()
        stats = {"load_max_over_mean": float(counts.max() / mean) if mean > 0 else 0.0, "tokens": float(counts.sum())}
        if gamma > 0 and mean > 0:
            self.gate.e_score_correction_bias += gamma * torch.sign(mean - counts)
        counts.zero_()
        return stats


def sequence_balance_loss(scores_BTE: torch.Tensor, indices_BTK: torch.Tensor,
                          valid_BT: torch.Tensor | None = None) -> torch.Tensor:
    """Complementary sequence-wise balance loss Σ_i f_i·P_i, averaged over sequences (V3 eq. 17-20, without α).

    >>> s = torch.tensor([[[0.9, 0.1], [0.2, 0.8]]])          # 1 sequence, 2 tokens, 2 experts
    >>> idx = torch.tensor([[[0], [1]]])                        # top-1: token 0 → expert 0, token 1 → expert 1
    >>> round(float(sequence_balance_loss(s, idx)), 4)          # f = [1, 1]; P = [0.55, 0.45]
    1.0
    """
    b, t, e = scores_BTE.shape
    k = indices_BTK.shape[-1]
    valid = torch.ones(b, t, dtype=scores_BTE.dtype, device=scores_BTE.device) if valid_BT is None \
        else valid_BT.to(scores_BTE.dtype)
    n_tok_B = valid.sum(1).clamp(min=1)
    normalised_BTE = scores_BTE / scores_BTE.sum(-1, keepdim=True)
    p_BE = (normalised_BTE * valid[..., None]).sum(1) / n_tok_B[:, None]
    chosen_BTE = torch.zeros_like(scores_BTE).scatter_(-1, indices_BTK, 1.0)
    f_BE = (chosen_BTE * valid[..., None]).sum(1) * e / (k * n_tok_B[:, None])
    has_tokens = (valid.sum(1) > 0).to(scores_BTE.dtype)
    return ((f_BE.detach() * p_BE).sum(-1) * has_tokens).sum() / has_tokens.sum().clamp(min=1)
