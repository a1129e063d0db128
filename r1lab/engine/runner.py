"""Forward passes of DeepSeek-V3 over the latent cache: prefill, (multi-token) decode, MTP draft windows.

- Prefill (V2 report §2.1.2: the naive path for compute-bound prompt processing): the model's own SDPA attention over
  a right-padded batch of prompts, storing RMSNorm(c_KV) ‖ roped k_pe of every layer into the cache on the way.
- Decode (the absorbed path, V2 report §2.1.2 "W_UK absorbed into W_Q, W_UV into W_O"): T new tokens per row at
  per-row positions attend over the latent cache with ``MLA.attend_absorbed`` and the mask "key position ≤ query
  position". T = 1 is the ordinary decode step; T = k + 1 is the verification step of speculative decoding.
  All shapes are fixed given (batch bucket, T, kv_len bucket), so the step can be wrapped by
  ``torch.compile(mode="reduce-overhead")`` (CUDA graphs); that wrapper is selected once at construction and only
  on CUDA, and any failure to compile falls back to eager with a warning. The verification step (T = k + 1) and the
  MTP draft windows (fixed width k + 1) are compiled the same way, so a speculative round runs in graphs too.
- MTP windows (V3 report §2.2 used as the draft model, §5.4.3): depth j at positions p reads h^{j-1}_p and the token
  t_{p+j}, runs its module over its own latent cache, stores h^j_p and returns the logits at each row's last position.

Legend: B rows, T new tokens, S key positions, D hidden, V vocab, W window, X latent width (C + R).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from ..model.moe import grouped_mm_ok
from ..model.transformer import segment_causal_mask
from .cache import LatentCache, bucket

log = logging.getLogger(__name__)


def _positions(start_B: torch.Tensor, t: int) -> torch.Tensor:
    return start_B[:, None] + torch.arange(t, device=start_B.device)[None]


def _decode_mask(pos_BT: torch.Tensor, kv_len: int) -> torch.Tensor:
    """Bool [B, 1, T, S]: key position ≤ query position."""
    keys_S = torch.arange(kv_len, device=pos_BT.device)
    return (keys_S[None, None, None, :] <= pos_BT[:, None, :, None])


def cached_rows(kv_SLX: torch.Tensor, slots_B: torch.Tensor, kv_len: int, in_slot_order: bool) -> torch.Tensor:
    """The first kv_len cached positions of each row's slot, [B, kv_len, X]: a gathered copy, or — when row i is slot
    i (``in_slot_order``) — a view of the cache itself, which saves copying the whole context every layer and step."""
    return kv_SLX[: slots_B.shape[0], :kv_len] if in_slot_order else kv_SLX[slots_B, :kv_len]


def in_slot_order(step, tokens_BT: torch.Tensor, start_B: torch.Tensor, slots_B: torch.Tensor, *rest):
    """Run ``step(tokens, start, slots, *rest, True)`` with the rows sorted by slot — for a batch that holds every
    cache slot exactly once, so that row j is slot j — and return its outputs in the caller's row order."""
    order_B = slots_B.argsort()
    out = step(tokens_BT[order_B], start_B[order_B], slots_B[order_B], *rest, True)
    return tuple(t[slots_B] for t in out)  # row i (slot s_i) sits at sorted position s_i


def cached_block(block, h_BTD, cos, sin, kv_SLX, slots_B, pos_BT, mask_B1TS, kv_len: int,
                 dense_experts_max: int = 0, slot_order: bool = False):
    """One decoder block (a main layer or an MTP module's block) for new tokens over the latent cache.
    ``slot_order``: row i is slot i (see ``cached_rows``)."""
    attn = block.self_attn
    x_BTD = block.input_layernorm(h_BTD)
    q_nope_BHTK, q_pe_BHTR = attn.queries(x_BTD, cos, sin)
    c_kv_BTC, k_pe_BTR = attn.latents(x_BTD, cos, sin)
    kv_SLX[slots_B[:, None], pos_BT] = torch.cat([c_kv_BTC, k_pe_BTR], dim=-1).to(kv_SLX.dtype)
    kv_BSX = cached_rows(kv_SLX, slots_B, kv_len, slot_order).to(h_BTD.dtype)
    h_BTD = h_BTD + attn.attend_absorbed(q_nope_BHTK, q_pe_BHTR, kv_BSX, mask_B1TS)
    return ffn_decode(block, h_BTD, dense_experts_max)


