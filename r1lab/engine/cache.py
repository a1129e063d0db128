"""The MLA latent KV cache (DeepSeek-V2 report §2.1.2, V3 report §2.1.1): per layer and token, RMSNorm(c_KV) [C]
followed by the roped shared key k_pe [R] — 576 values per token per layer for V3 instead of 128 heads × 320 for an
expanded K/V cache.

Preallocated as one tensor [slots + 1, max_len, C + R] per attention block (main layers, then one per MTP draft depth
when speculative decoding is on). The extra last slot is a scratch row: padded batch rows read and write there, so
every step runs on fixed shapes. A sequence owns one slot; position p of the slot holds token p. Nothing is ever
cleared: a query at position q only attends to keys at positions ≤ q, which were all written by the time it runs, so
stale rows of a previous owner or of rejected drafts are never read ("rollback" = not advancing the position).

For speculative decoding the cache also keeps, per draft depth j < k, the hidden state h^j of every position (the
input of MTP depth j + 1) and a token buffer (prompt, accepted tokens and the current drafts) on the device.

Legend: S slots (+1 scratch), L positions, X = C + R latent width, D hidden.
"""

from __future__ import annotations

import torch


class LatentCache:
    def __init__(self, n_blocks: int, slots: int, max_len: int, latent_dim: int, dtype: torch.dtype,
                 device: torch.device, hidden_size: int = 0, n_hidden: int = 0):
        self.slots, self.max_len, self.latent_dim = slots, max_len, latent_dim
        self.scratch = slots  # index of the padding slot
        self.kv_SLX = [torch.zeros(slots + 1, max_len, latent_dim, dtype=dtype, device=device)
                       for _ in range(n_blocks)]
        self.hidden_SLD = [torch.zeros(slots + 1, max_len, hidden_size, dtype=dtype, device=device)
                           for _ in range(n_hidden)]
        self.tokens_SL = torch.zeros(slots + 1, max_len, dtype=torch.long, device=device) if n_hidden else None

    @property
    def nbytes(self) -> int:
        tensors = self.kv_SLX + self.hidden_SLD + ([self.tokens_SL] if self.tokens_SL is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def write(self, block: int, slots_B: torch.Tensor, pos_BT: torch.Tensor, latent_BTX: torch.Tensor) -> None:
        """Store the latents of T new tokens per row at their positions."""
        self.kv_SLX[block][slots_B[:, None], pos_BT] = latent_BTX.to(self.kv_SLX[block].dtype)

    def read(self, block: int, slots_B: torch.Tensor, kv_len: int) -> torch.Tensor:
        """[B, kv_len, X]: the first kv_len positions of each row's slot."""
        return self.kv_SLX[block][slots_B, :kv_len]

    def copy_slot(self, src: int, dst: list[int], length: int) -> None:
        """Copy the first ``length`` positions of slot ``src`` into the ``dst`` slots (n samples share a prefill)."""
        if not dst or length == 0:
            return
        idx = torch.tensor(dst, device=self.kv_SLX[0].device if self.kv_SLX else None)
        for t in self.kv_SLX + self.hidden_SLD:
            t[idx, :length] = t[src, :length]
        if self.tokens_SL is not None:
            self.tokens_SL[idx, :length] = self.tokens_SL[src, :length]


def bucket(n: int, step: int, limit: int) -> int:
    """Round n up to a multiple of ``step`` (few distinct shapes for compiled steps), at most ``limit``.

    >>> bucket(70, 64, 1000), bucket(999, 64, 1000), bucket(1, 64, 1000)
    (128, 1000, 64)
    """
    return min(limit, -(-n // step) * step)


def batch_bucket(n: int, limit: int) -> int:
    """Next power of two ≥ n (at most ``limit``, at least n).

    >>> batch_bucket(5, 64), batch_bucket(64, 64), batch_bucket(70, 64)
    (8, 64, 70)
    """
    b = 1
    while b < n:
        b *= 2
    return max(n, min(b, limit))
