"""Buffers that stay fp32 whatever ``model.to(dtype)`` does.

Three buffers lose meaning when rounded to bf16: the routing bias (it accumulates γ-sized steps), the RoPE inverse
frequencies (angles off by position × 2⁻⁹ rad), and the per-expert token counts (bf16 counts stop at 256: 300 + 1 =
300). ``from_pretrained`` already rebuilds the last two in fp32; a module built fresh and cast with ``.to(bf16)`` keeps
them fp32 only through this mixin. ``.to(device)`` still moves them.
"""

from __future__ import annotations

import torch
from torch import nn


class KeepsFP32Buffers(nn.Module):
    """Mixin: the buffers named in ``fp32_buffers`` follow device moves but keep their fp32 values."""

    fp32_buffers: tuple[str, ...] = ()

    def _apply(self, fn, recurse=True):
        before = {name: getattr(self, name) for name in self.fp32_buffers}
        super()._apply(fn, recurse)
        for name, old in before.items():
            moved = getattr(self, name)
            # meta → real (``to_empty``): nothing to keep; the loader fills it
            kept = old.to(device=moved.device, dtype=torch.float32) if not old.is_meta or moved.is_meta \
                else torch.zeros_like(moved, dtype=torch.float32)
            setattr(self, name, kept)
        return self
