"""Dense Llama-family models (Qwen2, Qwen3, Llama, Mistral) on the engine's own KV cache, so that they get the same
continuous batching, fixed-shape steps and CUDA graphs as DeepSeek-V3 instead of transformers' per-step forward.

The runner holds the transformers model by reference and calls its own submodules (norms, projections, rotary
embedding, MLP), so the numerics are transformers' up to the attention arithmetic; only the attention over the cache
is ours:
- Cache: one tensor per layer [slots + 1, max_len, 2·KVH·Dh] holding the roped keys then the values of every position
  (``LatentCache`` with that width; the scratch slot and the "never cleared, only positions ≤ the query are read"
  rule are the same as for MLA).
- Prefill: all prompt tokens of a right-padded batch at positions 0..T-1, keys/values written to the cache, causal
  SDPA over them (keys expanded from KVH to H heads).
- Decode: T new tokens per row at per-row positions attend over the first ``kv_len`` cached positions with the mask
  "key position ≤ query position"; grouped-query attention as one batched matmul per KV head (the G = H / KVH query
  heads of a group and the T tokens fold into its rows), softmax in fp32. Shapes are fixed given (batch bucket, T,
  kv_len bucket), so ``compile=True`` wraps the step in CUDA graphs through
  ``runner.GraphSteps``, as for DeepSeekRunner.

``unsupported_reason(model)`` says why a model must stay on the reference path (``hf_backend.py``): sliding-window
layers, per-layer rotary embeddings, or a module layout other than Llama's.

Legend: B rows, T new tokens, S key positions, H query heads, K key/value heads, G = H / K, Dh head dim, V vocab.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cache import LatentCache
from .runner import GraphSteps, cached_rows, in_slot_order, right_padded

SUPPORTED = ("llama", "qwen2", "qwen3", "mistral")
_LAYER_PARTS = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
_ATTN_PARTS = ("q_proj", "k_proj", "v_proj", "o_proj")


def unsupported_reason(model) -> str | None:
    """None when ``model`` (a transformers causal LM) can run on ``DenseRunner``, else the reason it cannot."""
    cfg = getattr(model, "config", None)
    kind = getattr(cfg, "model_type", None)
    if kind not in SUPPORTED:
        return f"model_type {kind!r} is not one of {SUPPORTED}"
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb") or \
            not hasattr(inner, "embed_tokens") or not hasattr(inner, "norm") or not hasattr(model, "lm_head"):
        return "not the Llama module layout (model.embed_tokens/layers/norm/rotary_emb, lm_head)"
    if getattr(cfg, "use_sliding_window", False) or (kind == "mistral" and getattr(cfg, "sliding_window", None)) \
            or "sliding_attention" in (getattr(cfg, "layer_types", None) or ()):
        return "sliding-window attention"
    for layer in inner.layers:
        if not all(hasattr(layer, p) for p in _LAYER_PARTS) or \
                not all(hasattr(layer.self_attn, p) for p in _ATTN_PARTS):
            return "a decoder layer without the Llama parts"
        if getattr(layer.self_attn, "sliding_window", None):
            return "sliding-window attention"
    return None


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _rope(x_BTHD: torch.Tensor, cos_BTD: torch.Tensor, sin_BTD: torch.Tensor) -> torch.Tensor:
    cos, sin = cos_BTD[:, :, None], sin_BTD[:, :, None]
    return x_BTHD * cos + _rotate_half(x_BTHD) * sin


class DenseRunner(GraphSteps):
    """Runs a Llama-family transformers model (held by reference) against ``cache``; the interface of
    ``DeepSeekRunner`` (prefill, decode, kv_bucket, compiled) so the engine's loop drives both."""

    def __init__(self, model, cache: LatentCache, compile: bool | dict = False):
        cfg = model.config
        self.model = model
        self.cache = cache
        self.n_heads = cfg.num_attention_heads
        self.n_kv = getattr(cfg, "num_key_value_heads", None) or self.n_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.n_heads
        self.draft_depths = 0
        self._setup_steps({"decode": self._forward_cached}, compile)

    @staticmethod
    def cache_width(config) -> int:
        heads = config.num_attention_heads
        n_kv = getattr(config, "num_key_value_heads", None) or heads
        return 2 * n_kv * (getattr(config, "head_dim", None) or config.hidden_size // heads)

    def _qkv(self, attn, x_BTD, cos, sin):
        b, t, _ = x_BTD.shape
        q = attn.q_proj(x_BTD).view(b, t, self.n_heads, self.head_dim)
        k = attn.k_proj(x_BTD).view(b, t, self.n_kv, self.head_dim)
        v = attn.v_proj(x_BTD).view(b, t, self.n_kv, self.head_dim)
        if hasattr(attn, "q_norm"):  # Qwen3: per-head RMSNorm of q and k before the rotation
            q, k = attn.q_norm(q), attn.k_norm(k)
        return _rope(q, cos, sin), _rope(k, cos, sin), v

    def _scale(self, attn) -> float:
        return float(getattr(attn, "scaling", self.head_dim ** -0.5))

    # ------------------------------------------------------------------ prefill
    @torch.no_grad()
    def prefill(self, prompts: list[list[int]], slots: list[int]) -> torch.Tensor:
        """Process whole prompts into their slots; returns the logits of each prompt's last token, [B, V]."""
        m = self.model
        device = m.lm_head.weight.device
        ids_BT, lens = right_padded(prompts, device)
        t = ids_BT.shape[1]
        slots_B = torch.tensor(slots, device=device)
        pos_BT = torch.arange(t, device=device).expand(len(prompts), t)
        h_BTD = m.model.embed_tokens(ids_BT)
        cos, sin = m.model.rotary_emb(h_BTD, pos_BT)
        g = self.n_heads // self.n_kv
        for i, layer in enumerate(m.model.layers):
            attn = layer.self_attn
            q, k, v = self._qkv(attn, layer.input_layernorm(h_BTD), cos, sin)
            self.cache.write(i, slots_B, pos_BT, torch.cat([k, v], dim=-1).flatten(2))
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2).repeat_interleave(g, dim=1),
                                               v.transpose(1, 2).repeat_interleave(g, dim=1), is_causal=True,
                                               scale=self._scale(attn))
            h_BTD = h_BTD + attn.o_proj(o.transpose(1, 2).reshape(len(prompts), t, -1))
            h_BTD = h_BTD + layer.mlp(layer.post_attention_layernorm(h_BTD))
        last_BD = h_BTD[torch.arange(len(prompts), device=device), torch.tensor(lens, device=device) - 1]
        return m.lm_head(m.model.norm(last_BD)).float()

    # ------------------------------------------------------------------ decode
    def _forward_cached(self, tokens_BT: torch.Tensor, start_B: torch.Tensor, slots_B: torch.Tensor, kv_len: int,
                        all_slots: bool = False, slot_order: bool = False):
        if all_slots:
            return in_slot_order(self._forward_cached, tokens_BT, start_B, slots_B, kv_len, False)
        m = self.model
        b, t = tokens_BT.shape
        pos_BT = start_B[:, None] + torch.arange(t, device=start_B.device)[None]
        keys_S = torch.arange(kv_len, device=start_B.device)
        mask_B11TS = keys_S[None, None, None, None, :] <= pos_BT[:, None, None, :, None]
        h_BTD = m.model.embed_tokens(tokens_BT)
        cos, sin = m.model.rotary_emb(h_BTD, pos_BT)
        g, kvh, dh = self.n_heads // self.n_kv, self.n_kv, self.head_dim
        for i, layer in enumerate(m.model.layers):
            attn = layer.self_attn
            q, k, v = self._qkv(attn, layer.input_layernorm(h_BTD), cos, sin)
            cache = self.cache.kv_SLX[i]
            cache[slots_B[:, None], pos_BT] = torch.cat([k, v], dim=-1).flatten(2).to(cache.dtype)
            kv_BSX = cached_rows(cache, slots_B, kv_len, slot_order).to(h_BTD.dtype).view(b, kv_len, kvh, 2 * dh)
            k_BKSD, v_BKSD = kv_BSX[..., :dh].transpose(1, 2), kv_BSX[..., dh:].transpose(1, 2)
            q_BKGTD = q.view(b, t, kvh, g, dh).permute(0, 2, 3, 1, 4)
            scores = torch.einsum("bkgtd,bksd->bkgts", q_BKGTD, k_BKSD).float() * self._scale(attn)
            p = scores.masked_fill(~mask_B11TS, float("-inf")).softmax(dim=-1).to(v_BKSD.dtype)
            o_BKGTD = torch.einsum("bkgts,bksd->bkgtd", p, v_BKSD)
            h_BTD = h_BTD + attn.o_proj(o_BKGTD.permute(0, 3, 1, 2, 4).reshape(b, t, -1))
            h_BTD = h_BTD + layer.mlp(layer.post_attention_layernorm(h_BTD))
        return m.lm_head(m.model.norm(h_BTD)).float(), h_BTD

    @torch.no_grad()
    def decode(self, tokens_BT: torch.Tensor, start_B: torch.Tensor, slots_B: torch.Tensor, kv_len: int,
               all_slots: bool = False):
        """Logits [B, T, V] (fp32) of T new tokens per row placed at positions start..start+T-1; ``all_slots`` as
        for ``DeepSeekRunner.decode``."""
        return self._step("decode", tokens_BT, start_B, slots_B, kv_len, all_slots)[0]
