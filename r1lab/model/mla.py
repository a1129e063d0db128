"""Multi-head Latent Attention (DeepSeek-V2 report §2.1, V3 report §2.1.1), naive and absorbed side by side.

Keys and values are compressed jointly into a latent c_KV (kv_lora_rank) that is RMS-normalised; per-head k_nope and v
are up-projected from it by W_UKV (``kv_b_proj``). A single RoPE key k_pe (qk_rope_head_dim) is computed from the hidden
state directly and shared by all heads. Queries are low-rank (``q_a_proj`` → RMSNorm → ``q_b_proj``) or direct
(``q_proj``, q_lora_rank = None). Weight names are the checkpoint names of DeepSeek and transformers.

Two paths with equal results (tested):
- ``forward``: the naive path used for training and prefill — expand K/V per head, then SDPA (causal, or an explicit
  boolean mask for packed documents / padding).
- ``attend_absorbed``: the decode path of the inference engine — W_UK folded into the query and W_UV applied after
  attention, so attention runs over the latent cache only: RMSNorm(c_KV) [C] + roped k_pe [R] per token per layer.

Legend: B batch, T query tokens, S key tokens, D hidden, H heads, K qk_nope_head_dim, R qk_rope_head_dim,
V v_head_dim, C kv_lora_rank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import DeepSeekV3Config
from .norm import RMSNorm
from .rope import apply_rope_interleaved, softmax_scale


class MLA(nn.Module):
    def __init__(self, config: DeepSeekV3Config):
        super().__init__()
        d, h = config.hidden_size, config.num_attention_heads
        self.n_heads = h
        self.nope_dim, self.rope_dim, self.v_dim = config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
        self.kv_rank = config.kv_lora_rank
        qk_dim = config.qk_head_dim
        if config.q_lora_rank is None:
            self.q_proj = nn.Linear(d, h * qk_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(d, config.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(config.q_lora_rank, config.rms_norm_eps)
            self.q_b_proj = nn.Linear(config.q_lora_rank, h * qk_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(d, config.kv_lora_rank + config.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(config.kv_lora_rank, config.rms_norm_eps)
        self.kv_b_proj = nn.Linear(config.kv_lora_rank, h * (config.qk_nope_head_dim + config.v_head_dim), bias=False)
        self.o_proj = nn.Linear(h * config.v_head_dim, d, bias=False)
        self.scale = softmax_scale(config)

    # ------------------------------------------------------------------ projections shared by both paths
    def queries(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """Per-head (q_nope_BHTK, roped q_pe_BHTR)."""
        b, t, _ = x_BTD.shape
        if hasattr(self, "q_proj"):
            q = self.q_proj(x_BTD)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x_BTD)))
        q_BHTQ = q.view(b, t, self.n_heads, self.nope_dim + self.rope_dim).transpose(1, 2)
        q_nope_BHTK, q_pe_BHTR = q_BHTQ.split([self.nope_dim, self.rope_dim], dim=-1)
        return q_nope_BHTK, apply_rope_interleaved(q_pe_BHTR, cos[:, None], sin[:, None])

    def latents(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        """What the decode cache stores: (RMSNorm(c_KV)_BTC, roped k_pe_BTR)."""
        c_kv_BTC, k_pe_BTR = self.kv_a_proj_with_mqa(x_BTD).split([self.kv_rank, self.rope_dim], dim=-1)
        return self.kv_a_layernorm(c_kv_BTC), apply_rope_interleaved(k_pe_BTR, cos, sin)

    # ------------------------------------------------------------------ naive path (training, prefill)
    def forward(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask_B1TS: torch.Tensor | None = None) -> torch.Tensor:
        """Causal self-attention over ``x``; ``mask_B1TS`` (bool, True = may attend) replaces the causal mask."""
        b, t, _ = x_BTD.shape
        q_nope_BHTK, q_pe_BHTR = self.queries(x_BTD, cos, sin)
        c_kv_BTC, k_pe_BTR = self.latents(x_BTD, cos, sin)
        kv_BTHX = self.kv_b_proj(c_kv_BTC).view(b, t, self.n_heads, self.nope_dim + self.v_dim)
        k_nope_BHTK, v_BHTV = kv_BTHX.transpose(1, 2).split([self.nope_dim, self.v_dim], dim=-1)
        q_BHTQ = torch.cat([q_nope_BHTK, q_pe_BHTR], dim=-1)
        k_BHTQ = torch.cat([k_nope_BHTK, k_pe_BTR[:, None].expand(-1, self.n_heads, -1, -1)], dim=-1)
        o_BHTV = sdpa(q_BHTQ, k_BHTQ, v_BHTV, mask_B1TS, self.scale)
        return self.o_proj(o_BHTV.transpose(1, 2).reshape(b, t, self.n_heads * self.v_dim))

    # ------------------------------------------------------------------ absorbed path (decode over the latent cache)
    def absorbed_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_UK_HKC, W_UV_HVC) views of ``kv_b_proj.weight``."""
        w_HXC = self.kv_b_proj.weight.view(self.n_heads, self.nope_dim + self.v_dim, self.kv_rank)
        return w_HXC[:, : self.nope_dim], w_HXC[:, self.nope_dim:]

    def attend_absorbed(self, q_nope_BHTK: torch.Tensor, q_pe_BHTR: torch.Tensor, kv_BSX: torch.Tensor,
                        mask_B1TS: torch.Tensor | None) -> torch.Tensor:
        """Attention of T new queries over S cached latents, never expanding per-head K/V. Returns [B, T, D].

        kv_BSX: the cache rows as stored, [RMSNorm(c_KV) ; roped k_pe] (X = C + R), taken whole as the key.
        score = (q_nope·W_UK)·c_KV + q_pe·k_pe; output = W_O · W_UV · (P·c_KV). Every head shares the one key
        [c_KV ; k_pe] and the one value c_KV (multi-query form), so the heads and new tokens fold into the rows of a
        single batched matmul per row: the latent cache is read once, not once per head (replacing an SDPA call with
        keys expanded over heads and a boolean mask raised compiled decoding at batch 32 by 39% on an H100,
        docs/benchmarks.md). Softmax in fp32.
        """
        b, _, t, _ = q_nope_BHTK.shape
        w_uk_HKC, w_uv_HVC = self.absorbed_weights()
        q_abs_BHTC = torch.einsum("bhtk,hkc->bhtc", q_nope_BHTK, w_uk_HKC)
        q_BHTX = torch.cat([q_abs_BHTC, q_pe_BHTR], dim=-1)
        scores_BHTS = torch.einsum("bhtx,bsx->bhts", q_BHTX, kv_BSX).float() * self.scale
        if mask_B1TS is not None:
            scores_BHTS = scores_BHTS.masked_fill(~mask_B1TS, float("-inf"))
        p_BHTS = scores_BHTS.softmax(dim=-1).to(kv_BSX.dtype)
        o_BHTC = torch.einsum("bhts,bsc->bhtc", p_BHTS, kv_BSX[..., : self.kv_rank])
        o_BTHV = torch.einsum("bhtc,hvc->bthv", o_BHTC, w_uv_HVC)
        return self.o_proj(o_BTHV.reshape(b, t, self.n_heads * self.v_dim))