def ffn_decode(block, h_BTD: torch.Tensor, dense_experts_max: int = 0) -> torch.Tensor:
    """The block's FFN half for decoding: as ``DecoderLayer.ffn`` but without the balance loss, with sync-free expert
    paths that a CUDA graph can capture (no host synchronisation), chosen by the number of tokens N:
    - N·K ≤ E (few tokens): the chosen experts' weights are gathered per (token, expert) pair and applied with one
      batched matmul per projection;
    - else, N ≤ ``dense_experts_max`` (opt-in, default 0): every expert on every token (``dense_experts``) — with
      N·K > E nearly every expert's weights are read anyway, and below a few hundred tokens a GPU decode step is
      bound by reading them, so the E/K-fold extra FLOPs may be free, while the grouped path's sort/gather/scatter
      kernels and its grouped GEMM over groups of a few rows go away. Unmeasured on a GPU so far: off by default
      (``benchmarks/generate.py --dense-experts-max 64`` compares); on a CPU the extra FLOPs cost time;
    - more tokens: the model's own grouped path (tokens sorted by expert), where its grouped GEMM runs without a host
      sync; where it would not (fp32 on CUDA or under compile, no ``torch._grouped_mm``, unaligned sizes) the
      per-expert fallback reads the counts on the host, a graph break and a recompilation for every new routing
      inside a compiled step, so a compiled step takes ``dense_experts`` instead (equal up to summation order). Eager
      steps keep the fallback: there the host read costs a sync, not a graph, and the dense path's E/K-fold FLOPs and
      E·N-row intermediates would grow with N (an eager MTP catch-up window spans whole prompts; CPU without
      ``torch._grouped_mm``)."""
    x_BTD = block.post_attention_layernorm(h_BTD)
    if not block.is_moe:
        return h_BTD + block.mlp(x_BTD)
    moe = block.mlp
    d = x_BTD.shape[-1]
    x_ND = x_BTD.reshape(-1, d)
    weights_NK, experts_NK, _ = moe.gate(x_ND)
    n, k = experts_NK.shape
    if n * k <= moe.experts.n_experts:
        flat = experts_NK.reshape(-1)
        gate_up_XID = moe.experts.gate_up_proj[flat].to(x_ND.dtype)  # X = N·K (token, expert) pairs
        down_XDI = moe.experts.down_proj[flat].to(x_ND.dtype)
        x_XD1 = x_ND.repeat_interleave(k, dim=0)[:, :, None]
        gate_XI, up_XI = torch.bmm(gate_up_XID, x_XD1).squeeze(-1).chunk(2, dim=-1)
        y_XD = torch.bmm(down_XDI, (F.silu(gate_XI) * up_XI)[:, :, None]).squeeze(-1)
        y_ND = (y_XD.view(n, k, d) * weights_NK[..., None].to(y_XD.dtype)).sum(dim=1)
    elif n <= dense_experts_max or (torch.compiler.is_compiling()
                                    and not grouped_mm_ok(x_ND, moe.experts.gate_up_proj, moe.experts.down_proj)):
        y_ND = dense_experts(moe.experts, x_ND, weights_NK, experts_NK)
    else:
        y_ND = moe.experts(x_ND, weights_NK, experts_NK)
    if moe.shared_experts is not None:
        y_ND = y_ND + moe.shared_experts(x_ND)
    return h_BTD + y_ND.view_as(h_BTD)


