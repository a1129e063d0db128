"""GPU checks of the training loop as the `gpu` speedrun preset runs it: fp32 master weights, bf16 autocast, grouped
experts, torch.compile, a wall-clock budget (run on a CUDA machine: python -m pytest -m gpu tests/test_train_gpu.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import make_env, tiny_config

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_compiled_pretraining_on_gpu_compiles_and_tracks_eager(tmp_path, capsys):
    """The compiled loop must really compile (no eager fallback) and follow the eager losses up to bf16 rounding."""
    from r1lab.train.pretrain import run_pretrain

    env = make_env(tmp_path / "env")
    kw = dict(device="cuda", steps=30, seq_len=64, micro_batch=8, model_overrides={"moe_impl": "grouped"})
    eager = run_pretrain(tiny_config(env, tmp_path / "eager", **kw))
    compiled = run_pretrain(tiny_config(env, tmp_path / "compiled", compile=True, **kw))
    assert "torch.compile failed" not in capsys.readouterr().out
    a, b = torch.tensor(eager["losses"]), torch.tensor(compiled["losses"])
    assert torch.isfinite(b).all() and b[-5:].mean() < b[:5].mean() - 0.5
    assert (a - b).abs().max() < 0.05, (a - b).abs().max()


def test_budgeted_compiled_pretraining_on_gpu_ends_on_the_fitted_schedule(tmp_path):
    """The budget counts compile time too (it is wall clock), so it is 45 s: a cold inductor compile of the tiny
    model can take 10-30 s, and under a 15 s budget the 1.1x hard stop could end the run before it fits a schedule."""
    from r1lab.train.pretrain import run_pretrain

    env = make_env(tmp_path / "env")
    art = run_pretrain(tiny_config(env, tmp_path / "run", device="cuda", steps=100_000, max_minutes=0.75,
                                   compile=True, warmup_steps=2, seq_len=64, micro_batch=8))
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert 26 <= art["steps"] < 100_000 and rows[-1]["step"] == art["steps"]
    assert rows[-1]["lr"] == pytest.approx(3e-3 * 0.1, rel=1e-6)
