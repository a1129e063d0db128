"""Training metrics: JSONL log + one formatted line per step, model-FLOPs utilisation (MFU), ETA.

MFU follows PaLM (Chowdhery et al. 2022, App. B): achieved model FLOPs per second (tokens/s × training FLOPs per
token, i.e. 3 × forward FLOPs, no recomputation counted) over the hardware's peak. For MoE models the FLOPs per token
count *active* parameters only (``r1lab.model.model_stats``).

Peak FLOPs: a small table of dense bf16 tensor-core peaks per GPU model (vendor datasheets, without sparsity);
``--peak-tflops`` overrides it. On CPU there is no meaningful datasheet number, so ``peak_flops`` returns the
measured throughput of a large fp32 matmul on this machine (``measure_matmul_flops``): the CPU "MFU" is then the share
of what torch's own GEMM reaches here — a stated, reproducible reference rather than a hardware peak.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Self, TextIO

import torch

# Dense (no sparsity) peak TFLOP/s by device-name substring, bf16 / fp8. Source: NVIDIA / AMD datasheets.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.0, "fp8": 1979.0},
    "H100": {"bf16": 989.0, "fp8": 1979.0},  # SXM; PCIe is 756 / 1513
    "H800": {"bf16": 989.0, "fp8": 1979.0},
    "A100": {"bf16": 312.0, "fp8": 312.0},
    "A800": {"bf16": 312.0, "fp8": 312.0},
    "L40S": {"bf16": 362.0, "fp8": 733.0},
    "A10": {"bf16": 125.0, "fp8": 125.0},
    "4090": {"bf16": 165.0, "fp8": 330.0},
    "MI300X": {"bf16": 1307.0, "fp8": 2615.0},
}


def mfu(tokens_per_s: float, flops_per_token: float, peak_flops: float) -> float:
    """Model-FLOPs utilisation in [0, 1]: tokens/s × FLOPs per token / peak FLOP/s (0 when the peak is unknown).

    >>> mfu(1000.0, 6e9, 1e14)
    0.06
    """
    if peak_flops <= 0:
        return 0.0
    return tokens_per_s * flops_per_token / peak_flops


def measure_matmul_flops(n: int = 1024, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of an n×n×n matmul on the CPU (best of ``repeats``): this machine's practical GEMM peak."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm up
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def peak_flops(device: torch.device | str, precision: str = "bf16", override_tflops: float | None = None) -> float:
    """Peak FLOP/s for MFU: ``override_tflops`` if given, else the GPU table (0 for an unknown GPU), else on CPU
    the measured fp32 matmul throughput (see module docstring)."""
    if override_tflops:
        return float(override_tflops) * 1e12
    device = torch.device(device)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peaks in PEAK_TFLOPS.items():
            if key in name:
                return peaks.get(precision, peaks["bf16"]) * 1e12
        return 0.0
    return measure_matmul_flops()


def format_duration(seconds: float) -> str:
    """Compact h:mm:ss.

    >>> format_duration(3725.2), format_duration(59)
    ('1:02:05', '0:59')
    """
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = round(seconds)
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _fmt(key: str, value: Any) -> str:
    if isinstance(value, float):
        if key in ("lr", "gamma"):
            return f"{key} {value:.2e}"
        if key in ("mfu",):
            return f"{key} {100 * value:.2f}%"
        if key.endswith("tok_s") or key == "tok/s":
            return f"{key} {value:,.0f}"
        if key == "eta_s":
            return f"eta {format_duration(value)}"
        return f"{key} {value:.4f}"
    return f"{key} {value}"


def format_line(metrics: dict[str, Any], keys: list[str] | None = None) -> str:
    """One human line, fields in ``keys`` order (default: insertion order), ``|``-separated.

    >>> format_line({"step": 3, "loss": 2.5, "lr": 0.0003, "mfu": 0.0123})
    'step 3 | loss 2.5000 | lr 3.00e-04 | mfu 1.23%'
    """
    keys = keys or list(metrics)
    return " | ".join(_fmt(k, metrics[k]) for k in keys if k in metrics)


class MetricsLogger:
    """Appends one JSON object per ``log`` call to ``path`` (JSONL, flushed) and prints one formatted line.

    ``enabled=False`` (non-zero ranks) makes every call a no-op. ``echo`` is where lines go (default stdout; pass
    ``None`` to keep the JSONL only, e.g. under a progress bar, and use the returned line yourself).
    """

    def __init__(self, path: str | os.PathLike | None, enabled: bool = True, echo: TextIO | None | str = "stdout"):
        self.enabled = enabled
        self.path = Path(path) if path else None
        self._fh = None
        if enabled and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across log calls
        self._echo = echo

    def log(self, metrics: dict[str, Any], keys: list[str] | None = None) -> str:
        """Writes ``metrics`` (plus a wall-clock ``time``) as one JSON line and returns the formatted line."""
        if not self.enabled:
            return ""
        if self._fh is not None:
            self._fh.write(json.dumps({**metrics, "time": time.time()}, default=float) + "\n")
            self._fh.flush()
        line = format_line(metrics, keys)
        if self._echo == "stdout":
            print(line, flush=True)
        elif self._echo is not None:
            self._echo.write(line + "\n")  # type: ignore[union-attr]
        return line

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of a metrics JSONL file (a torn last line from a killed run is skipped)."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _step_of(row: dict[str, Any]) -> int | None:
    """A row's integer ``step`` (None for rows without one, e.g. a run-level eval row)."""
    step = row.get("step")
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        return None
    return int(step)


def metrics_upto(rows: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    """The rows a run resumed at ``step`` keeps: every row with step <= ``step``, and rows without a step (eval or
    summary rows) only if they come before the first row past ``step`` (they were logged up to that point).

    >>> [r.get("step", "eval") for r in metrics_upto([{"step": 1}, {"step": 2}, {"e": 1}, {"step": 3}, {"e": 2}], 2)]
    [1, 2, 'eval']
    """
    kept, past = [], False
    for row in rows:
        if not isinstance(row, dict):
            continue
        s = _step_of(row)
        if s is None:
            if not past:
                kept.append(row)
        elif s <= step:
            kept.append(row)
        else:
            past = True
    return kept


def truncate_metrics(path: str | os.PathLike, step: int) -> int:
    """Rewrite the metrics JSONL at ``path`` atomically (temp file + rename) keeping ``metrics_upto(rows, step)``:
    a run resumed from its step-``step`` checkpoint then logs steps ``step+1, ...`` once, never twice (a torn last line
    of a killed run is dropped too). Returns how many rows were dropped."""
    path = Path(path)
    if not path.is_file():
        return 0
    rows = read_metrics(path)
    kept = metrics_upto(rows, step)
    from r1lab.data.stream import write_jsonl_atomic

    write_jsonl_atomic(kept, path)
    return len(rows) - len(kept)