def dense_experts(experts, x_ND: torch.Tensor, weights_NK: torch.Tensor, experts_NK: torch.Tensor) -> torch.Tensor:
    """Σ_k w_nk · expert_{e_nk}(x_n) computed as Σ_e W_ne · expert_e(x_n) over all E experts, with W_NE the routing
    weights scattered into a zero matrix: two batched matmuls over the expert axis, no sorting. Equal to the grouped
    path up to summation order (tested); only worth it while reading the weights dominates (decode-sized N)."""
    n = x_ND.shape[0]
    w_NE = torch.zeros(n, experts.n_experts, dtype=x_ND.dtype, device=x_ND.device)
    w_NE.scatter_(1, experts_NK, weights_NK.to(x_ND.dtype))
    gate_up_EID = experts.gate_up_proj.to(x_ND.dtype)
    gate_ENI, up_ENI = torch.matmul(x_ND, gate_up_EID.transpose(1, 2)).chunk(2, dim=-1)
    y_END = torch.bmm(F.silu(gate_ENI) * up_ENI, experts.down_proj.to(x_ND.dtype).transpose(1, 2))
    return torch.einsum("ne,end->nd", w_NE, y_END)


def right_padded(prompts: list[list[int]], device) -> tuple[torch.Tensor, list[int]]:
    """(ids [B, T] with each prompt at the start of its row, zeros after; prompt lengths)."""
    lens = [len(p) for p in prompts]
    ids_BT = torch.zeros(len(prompts), max(lens), dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        ids_BT[i, : len(p)] = torch.tensor(p, dtype=torch.long)
    return ids_BT, lens


class GraphSteps:
    """What the runners share: their step functions run compiled or eagerly (chosen once at construction), a failing
    compiled step switches the runner to eager for good, and key lengths are bucketed to few shapes.

    compile: True = ``torch.compile(mode="reduce-overhead")`` (CUDA graphs) on CUDA, ignored on CPU; a dict = those
    torch.compile arguments on any device (tests trace the steps on CPU with ``{"backend": "eager", "fullgraph":
    True}``)."""

    cache: LatentCache

    def _setup_steps(self, steps: dict, compile: bool | dict) -> None:
        self._eager_steps, self._steps = dict(steps), dict(steps)
        self.compiled = False
        cache = self.cache
        if isinstance(compile, dict) or (compile and cache.kv_SLX[0].is_cuda):
            kwargs = compile if isinstance(compile, dict) else {"mode": "reduce-overhead"}
            try:
                import torch._dynamo
                # graphs per (batch bucket, T, kv bucket), and per depth for the MTP windows
                torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
                mutated = [t for t in [*cache.kv_SLX, *cache.hidden_SLD, cache.tokens_SL] if t is not None]
                for t in mutated:  # written in place: must keep their addresses in graphs
                    torch._dynamo.mark_static_address(t)
                self._steps = {name: torch.compile(fn, dynamic=False, **kwargs) for name, fn in steps.items()}
                self.compiled = True
            except Exception as err:  # noqa: BLE001 - any backend problem: stay eager
                log.warning("torch.compile unavailable (%s); decoding eagerly", err)
        elif compile:
            log.info("compile=True ignored off CUDA (CUDA graphs need a GPU)")

    def _step(self, name: str, *args):
        """Step ``name``: compiled, with outputs cloned (CUDA-graph outputs are reused buffers), or eager."""
        if not self.compiled:
            return self._eager_steps[name](*args)
        try:
            out = self._steps[name](*args)
        except Exception as err:  # noqa: BLE001
            log.warning("compiled %s failed (%s); switching to eager", name, err)
            self.compiled = False
            self._steps = dict(self._eager_steps)
            return self._eager_steps[name](*args)
        return tuple(t.clone() for t in out) if isinstance(out, tuple) else out.clone()

    def kv_bucket(self, n: int) -> int:
        """Keys to attend over for a longest context of n: multiples of 64 eagerly; powers of two (≥ 64) when the
        step is compiled, so that few CUDA graphs are recorded."""
        if self.compiled:
            return min(self.cache.max_len, max(64, 1 << (n - 1).bit_length()))
        return bucket(n, 64, self.cache.max_len)


class DeepSeekRunner(GraphSteps):
    """Runs ``model`` (a DeepSeekV3ForCausalLM, held by reference) against ``cache``; ``compile``: see GraphSteps."""

    def __init__(self, model, cache: LatentCache, draft_depths: int = 0, compile: bool | dict = False,
                 dense_experts_max: int = 0):
        self.model = model
        self.cache = cache
        # decode steps of at most this many tokens (and N·K > E) run every expert densely (see ffn_decode); 0 = never
        self.dense_experts_max = dense_experts_max
        self.n_layers = model.config.num_hidden_layers
        self.draft_depths = draft_depths
        self._setup_steps({"decode": self._main_forward, "MTP window": self._mtp_forward}, compile)

    # ------------------------------------------------------------------ prefill (naive path)
    @torch.no_grad()
    def prefill(self, prompts: list[list[int]], slots: list[int]) -> torch.Tensor:
        """Process whole prompts into their slots; returns the logits of each prompt's last token, [B, V]."""
        m = self.model
        device = m.lm_head.weight.device
        ids_BT, lens = right_padded(prompts, device)
        t = ids_BT.shape[1]
        lens_B = torch.tensor(lens, device=device)
        pos_BT = torch.arange(t, device=device).expand(len(prompts), t)
        valid_BT = pos_BT < lens_B[:, None]
        mask_B1TT = segment_causal_mask(valid_BT.long()) if min(lens) < t else None
        slots_B = torch.tensor(slots, device=device)
        h_BTD = m.model.embed_tokens(ids_BT)
        cos, sin = m.model.rotary(pos_BT, h_BTD.dtype)
        for i, layer in enumerate(m.model.layers):
            x_BTD = layer.input_layernorm(h_BTD)
            c_kv_BTC, k_pe_BTR = layer.self_attn.latents(x_BTD, cos, sin)
            self.cache.write(i, slots_B, pos_BT, torch.cat([c_kv_BTC, k_pe_BTR], dim=-1))
            h_BTD = h_BTD + layer.self_attn(x_BTD, cos, sin, mask_B1TT)
            h_BTD = layer.ffn(h_BTD, valid_BT if mask_B1TT is not None else None)[0]
        if self.draft_depths:
            self.cache.hidden_SLD[0][slots_B[:, None], pos_BT] = h_BTD.to(self.cache.hidden_SLD[0].dtype)
            self.cache.tokens_SL[slots_B[:, None], pos_BT] = ids_BT
        last_BD = h_BTD[torch.arange(len(prompts), device=device), lens_B - 1]
        return m.lm_head(m.model.norm(last_BD)).float()

    # ------------------------------------------------------------------ decode (absorbed path)
    def _main_forward(self, tokens_BT: torch.Tensor, start_B: torch.Tensor, slots_B: torch.Tensor, kv_len: int,
                      all_slots: bool = False, slot_order: bool = False):
        if all_slots:
            return in_slot_order(self._main_forward, tokens_BT, start_B, slots_B, kv_len, False)
        m = self.model
        t = tokens_BT.shape[1]
        pos_BT = _positions(start_B, t)
        mask_B1TS = _decode_mask(pos_BT, kv_len)
        h_BTD = m.model.embed_tokens(tokens_BT)
        cos, sin = m.model.rotary(pos_BT, h_BTD.dtype)
        for i, layer in enumerate(m.model.layers):
            h_BTD = cached_block(layer, h_BTD, cos, sin, self.cache.kv_SLX[i], slots_B, pos_BT, mask_B1TS, kv_len,
                                 self.dense_experts_max, slot_order)
        return m.lm_head(m.model.norm(h_BTD)).float(), h_BTD

    @torch.no_grad()
    def decode(self, tokens_BT: torch.Tensor, start_B: torch.Tensor, slots_B: torch.Tensor, kv_len: int,
               all_slots: bool = False):
        """Logits [B, T, V] (fp32) of T new tokens per row placed at positions start..start+T-1.

        all_slots: the batch holds every cache slot exactly once (its padding rows on free slots): the step then runs
        in slot order and attends over the cache itself, not a gathered copy (equal results, tested).
        With speculative decoding on, also records h^0 (last block output before the norm) and the tokens."""
        logits_BTV, h_BTD = self._step("decode", tokens_BT, start_B, slots_B, kv_len, all_slots)
        if self.draft_depths:
            pos_BT = _positions(start_B, tokens_BT.shape[1])
            self.cache.hidden_SLD[0][slots_B[:, None], pos_BT] = h_BTD.to(self.cache.hidden_SLD[0].dtype)
            self.cache.tokens_SL[slots_B[:, None], pos_BT] = tokens_BT
        return logits_BTV

    # ------------------------------------------------------------------ MTP draft depth over a window of positions
    @torch.no_grad()
    def mtp_window(self, depth: int, slots_B: torch.Tensor, start_B: torch.Tensor, count_B: torch.Tensor, w: int,
                   kv_len: int, eager: bool = False) -> torch.Tensor:
        """Run draft depth ``depth`` (1-based) at positions start..start+count-1 of each row (padded to ``w``).

        Inputs: h^{depth-1} from the hidden buffer and tokens t_{p+depth} from the token buffer (which must already
        hold the drafts of lower depths). Stores h^depth when a deeper depth needs it. Returns the draft logits at
        each row's last position, [B, V] fp32. ``eager``: skip the compiled graphs (the once-per-request catch-up
        over a prompt, whose width varies, would otherwise compile a graph per prompt length).
        """
        if eager:
            return self._mtp_forward(depth, slots_B, start_B, count_B, w, kv_len)
        return self._step("MTP window", depth, slots_B, start_B, count_B, w, kv_len)

    def _mtp_forward(self, depth: int, slots_B: torch.Tensor, start_B: torch.Tensor, count_B: torch.Tensor, w: int,
                     kv_len: int) -> torch.Tensor:
        m = self.model
        mtp = m.model.mtp[min(depth, len(m.model.mtp)) - 1]
        cache = self.cache
        limit = cache.max_len - 1
        pos_BW = _positions(start_B, w).clamp_max(limit)
        tok_BW = cache.tokens_SL[slots_B[:, None], (pos_BW + depth).clamp_max(limit)]
        h_prev_BWD = cache.hidden_SLD[depth - 1][slots_B[:, None], pos_BW].to(m.lm_head.weight.dtype)
        emb_BWD = m.model.embed_tokens(tok_BW)
        x_BWD = mtp.eh_proj(torch.cat([mtp.enorm(emb_BWD), mtp.hnorm(h_prev_BWD)], dim=-1))
        cos, sin = m.model.rotary(pos_BW, x_BWD.dtype)
        mask_B1WS = _decode_mask(pos_BW, kv_len)
        h_BWD = cached_block(mtp, x_BWD, cos, sin, cache.kv_SLX[self.n_layers + depth - 1], slots_B, pos_BW,
                             mask_B1WS, kv_len, self.dense_experts_max)
        if depth < self.draft_depths:
            cache.hidden_SLD[depth][slots_B[:, None], pos_BW] = h_BWD.to(cache.hidden_SLD[depth].dtype)
        last_BD = h_BWD[torch.arange(h_BWD.shape[0], device=h_BWD.device), count_B - 1]
        return m.lm_head(mtp.shared_head.norm(last_BD)).float()
