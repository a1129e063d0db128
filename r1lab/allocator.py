"""How the CPU memory allocator treats the large tensors a training step frees and allocates again.

glibc's malloc serves blocks above its mmap threshold (dynamic, up to 32 MB) with fresh ``mmap`` calls and trims the
top of its heap when more than 128 KB are free; a CPU training step allocates and frees the same large tensors every
step (logits of 16 × 256 × 2048 fp32 = 32 MB, attention scores, gradients), so each step pays the kernel for new
zeroed pages. Measured on the 2-core sandbox (cpu-demo pretraining, median step over steps 20-120, 2026-11-25):
0.378-0.386 s with glibc's defaults, 0.369 s with ``MALLOC_MMAP_THRESHOLD_=32 MB`` and a 4 GB trim threshold — and a
change that merely freed the model's outputs earlier in the step cost +10 % (0.41-0.43 s) under the defaults, and
nothing with these settings. ``keep_freed_memory()`` applies the same settings from inside the process (``mallopt``),
so every ``r1lab`` command gets them; the cost is that freed memory stays with the process (its peak is kept).

No-op off Linux/glibc, and when ``R1LAB_MALLOC_DEFAULTS=1`` is set.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's maximum on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int: ~2 GB


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; True when applied."""
    if not sys.platform.startswith("linux") or os.environ.get("R1LAB_MALLOC_DEFAULTS") == "1":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, …)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
