"""Multi-token prediction (V3 report §2.2): D sequential modules sharing the embedding and the output head.

Module k (1-based) at position i combines the previous depth's representation h^{k-1}_i with the embedding of token
t_{i+k}: h'_i = M_k [RMSNorm(Emb(t_{i+k})) ; RMSNorm(h^{k-1}_i)] — the code order [enorm(emb), hnorm(h)] of DeepSeek's
checkpoints (vLLM, torchtitan), the reverse of the paper's equation — then one transformer block, then the shared head
after the module's own ``shared_head.norm``; it predicts t_{i+k+1}. h^0 is the main model's last-block output taken
*before* the final norm (torchtitan's reading; the report is ambiguous). The block attends causally, within one packed
document; positions whose inputs or target cross a document boundary carry no loss (``shifted_cross_entropy``).

Checkpoint layout (``checkpoint.py``): ``model.layers.{num_hidden_layers + k - 1}.{enorm, hnorm, eh_proj, <block>,
shared_head.norm, shared_head.head, embed_tokens}``; the last two are copies of the shared tensors.

Legend: B batch, T tokens, D hidden.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import DeepSeekV3Config
from .norm import RMSNorm


def _decoder_layer_cls():
    from .transformer import DecoderLayer
    return DecoderLayer


class SharedHead(nn.Module):
    """Holds the module's own final norm (the head itself is the main model's ``lm_head``)."""

    def __init__(self, config: DeepSeekV3Config):
        super().__init__()
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class MTPLayer(nn.Module):
    """One MTP module: projection of [emb ; h] then a full decoder block (dense or MoE by its layer index)."""

    def __init__(self, config: DeepSeekV3Config, layer_idx: int):
        super().__init__()
        self.enorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.hnorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)
        block = _decoder_layer_cls()(config, layer_idx)
        # The block's sub-modules sit directly on this module, as in the checkpoint names.
        self.input_layernorm = block.input_layernorm
        self.self_attn = block.self_attn
        self.post_attention_layernorm = block.post_attention_layernorm
        self.mlp = block.mlp
        self.is_moe = block.is_moe
        self.shared_head = SharedHead(config)

    def forward(self, h_prev_BTD, emb_BTD, cos, sin, mask_B1TT=None, valid_BT=None):
        """Returns (h_BTD before shared_head.norm, balance_loss or None)."""
        x_BTD = self.eh_proj(torch.cat([self.enorm(emb_BTD), self.hnorm(h_prev_BTD)], dim=-1))
        x_BTD = x_BTD + self.self_attn(self.input_layernorm(x_BTD), cos, sin, mask_B1TT)
        return _decoder_layer_cls().ffn(self, x_BTD, valid_BT)


def shift_left(ids_BT: torch.Tensor, k: int, fill: int = 0) -> torch.Tensor:
    """ids[:, i + k] at position i, ``fill`` past the end.

    >>> shift_left(torch.tensor([[5, 6, 7]]), 1).tolist()
    [[6, 7, 0]]
    """
    out = torch.full_like(ids_BT, fill)
    if k < ids_BT.shape[1]:
        out[:, : ids_BT.shape[1] - k] = ids_BT[:, k:]
    return out


def mtp_forward(lm, h_main_BTD, input_ids_BT, cos, sin, mask_B1TT=None, valid_BT=None):
    """Run the D modules of ``lm`` (a DeepSeekV3ForCausalLM) sequentially. Returns (the shared head's input per depth,
    i.e. after the module's ``shared_head.norm``; balance sum). The caller applies the head (``lm.lm_head``) or the
    fused head + loss (``loss.shifted_linear_cross_entropy``)."""
    heads_in, balance = [], h_main_BTD.new_zeros((), dtype=torch.float32)
    h_BTD = h_main_BTD
    for k, layer in enumerate(lm.model.mtp, start=1):
        emb_BTD = lm.model.embed_tokens(shift_left(input_ids_BT, k))
        h_BTD, bal = layer(h_BTD, emb_BTD, cos, sin, mask_B1TT, valid_BT)
        if bal is not None:
            balance = balance + bal
        heads_in.append(layer.shared_head.norm(h_BTD))
    return heads_in, balance
