"""The DeepSeek-V3 decoder (V3 report §2): embedding → blocks (MLA + dense FFN or DeepSeekMoE) → RMSNorm → head.

Written for a single device; FSDP, torch.compile and FP8 are applied from outside (``train/distributed.py``,
``fp8.py``). Module names equal the checkpoint names of DeepSeek / transformers except the routed experts, which are
stacked for the grouped GEMM and converted in ``checkpoint.py``, and the MTP modules (``model.mtp.{k}`` here,
``model.layers.{num_hidden_layers + k}`` in checkpoints).

Losses (labels use the transformers convention: not shifted, -100 = ignore):
- ``loss``: next-token cross-entropy (fp32) — the pair (t, t+1) counts only inside one packed document;
- ``mtp_loss``: the mean over the D MTP depths of their cross-entropies (trainers add λ·mtp_loss);
- ``balance_loss``: the sequence-wise balance term summed over MoE layers (trainers add α·balance_loss); computed in
  training mode only (0 in eval mode, where routing statistics are not collected).
With ``return_logits=False`` (trainers that only need the losses) the CPU computes the two cross-entropies from the
head's input without materialising the logits (``loss.shifted_linear_cross_entropy``, tested equal to the reference
``loss.shifted_cross_entropy`` over logits, which every other call takes).

Legend: B batch, T tokens, D hidden, V vocab.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .config import DeepSeekV3Config
from .loss import shifted_cross_entropy, shifted_linear_cross_entropy
from .mla import MLA
from .moe import MLP, MoE
from .mtp import MTPLayer, mtp_forward
from .norm import RMSNorm
from .rope import RotaryEmbedding


@dataclass
class CausalLMOutput:
    logits: torch.Tensor | None  # None when the forward was asked for losses only (return_logits=False)
    loss: torch.Tensor | None = None
    mtp_loss: torch.Tensor | None = None
    balance_loss: torch.Tensor | None = None
    mtp_logits: list[torch.Tensor] = field(default_factory=list)
    hidden_states: torch.Tensor | None = None  # after the final norm

    def total_loss(self, mtp_weight: float, balance_alpha: float) -> torch.Tensor:
        """loss + λ·mtp_loss + α·balance_loss (the V3 pretraining objective)."""
        total = self.loss
        if self.mtp_loss is not None and mtp_weight:
            total = total + mtp_weight * self.mtp_loss
        if self.balance_loss is not None and balance_alpha:
            total = total + balance_alpha * self.balance_loss
        return total


class DecoderLayer(nn.Module):
    """Pre-norm block: h + MLA(norm(h)), then + FFN(norm(·)) with a dense or MoE FFN."""

    def __init__(self, config: DeepSeekV3Config, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = MLA(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.is_moe = config.is_moe_layer(layer_idx)
        self.mlp = MoE(config) if self.is_moe else MLP(config.hidden_size, config.intermediate_size)

    def forward(self, h_BTD, cos, sin, mask_B1TT=None, valid_BT=None):
        """Returns (h_BTD, balance_loss or None)."""
        h_BTD = h_BTD + self.self_attn(self.input_layernorm(h_BTD), cos, sin, mask_B1TT)
        return self.ffn(h_BTD, valid_BT)

    def ffn(self, h_BTD, valid_BT=None):
        """The FFN half of the block (shared with the inference engine's decode step)."""
        x = self.post_attention_layernorm(h_BTD)
        if self.is_moe:
            y, balance = self.mlp(x, valid_BT)
            return h_BTD + y, balance
        return h_BTD + self.mlp(x), None


class DeepSeekV3Model(nn.Module):
    def __init__(self, config: DeepSeekV3Config):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = RotaryEmbedding(config)
        self.mtp = nn.ModuleList(MTPLayer(config, config.num_hidden_layers + k)
                                 for k in range(config.num_nextn_predict_layers))


class DeepSeekV3ForCausalLM(nn.Module):
    """DeepSeek-V3 with its MTP modules. ``from_pretrained`` / ``save_pretrained`` use HF safetensors checkpoints."""

    def __init__(self, config: DeepSeekV3Config, init_weights: bool = True):
        super().__init__()
        self.config = config
        self.model = DeepSeekV3Model(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        if init_weights:
            self.init_weights()

    # ------------------------------------------------------------------ construction
    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Normal(0, initializer_range) for matrices and embeddings, ones for norms, zeros for router biases."""
        gen = None if seed is None else torch.Generator().manual_seed(seed)
        std = self.config.initializer_range
        for name, p in self.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float32).mul_(std))
        for module in self.modules():
            if isinstance(module, MoE):
                module.gate.e_score_correction_bias.zero_()
                module.tokens_per_expert.zero_()

    def reset_expert_counts(self) -> None:
        """Forget the tokens counted per expert since the last bias update (a training step that is redone)."""
        for module in self.moe_layers():
            module.tokens_per_expert.zero_()

    @classmethod
    def from_pretrained(cls, directory, dtype: torch.dtype | None = None, device="cpu", **kw):
        from .checkpoint import load_pretrained
        return load_pretrained(directory, dtype=dtype, device=device, **kw)

    def save_pretrained(self, directory, **kw):
        from .checkpoint import save_pretrained
        return save_pretrained(self, directory, **kw)

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, doc_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, return_mtp_logits: bool = False,
                logits_to_keep: int = 0, attn_mask_B1TT: torch.Tensor | None = None,
                logits_at: torch.Tensor | None = None, return_logits: bool = True,
                mtp_loss: bool = True) -> CausalLMOutput:
        """Full-sequence forward.

        input_ids [B, T]; labels [B, T] (unshifted, -100 ignored); doc_ids [B, T] packed-document ids (0 = padding,
        attention and next-token pairs stay inside one id, positions restart per document unless given);
        attention_mask [B, T] (1 = token, 0 = padding, for left/right padded batches); position_ids [B, T].
        ``logits_to_keep`` > 0 computes logits for the last that-many positions only.
        ``attn_mask_B1TT`` (bool, True = may attend) replaces the mask built from doc_ids / attention_mask, which then
        only mark padding (for the MoE statistics) and give default positions — for layouts that are not a list of
        documents, such as a prompt shared by several completions (``rl/shared_prefix.py``).
        ``logits_at`` (long [M], flat indices into B·T) computes logits only there: ``.logits`` is then [M, V]
        (``logits_to_keep`` is then ignored).
        ``return_logits=False`` with labels: the caller needs the losses only; on the CPU (not under torch.compile or
        CPU autocast) the head and the cross-entropies then run fused (``loss.shifted_linear_cross_entropy``: less
        memory traffic, same values) and ``.logits`` is None; elsewhere the logits are computed as usual.
        ``mtp_loss=False`` skips the MTP modules' loss (and their forward) even with labels, for trainers that give
        it no weight.
        """
        if input_ids.dim() != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
            raise ValueError(f"input_ids must be [batch, tokens] with at least one token, got shape "
                             f"{tuple(input_ids.shape)}")
        if logits_at is not None and labels is not None:
            raise ValueError("logits_at computes logits at chosen positions only; it cannot be combined with labels")
        segments_BT = doc_ids if doc_ids is not None else attention_mask
        valid_BT = None if segments_BT is None else segments_BT != 0
        if position_ids is None:
            position_ids = positions_from_segments(segments_BT, input_ids)
        if attn_mask_B1TT is not None:
            mask_B1TT = attn_mask_B1TT
        else:
            mask_B1TT = segment_causal_mask(segments_BT) if segments_BT is not None else None
        h_BTD = self.model.embed_tokens(input_ids)
        cos, sin = self.model.rotary(position_ids, h_BTD.dtype)
        balance = h_BTD.new_zeros((), dtype=torch.float32)
        for layer in self.model.layers:
            h_BTD, bal = layer(h_BTD, cos, sin, mask_B1TT, valid_BT)
            if bal is not None:
                balance = balance + bal
        hidden_BTD = self.model.norm(h_BTD)
        if logits_at is not None:
            kept = hidden_BTD.reshape(-1, hidden_BTD.shape[-1])[logits_at]
        else:
            kept = hidden_BTD[:, -logits_to_keep:] if logits_to_keep else hidden_BTD
        fused = labels is not None and not return_logits and hidden_BTD.device.type == "cpu" \
            and not torch.compiler.is_compiling() and not torch.is_autocast_enabled("cpu")
        out = CausalLMOutput(logits=None if fused else self.lm_head(kept), hidden_states=hidden_BTD)
        run_mtp = len(self.model.mtp) > 0 and ((labels is not None and mtp_loss) or return_mtp_logits)
        if run_mtp:
            mtp_hidden, mtp_balance = mtp_forward(self, h_BTD, input_ids, cos, sin, mask_B1TT, valid_BT)
            balance = balance + mtp_balance
            mtp_logits = None if fused and not return_mtp_logits else [self.lm_head(h) for h in mtp_hidden]
            if return_mtp_logits:
                out.mtp_logits = mtp_logits
        if labels is not None:
            def head_loss(head_in_BTD, logits_BTV, shift):  # over the logits if they exist, else fused from the input
                if logits_BTV is None:
                    return shifted_linear_cross_entropy(head_in_BTD, self.lm_head.weight, labels, segments_BT, shift)
                return shifted_cross_entropy(logits_BTV, labels, segments_BT, shift)

            # shift 1: next token from the main head; shift k + 2: MTP depth k (0-based) predicts k + 2 ahead
            out.loss = head_loss(hidden_BTD, out.logits, 1)
            if run_mtp and mtp_loss:
                out.mtp_loss = torch.stack([head_loss(h, None if mtp_logits is None else mtp_logits[k], k + 2)
                                            for k, h in enumerate(mtp_hidden)]).mean()
            out.balance_loss = balance
        return out

    # ------------------------------------------------------------------ aux-loss-free balancing
    def moe_layers(self) -> list[MoE]:
        return [m for m in self.modules() if isinstance(m, MoE)]

    def update_expert_bias(self, gamma: float) -> dict[str, float]:
        """Apply the sign-rule bias update in every MoE layer (call after optimizer.step()); return load stats:
        the max/mean expert load averaged over layers, its worst layer, and the per-layer values (MTP last)."""
        stats = [m.update_bias(gamma) for m in self.moe_layers()]
        ratios = [s["load_max_over_mean"] for s in stats if s["tokens"] > 0]
        if not ratios:
            return {"load_max_over_mean": 0.0, "load_max_over_mean_worst": 0.0, "load_per_layer": []}
        return {"load_max_over_mean": sum(ratios) / len(ratios), "load_max_over_mean_worst": max(ratios),
                "load_per_layer": [round(r, 4) for r in ratios]}


def positions_from_segments(segments_BT: torch.Tensor | None, input_ids: torch.Tensor) -> torch.Tensor:
    """0..T-1, restarting at every change of segment id (packed documents); padding (id 0) gets position 0.

    >>> positions_from_segments(torch.tensor([[1, 1, 2, 2, 2, 0]]), torch.zeros(1, 6, dtype=torch.long)).tolist()
    [[0, 1, 0, 1, 2, 0]]
    >>> positions_from_segments(torch.tensor([[0, 0, 1, 1]]), torch.zeros(1, 4, dtype=torch.long)).tolist()
    [[0, 0, 0, 1]]
    """
    b, t = input_ids.shape
    idx_BT = torch.arange(t, device=input_ids.device).expand(b, t)
    if segments_BT is None:
        return idx_BT
    start_BT = torch.ones_like(segments_BT, dtype=torch.bool)
    start_BT[:, 1:] = segments_BT[:, 1:] != segments_BT[:, :-1]
    first_BT = torch.cummax(torch.where(start_BT, idx_BT, torch.zeros_like(idx_BT)), dim=1).values
    return torch.where(segments_BT != 0, idx_BT - first_BT, torch.zeros_like(idx_BT))


def segment_causal_mask(segments_BT: torch.Tensor) -> torch.Tensor:
    """Bool [B, 1, T, T]: causal and same segment; padding (0) attends only to itself so softmax never sees an empty
    row. Note: with left padding the real tokens share segment id 1, so this is also the padded-batch mask."""
    t = segments_BT.shape[1]
    causal_TT = torch.ones(t, t, dtype=torch.bool, device=segments_BT.device).tril()
    same_BTT = segments_BT[:, :, None] == segments_BT[:, None, :]
    mask_BTT = causal_TT & same_BTT & (segments_BT[:, None, :] != 0)
    mask_BTT |= torch.eye(t, dtype=torch.bool, device=segments_BT.device)
    return mask_BTT[:, None]
