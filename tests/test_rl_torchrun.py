"""`r1lab grpo` under torchrun --nproc-per-node 2 on CPU (gloo): the whole command — rollouts split over ranks,
reference model, evaluation and saving on the main rank — runs, logs one row per step and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys



def _grpo(tokenizer_dir, out, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "r1lab",
           "grpo", "--tokenizer", tokenizer_dir, "--preset", "tiny", "--out-dir", str(out), "--prompts-per-step", "2",
           "--group-size", "2", "--max-new-tokens", "6", "--eval-every", "2", "--eval-n-per-family", "1",
           "--eval-samples", "1", "--sampler", "naive", "--families", '["arithmetic", "word"]',
           "--n-train-per-family", "8", "--micro-batch", "4", "--beta", "0.04", "--ref-reset-every", "1",
           "--template", "r1-zero-short", *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "R1LAB_WORKERS": "1"})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def test_grpo_under_torchrun_two_ranks(tokenizer_dir, tmp_path):
    rows = _grpo(tokenizer_dir, tmp_path, "--steps", "2")
    steps = [r for r in rows if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2]  # the main rank alone writes the log: one row per step
    for r in steps:
        assert r["kl"] >= 0 and r["response_len_mean"] > 0
    assert any("eval_pass@1" in r for r in rows)
    assert (tmp_path / "final" / "model.safetensors").is_file()
    rows = _grpo(tokenizer_dir, tmp_path, "--steps", "3", "--resume", "true")
    assert [r["step"] for r in rows if "reward" in r] == [1, 2, 3]
