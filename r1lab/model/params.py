"""Parameter, FLOP and KV-cache accounting computed from the config alone (no weights are built).

Conventions (chosen so that the released config gives the published 671B total / 37B active):
- total = every main-model parameter (embedding, head, all experts, norms, routers); MTP modules counted apart;
- active = the parameters one token touches: its one embedding row (not the whole table), the full output head,
  K_r of the N_r routed experts, the router and shared experts fully. For the released config this gives 36.63B
  (the report says "37B"; counting the whole embedding table instead would give 37.55B);
- forward FLOPs per token = 2 × active matmul parameters (embedding lookup excluded) + attention scores
  2·H·(qk_head_dim + v_head_dim)·context per layer (causal average: context = seq_len / 2);
- KV cache per token: the latent (kv_lora_rank + qk_rope_head_dim) per layer vs an expanded per-head cache
  H·(qk_head_dim + v_head_dim) per layer (what transformers keeps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .config import DeepSeekV3Config


@dataclass
class ModelStats:
    total_params: int
    active_params: int
    mtp_params: int
    mtp_active_params: int
    flops_per_token_fwd: float
    flops_per_token_train: float
    kv_bytes_per_token_latent: int
    kv_bytes_per_token_expanded: int

    def as_dict(self) -> dict:
        return asdict(self)


def _attention_params(c: DeepSeekV3Config) -> int:
    d, h = c.hidden_size, c.num_attention_heads
    if c.q_lora_rank is None:
        q = d * h * c.qk_head_dim
    else:
        q = d * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * h * c.qk_head_dim
    kv = d * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank
    kv += c.kv_lora_rank * h * (c.qk_nope_head_dim + c.v_head_dim)
    return q + kv + h * c.v_head_dim * d


def _block_params(c: DeepSeekV3Config, layer_idx: int) -> tuple[int, int]:
    """(total, active) parameters of one decoder block."""
    d = c.hidden_size
    attn = _attention_params(c) + 2 * d
    if not c.is_moe_layer(layer_idx):
        ffn = 3 * d * c.intermediate_size
        return attn + ffn, attn + ffn
    expert = 3 * d * c.moe_intermediate_size
    router = c.n_routed_experts * d
    shared = c.n_shared_experts * expert
    total = attn + router + shared + c.n_routed_experts * expert
    active = attn + router + shared + c.num_experts_per_tok * expert
    return total, active


def model_stats(c: DeepSeekV3Config, seq_len: int = 4096, bytes_per_value: int = 2) -> ModelStats:
    d, v = c.hidden_size, c.vocab_size
    embed = v * d
    head = 0 if c.tie_word_embeddings else v * d
    total = embed + head + d  # + final norm
    active = d + v * d + d  # one embedding row, the head (tied or not), the final norm
    matmul_active = head if head else v * d
    for i in range(c.num_hidden_layers):
        t, a = _block_params(c, i)
        total += t
        active += a
        matmul_active += a
    mtp_total = mtp_active = 0
    for k in range(c.num_nextn_predict_layers):
        t, a = _block_params(c, c.num_hidden_layers + k)
        extra = 2 * d * d + 3 * d  # eh_proj, enorm, hnorm, shared_head.norm
        mtp_total += t + extra
        mtp_active += a + extra
    attn_flops = 2 * c.num_hidden_layers * c.num_attention_heads * (c.qk_head_dim + c.v_head_dim) * (seq_len / 2)
    fwd = 2 * matmul_active + attn_flops
    latent = c.num_hidden_layers * (c.kv_lora_rank + c.qk_rope_head_dim) * bytes_per_value
    expanded = c.num_hidden_layers * c.num_attention_heads * (c.qk_head_dim + c.v_head_dim) * bytes_per_value
    return ModelStats(total, active, mtp_total, mtp_active, fwd, 3 * fwd, latent, expanded)


def format_stats(s: ModelStats, seq_len: int) -> str:
    def big(n: float) -> str:
        for unit, div in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
            if abs(n) >= div:
                return f"{n / div:.2f}{unit}"
        return f"{n:.0f}"

    return "\n".join([
        f"total parameters      {big(s.total_params)} ({s.total_params:,})",
        f"active parameters     {big(s.active_params)} ({s.active_params:,}) per token",
        f"MTP parameters        {big(s.mtp_params)} total, {big(s.mtp_active_params)} active (counted apart)",
        f"FLOPs per token       {big(s.flops_per_token_fwd)} forward, {big(s.flops_per_token_train)} train "
        f"(context {seq_len})",
        f"KV cache per token    {s.kv_bytes_per_token_latent:,} B latent (MLA) vs "
        f"{s.kv_bytes_per_token_expanded:,} B expanded per-head "
        f"({s.kv_bytes_per_token_expanded / s.kv_bytes_per_token_latent:.1f}× more), bf16",
    ])
