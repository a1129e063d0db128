"""Decoupled rotary position embedding with YaRN, in DeepSeek's interleaved-pair layout (V2 report §2.1.3, V3 §4.3).

DeepSeek checkpoints store the RoPE dims of q_pe / k_pe as interleaved pairs (x0, x1), (x2, x3), …, each pair rotated by
one frequency (the official code multiplies complex numbers). Plain ``rotate_half`` on such weights is silently wrong.

YaRN: frequencies blend interpolation (÷ factor) and extrapolation with a linear ramp over the dims whose number of
rotations within ``original_max_position_embeddings`` lies between beta_slow and beta_fast (the correction range is
computed from the *original* length, floor/ceil as the official code). As transformers does, cos/sin are multiplied by
``attention_factor`` = mscale(factor, mscale) / mscale(factor, mscale_all_dim) (1.0 for V3), and the softmax scale is
multiplied by mscale(factor, mscale_all_dim)² (see ``softmax_scale``). The official inference code applies YaRN only
when the run's max_seq_len exceeds the original length; like transformers and torchtitan we apply it whenever the
config asks for it.

Legend: T = tokens, R = rope dims (qk_rope_head_dim), F = R/2 frequencies.
"""

from __future__ import annotations

import math

import torch

from .config import DeepSeekV3Config
from .fp32_buffers import KeepsFP32Buffers


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN attention temperature: 0.1·mscale·ln(scale) + 1 (1 when scale ≤ 1).

    >>> round(yarn_mscale(40.0), 4)
    1.3689
    """
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def inv_frequencies(config: DeepSeekV3Config) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [F] (fp32) and the cos/sin attention factor for ``config``."""
    dim = config.qk_rope_head_dim
    base = config.rope_theta
    rope = config.rope_parameters
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    inv_freq = 1.0 / pos_freqs
    if rope["rope_type"] != "yarn":
        return inv_freq, 1.0
    factor = float(rope["factor"])
    original = float(rope["original_max_position_embeddings"])
    beta_fast = float(rope.get("beta_fast") or 32.0)
    beta_slow = float(rope.get("beta_slow") or 1.0)

    def correction_dim(n_rotations: float) -> float:
        return dim * math.log(original / (n_rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rope.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation_weight = 1.0 - ramp
    inv_freq = inv_freq / factor * (1 - extrapolation_weight) + inv_freq * extrapolation_weight
    attention_factor = rope.get("attention_factor")
    if attention_factor is None:
        mscale, mscale_all_dim = rope.get("mscale"), rope.get("mscale_all_dim")
        if mscale and mscale_all_dim:
            attention_factor = yarn_mscale(factor, mscale) / yarn_mscale(factor, mscale_all_dim)
        else:
            attention_factor = yarn_mscale(factor)
    return inv_freq, float(attention_factor)


def softmax_scale(config: DeepSeekV3Config) -> float:
    """qk_head_dim^-0.5, times mscale(factor, mscale_all_dim)² under YaRN (≈1.874× for V3's factor 40)."""
    scale = config.qk_head_dim ** -0.5
    rope = config.rope_parameters
    if rope["rope_type"] == "yarn" and rope.get("mscale_all_dim"):
        m = yarn_mscale(float(rope["factor"]), float(rope["mscale_all_dim"]))
        scale *= m * m
    return scale


class RotaryEmbedding(KeepsFP32Buffers):
    """Computes (cos, sin) [.., T, F] for integer positions; not a checkpoint tensor."""

    fp32_buffers = ("inv_freq",)

    def __init__(self, config: DeepSeekV3Config):
        super().__init__()
        inv_freq, self.attention_factor = inv_frequencies(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids.to(torch.float32)[..., None] * self.inv_freq.to(position_ids.device)
        cos = (freqs.cos() * self.attention_factor).to(dtype)
        sin = (freqs.sin() * self.attention_factor).to(dtype)
        return cos, sin


def apply_rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of the last dim of ``x`` [..., T, R] by (cos, sin) [..., T, F] (broadcast over heads).

    The output keeps the pair layout de-interleaved as [evens rotated | odds rotated]: that is what transformers does
    (and what makes q·k identical whatever the layout, since q and k are permuted the same way). Both q_pe and k_pe
    must go through this function.
    """
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