def sdpa(q_BHTQ: torch.Tensor, k_BHSQ: torch.Tensor, v_BHSV: torch.Tensor, mask_B1TS: torch.Tensor | None,
         scale: float) -> torch.Tensor:
    """Scaled dot-product attention, causal when ``mask_B1TS`` is None; returns [B, H, T, V].

    On the CPU, V is first zero-padded to the query/key width Q (MLA has V < Q: 32 < 48 in cpu-demo): PyTorch's CPU
    flash kernel takes one head width for q, k and v and otherwise falls back to the math path, which materialises
    the [B, H, T, S] scores and the boolean mask as floats. The padded columns of the output are zeros and are
    dropped, so the result is the same attention (tested against a written-out softmax, values and gradients); a
    cpu-demo training step runs 1.11× as fast at 256 tokens per row and 1.25× at 384 (``benchmarks/cpu_attention.py``,
    docs/benchmarks.md). Other devices get the unpadded call (unmeasured there).
    """
    v_dim, qk_dim = v_BHSV.shape[-1], q_BHTQ.shape[-1]
    pad = q_BHTQ.device.type == "cpu" and v_dim < qk_dim
    if pad:
        v_BHSV = F.pad(v_BHSV, (0, qk_dim - v_dim))
    if mask_B1TS is None:
        o_BHTV = F.scaled_dot_product_attention(q_BHTQ, k_BHSQ, v_BHSV, is_causal=True, scale=scale)
    else:
        o_BHTV = F.scaled_dot_product_attention(q_BHTQ, k_BHSQ, v_BHSV, attn_mask=mask_B1TS, scale=scale)
    return o_BHTV[..., :v_dim] if pad else o_BHTV
